"""The settings of an edit (:class:`EditConfig`): what the user asked for, checked when it is made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional

from .choices import EDIT_METHODS
from .date import DateConfig
from .defaults import MODEL_DEFAULT
from .errors import ConfigError, excerpt
from .limits import check_n_avg, check_seed
from .masks import MaskConfig

if TYPE_CHECKING:
    from .backbones import Backbone
    from .p2p import P2PConfig


def check_steps(steps: int) -> None:
    """A ConfigError naming ``steps`` unless it is an integer >= 1."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError("steps", f"must be an integer >= 1, got {steps!r}")


def check_finite(config, *names: str) -> None:
    """A ConfigError naming the first of ``names`` whose value on ``config`` is not a finite number."""
    for name in names:
        if not math.isfinite(getattr(config, name)):
            raise ConfigError(name, f"must be a finite number, got {getattr(config, name)}")


@dataclass(frozen=True)
class EditConfig:
    """Settings of an edit.

    ``steps``, ``skip``, ``cfg_source``, ``cfg_target``, ``n_min`` and ``n_avg`` left None mean "the model's
    default": :func:`~date_edit.pipeline.edit` fills them in (:func:`date_edit.defaults.resolve_edit_config`, the
    one place the CLI, ``batch`` and the harness resolve them too), and its result's ``config`` holds the numbers
    that ran. DDPM editing: the edit-friendly paper's 100 steps, skip 36%, CFG 3.5 -> 15 (7.5 with a structure
    control); FlowEdit: its published settings (FLUX 28 steps, skip 4, 1.5 -> 5.5; SD3 50, 17, 3.5 -> 13.5).
    ``EditConfig().resolved(backbone)`` shows them for a model; a value you set is kept.

    ``mask`` and ``p2p`` left at ``"default"`` are the model's default structure controls, the same the CLI, batch,
    sweep and the web app run (:mod:`date_edit.defaults`): Prompt-to-Prompt where the model has cross-attention
    (DDPM editing), and an automatic mask when there is a source prompt (a user mask when ``edit(mask=...)`` is
    passed). ``EditConfig(mask=None, p2p=None)`` is the plain edit of the papers.
    """

    steps: Optional[int] = None  # steps of the schedule (DDPM: inversion runs all of them)
    skip: int | str | None = None  # steps skipped before editing starts: an int, or a percentage of steps
    cfg_source: Optional[float] = None  # guidance scale of the source prompt (inversion; FlowEdit's source branch)
    cfg_target: Optional[float] = None  # guidance scale of the target prompt during editing
    seed: int = 0  # seeds the inversion's independent noise draws (FlowEdit: its fresh noise)
    date: Optional[DateConfig] = field(default_factory=DateConfig)  # None: fixed embedding (no DATE)
    # ddpm (edit-friendly inversion, then resampling), flowedit (inversion-free, flow models), auto: flowedit for
    # FLUX (no true CFG for DDPM editing to use), ddpm for the rest
    method: str = "auto"
    # where the edit may change the image (user or automatic); None: everywhere; "default": the model's default
    mask: MaskConfig | str | None = MODEL_DEFAULT
    # Prompt-to-Prompt attention control (SD 1.x/2.x, SDXL); None: off; "default": the model's default
    p2p: "P2PConfig | str | None" = MODEL_DEFAULT
    # True: a control this model or prompt pair cannot run (P2P on SD3/FLUX or under FlowEdit, an automatic mask
    # without a source prompt) is left out instead of refused; the result's config says what ran (the CLI's defaults)
    optional_controls: bool = False
    n_min: Optional[int] = None  # FlowEdit: the last n_min steps are plain sampling of the target (published 0)
    n_avg: Optional[int] = None  # FlowEdit: noise draws whose velocity differences are averaged per step (1)
    # True: draw and use the noise as the official codes do (DDPM: per-step noises in the official order and the last
    # noise map zeroed, so reconstruction is off by the last step's residual; FLUX FlowEdit: noise in the packed
    # layout); False: date-edit's own (exact reconstruction)
    reference_compat: bool = False

    def __post_init__(self) -> None:
        if self.steps is not None:
            check_steps(self.steps)
        if self.mask is not None and self.mask != MODEL_DEFAULT and not isinstance(self.mask, MaskConfig):
            raise ConfigError("mask", f"must be a MaskConfig, None or {MODEL_DEFAULT!r}, got {_shown(self.mask)}")
        if self.p2p is not None and self.p2p != MODEL_DEFAULT:
            from .p2p import P2PConfig

            if not isinstance(self.p2p, P2PConfig):
                raise ConfigError("p2p", f"must be a P2PConfig, None or {MODEL_DEFAULT!r}, got {_shown(self.p2p)}")
        if self.method not in EDIT_METHODS:
            raise ConfigError("edit_method", f"{excerpt(self.method)}: use one of {', '.join(EDIT_METHODS)}")
        if self.skip is not None and self.steps is not None:
            skip = self.resolved_skip()
            if not 0 <= skip < self.steps:
                raise ConfigError(
                    "skip", f"{self.skip} must leave at least one of the {self.steps} steps (0..{self.steps - 1})"
                )
        elif self.skip is not None:
            _skip_count(self.skip, 100)  # the syntax
        check_finite(self, *(n for n in ("cfg_source", "cfg_target") if getattr(self, n) is not None))
        check_seed(self.seed, name="seed")
        if self.n_min is not None and (not isinstance(self.n_min, int) or isinstance(self.n_min, bool)
                                       or self.n_min < 0):
            raise ConfigError("n_min", f"must be an integer >= 0, got {self.n_min!r}")
        check_n_avg(self.n_avg)
        if self.n_min and self.steps is not None and self.skip is not None and self.n_min >= self.run_steps():
            raise ConfigError("n_min", f"{self.n_min} must leave at least one FlowEdit step of the run's "
                                       f"{self.run_steps()} (steps - skip): 0..{self.run_steps() - 1}")
        if not isinstance(self.reference_compat, bool):
            raise ConfigError("reference_compat", f"must be True or False, got {self.reference_compat!r}")

    def resolved(self, backbone: Backbone) -> "EditConfig":
        """This config with its method and every unset setting filled in for ``backbone`` (what :func:`edit` runs)."""
        from .defaults import resolve_edit_config

        return resolve_edit_config(self, backbone)

    def resolved_skip(self) -> int:
        """The skip as a step count (``"36%"`` of 100 steps -> 36; of 10 steps -> 3).

        Raises:
            ConfigError: ``steps`` or ``skip`` is still the model's default (resolve the config first).
        """
        if self.skip is None or (self.steps is None and str(self.skip).strip().endswith("%")):
            name = "skip" if self.skip is None else "steps"
            raise ConfigError(name, "is the model's default until the config is resolved for a model: use "
                                    "config.resolved(backbone)")
        return _skip_count(self.skip, self.steps)

    def resolved_method(self, backbone: Backbone) -> str:
        """``ddpm`` or ``flowedit`` for ``backbone`` (``auto``: flowedit for FLUX, else ddpm).

        Raises:
            ConfigError: flowedit on a model that is not a flow model.
        """
        from .defaults import edit_method

        return edit_method(self.method, backbone)

    def run_steps(self) -> int:
        """How many sampler steps the edit runs (``steps - skip``; the config must be resolved)."""
        if self.steps is None:
            raise ConfigError("steps", "is the model's default until the config is resolved for a model: use "
                                       "config.resolved(backbone)")
        return self.steps - self.resolved_skip()

    def to_dict(self) -> dict:
        """JSON-ready configuration (resolved: the numbers that ran; unresolved: None for a model default)."""
        d = asdict(self)
        d["skip"] = self.resolved_skip() if self.steps is not None and self.skip is not None else self.skip
        d["date"] = self.date.to_dict() if self.date else None
        d["mask"] = self.mask if self.mask in (None, MODEL_DEFAULT) else self.mask.to_dict()
        d["p2p"] = self.p2p if self.p2p in (None, MODEL_DEFAULT) else self.p2p.to_dict()
        return d


def _shown(value) -> str:
    """A wrong value as a message shows it: text quoted, anything else by its type."""
    return excerpt(value) if isinstance(value, str) else type(value).__name__


def _skip_count(skip: int | str, steps: Optional[int]) -> int:
    """``skip`` as a step count of ``steps`` (a percentage needs ``steps``)."""
    text = str(skip).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not (math.isfinite(share) and 0.0 <= share <= 100.0):  # inf% made int() raise OverflowError
                raise ConfigError("skip", f"{excerpt(skip)}: a percentage of the steps is between 0% and 100%")
            return int(share / 100.0 * steps)
        return int(text)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("skip", f"{excerpt(skip)}: give a step count (36) or a percentage (36%)") from None
