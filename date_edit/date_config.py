"""DATE's settings: :class:`DateConfig`, its enums, the benchmark ablations and the update schedule syntax.

The pieces of DATE itself (the objective, the update rule, the hook and its trace) are in :mod:`date_edit.date`
and the modules it names; everything here is re-exported there, where the API documents it.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .conditioning import TARGETS
from .errors import ConfigError, excerpt
from .limits import check_grad_iters

class UpdateMode(str, enum.Enum):
    """How successive updates combine: ``accumulate`` from the last embedding, ``restart`` from the original."""

    ACCUMULATE = "accumulate"
    RESTART = "restart"


class Direction(str, enum.Enum):
    """Update direction: the score's ``gradient``, or a ``random`` one of the same norm (ablation)."""

    GRADIENT = "gradient"
    RANDOM = "random"


class GradPreprocess(str, enum.Enum):
    """How the scorer preprocesses ``decode(x0_hat)`` in the gradient pass.

    ``reference``: as aailab-kaist/DATE does (bilinear resize straight to the scorer's size, no rounding, no
    clamp); ``pil``: the scorer's PIL-faithful metric path (bicubic antialiased, 8-bit rounding straight-through,
    centre crop), an ablation.
    """

    REFERENCE = "reference"
    PIL = "pil"


class TargetNorm(str, enum.Enum):
    """How a move over several target tensors is normalised: ``joint`` (one Frobenius norm over all of them, so
    the whole move has radius rho) or ``per-tensor`` (each tensor moves by its own radius)."""

    JOINT = "joint"
    PER_TENSOR = "per-tensor"


class Objective(str, enum.Enum):
    """What the score sees: the Tweedie ``x0`` (DATE), or the noisy next latent ``xt`` (ablation)."""

    X0 = "x0"
    XT = "xt"


@dataclass(frozen=True)
class DateConfig:
    """DATE settings; defaults are the paper's official ones."""

    rho: Optional[float] = None  # radius of each update, ||c_new - c||_F per sample; None: 0.5 unless rho_relative
    update_steps: str = "every:10"  # which sampler steps update: "0,10,20", "20-40", "every:10", "10%", "none"
    mode: UpdateMode = UpdateMode.ACCUMULATE  # accumulate from the last update, or restart from c_org
    iterations: int = 1  # gradient iterations per update step
    direction: Direction = Direction.GRADIENT  # ablation: random direction of the same norm
    objective: Objective = Objective.X0  # ablation: score the noisy latent instead of x0_hat
    normalize: bool = True  # ablation: False takes c + rho * g (unnormalised gradient)
    seed: int = 0  # seed of the random-direction ablation
    # radius relative to the original embedding: each update moves sample b by rho_relative * ||c_org[b]||_F,
    # a scale that carries across text encoders (exclusive with rho)
    rho_relative: Optional[float] = None
    clamp_decoded: bool = False  # ablation: clamp decode(x0_hat) to [0, 1] in the gradient pass (reference: no)
    grad_preprocess: GradPreprocess = GradPreprocess.REFERENCE  # the scorer's preprocessing in the gradient pass
    # which condition tensors move: tokens (SD's role; SDXL prompt_embeds), pooled (SDXL), or all movable ones
    targets: str = "tokens"
    norm: TargetNorm = TargetNorm.JOINT  # several targets: one joint norm, or each tensor its own radius

    def __post_init__(self) -> None:
        for name, kind in (("mode", UpdateMode), ("direction", Direction), ("objective", Objective),
                           ("grad_preprocess", GradPreprocess), ("norm", TargetNorm)):
            object.__setattr__(self, name, _member(kind, getattr(self, name), name))
        if self.rho is not None and self.rho_relative is not None:
            raise ConfigError("rho_relative", "and rho are exclusive: give the radius one way")
        if self.rho is None and self.rho_relative is None:
            object.__setattr__(self, "rho", 0.5)
        for name in ("rho", "rho_relative"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(name, f"must be a finite number >= 0, got {value}")
        if self.targets not in TARGETS:
            raise ConfigError("date_targets", f"{excerpt(self.targets)}: use one of {', '.join(TARGETS)}")
        check_grad_iters(self.iterations)
        parse_update_steps(self.update_steps, None)  # syntax check only; range checked per run

    @property
    def moves(self) -> bool:
        """False when the radius is zero (``rho`` or ``rho_relative`` 0): DATE then keeps ``c`` bit for bit."""
        return (self.rho if self.rho is not None else self.rho_relative) != 0.0

    def radius(self, cond_org: torch.Tensor) -> torch.Tensor:
        """The per-sample radius ``(B, 1, ...)`` shaped like ``cond_org``: ``rho``, or ``rho_relative * ||c_org||_F``
        (for several targets moved jointly, ``cond_org`` is their per-sample joint norm, see
        :func:`date_edit.date_update.joint_norm`)."""
        if self.rho_relative is not None:
            return self.rho_relative * frobenius(cond_org.float())
        return torch.full((cond_org.shape[0],) + (1,) * (cond_org.dim() - 1), float(self.rho),
                          device=cond_org.device)

    def to_dict(self) -> dict:
        """A JSON-ready dict (enums as their values)."""
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}


_ABLATIONS = {
    "none": {},
    "random-direction": {"direction": "random"},  # a random unit direction instead of the gradient
    "noisy-objective": {"objective": "xt"},  # score the noisy next latent instead of x0_hat
    "unnormalized": {"normalize": False},  # c + rho * g instead of c + rho * g / ||g||
    "clamped-decode": {"clamp_decoded": True},  # decode(x0_hat) clamped to [0, 1] in the gradient pass
    "pil-preprocess": {"grad_preprocess": "pil"},  # the scorer's PIL-faithful preprocessing in the gradient pass
}


def ablation_changes(ablation: str) -> dict:
    """The :class:`DateConfig` fields a benchmark ablation (one of :data:`date_edit.choices.ABLATIONS`) sets."""
    if ablation not in _ABLATIONS:
        raise ConfigError("ablation", f"{excerpt(ablation)} is unknown: use one of {', '.join(_ABLATIONS)}")
    return dict(_ABLATIONS[ablation])


def _member(kind: type[enum.Enum], value, param: str):
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(param, f"{excerpt(value)}: use one of {', '.join(m.value for m in kind)}") from None


_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def parse_update_steps(spec: str, num_steps: Optional[int]) -> list[int]:
    """Resolve an update schedule into sorted step indices of a ``num_steps``-step run.

    ``"0,10,20"`` explicit indices; ``"20-40"`` an inclusive range (items may mix: ``"0,20-25"``);
    ``"every:10"`` every 10th step from 0; ``"10%"`` that fraction of the steps, evenly spaced from 0
    (10% of 50 -> 0, 10, 20, 30, 40, as in the official code); ``"none"`` or ``""`` no update.
    With ``num_steps`` None only the syntax is checked. Raises :class:`~date_edit.errors.ConfigError` (one line).
    """
    text = str(spec).strip().lower().replace(" ", "")
    if text in ("", "none"):
        return []
    if text.startswith("every:"):
        k = _int(text[6:], spec)
        if k < 1:
            raise ConfigError("update_steps", f"{excerpt(spec)}: every:K needs K >= 1")
        return [] if num_steps is None else list(range(0, num_steps, k))
    if text.endswith("%"):
        try:
            frac = float(text[:-1]) / 100.0
        except ValueError:
            raise ConfigError("update_steps", f"{excerpt(spec)}: a fraction looks like 10%") from None
        if not 0.0 < frac <= 1.0:
            raise ConfigError("update_steps", f"{excerpt(spec)}: the fraction must be in (0%, 100%]")
        if num_steps is None:
            return []
        count = max(1, round(frac * num_steps))
        return sorted({(j * num_steps) // count for j in range(count)})
    indices: set[int] = set()
    for item in text.split(","):
        match = _RANGE.match(item)
        if match:
            lo, hi = int(match.group(1)), int(match.group(2))
            if hi < lo:
                raise ConfigError("update_steps", f"{excerpt(spec)}: range {item} runs backwards")
            indices.update(range(lo, hi + 1))
        else:
            indices.add(_int(item, spec))
    result = sorted(indices)
    if num_steps is not None and result and (result[0] < 0 or result[-1] >= num_steps):
        bad = [i for i in result if not 0 <= i < num_steps]
        raise ConfigError(
            "update_steps",
            f"{excerpt(spec)}: step {bad[0]} is outside 0..{num_steps - 1} (this run has {num_steps} steps)"
        )
    return result


def _int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            "update_steps", f"{excerpt(spec)}: expected indices like 0,10,20, a range 20-40, every:10 or 10%"
        ) from None


def frobenius(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Frobenius norm of ``(B, ...)`` -> ``(B, 1, ...)`` (as many dims as ``x``)."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
