"""The settings of an edit (:class:`EditConfig`): what the user asked for, checked when it is made."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Optional

from .choices import EDIT_METHODS
from .date import DateConfig
from .errors import ConfigError
from .limits import check_seed
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
    """Settings of an edit (defaults: edit-friendly DDPM paper, 100 steps, skip 36, CFG 3.5 -> 15)."""

    steps: int = 100  # DDPM steps of the schedule (inversion runs all of them)
    skip: int | str = "36%"  # steps skipped before editing starts: an int, or a percentage of steps
    cfg_source: float = 3.5  # CFG scale of the source prompt during inversion
    cfg_target: float = 15.0  # CFG scale of the target prompt during editing
    seed: int = 0  # seeds the inversion's independent noise draws (FlowEdit: its fresh noise)
    date: Optional[DateConfig] = field(default_factory=DateConfig)  # None: fixed embedding (no DATE)
    # ddpm (edit-friendly inversion, then resampling), flowedit (inversion-free, flow models), auto: flowedit for
    # FLUX (no true CFG for DDPM editing to use), ddpm for the rest
    method: str = "auto"
    mask: Optional[MaskConfig] = None  # where the edit may change the image (user or automatic); None: everywhere
    p2p: Optional["P2PConfig"] = None  # Prompt-to-Prompt attention control (SD 1.x/2.x, SDXL); None: off
    # True: a control this model or prompt pair cannot run (P2P on SD3/FLUX or under FlowEdit, an automatic mask
    # without a source prompt) is left out instead of refused; the result's config says what ran (the CLI's defaults)
    optional_controls: bool = False

    def __post_init__(self) -> None:
        check_steps(self.steps)
        if self.mask is not None and not isinstance(self.mask, MaskConfig):
            raise ConfigError("mask", f"must be a MaskConfig or None, got {type(self.mask).__name__}")
        if self.method not in EDIT_METHODS:
            raise ConfigError("edit_method", f"{self.method!r}: use one of {', '.join(EDIT_METHODS)}")
        skip = self.resolved_skip()
        if not 0 <= skip < self.steps:
            raise ConfigError(
                "skip", f"{self.skip} must leave at least one of the {self.steps} steps (0..{self.steps - 1})"
            )
        check_finite(self, "cfg_source", "cfg_target")
        check_seed(self.seed, name="seed")

    def resolved_skip(self) -> int:
        """The skip as a step count (``"36%"`` of 100 steps -> 36; of 10 steps -> 3)."""
        text = str(self.skip).strip()
        try:
            if text.endswith("%"):
                return int(float(text[:-1]) / 100.0 * self.steps)
            return int(text)
        except ValueError:
            raise ConfigError("skip", f"{self.skip!r}: give a step count (36) or a percentage (36%)") from None

    def resolved_method(self, backbone: Backbone) -> str:
        """``ddpm`` or ``flowedit`` for ``backbone`` (``auto``: flowedit for FLUX, else ddpm).

        Raises:
            ConfigError: flowedit on a model that is not a flow model.
        """
        method = ("flowedit" if backbone.family == "flux" else "ddpm") if self.method == "auto" else self.method
        if method == "flowedit" and backbone.schedule.prediction_type != "flow":
            raise ConfigError("edit_method", f"flowedit needs a flow model (SD3, FLUX); {backbone.name} is "
                                             f"{backbone.family}: use ddpm")
        return method

    def run_steps(self) -> int:
        """How many sampler steps the edit runs (``steps - skip``)."""
        return self.steps - self.resolved_skip()

    def to_dict(self) -> dict:
        """JSON-ready resolved configuration."""
        d = asdict(self)
        d["skip"] = self.resolved_skip()
        d["date"] = self.date.to_dict() if self.date else None
        d["mask"] = self.mask.to_dict() if self.mask else None
        d["p2p"] = self.p2p.to_dict() if self.p2p else None
        return d
