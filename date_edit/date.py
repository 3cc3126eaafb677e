"""DATE: Diffusion Adaptive Text Embedding (NeurIPS 2025, arXiv 2510.23974).

At scheduled steps the conditional text embedding is moved by ``rho`` along the normalised
gradient of a differentiable image-text score of the Tweedie estimate ``x0_hat``:
``c_new = c + rho * g / ||g||_F`` with ``g = d h(decode(x0_hat(x_t, c)), prompt) / d c``.
It is a condition hook of :func:`date_edit.sampling.sample`, so the loop stays unchanged.
"""

from __future__ import annotations

import enum
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch

from .conditioning import TARGETS, Condition, Conditioning, as_conditioning
from .errors import ConfigError, excerpt
from .limits import check_grad_iters
from .sampling import Denoiser, StepState
from .scorers.preprocess import reference_grad_preprocessing
from .schedule import NoiseSchedule


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
        (for several targets moved jointly, ``cond_org`` is their per-sample joint norm, see :func:`joint_norm`)."""
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


@dataclass
class DateTrace:
    """What DATE did in one run. Norms are Frobenius, per sample then averaged over the batch; with several
    target tensors, ``update_norms``, ``grad_norms`` and ``drifts`` are joint over them and
    ``update_norms_per_tensor`` splits the moves by tensor."""

    update_steps: list[int] = field(default_factory=list)  # sampler step indices actually updated
    timesteps: list = field(default_factory=list)  # their timesteps (ints; flow models: floats, sigma * 1000)
    update_norms: list[float] = field(default_factory=list)  # ||c_after - c_before|| per update step
    grad_norms: list[float] = field(default_factory=list)  # ||g|| of the last iteration per update step
    scores: list[float] = field(default_factory=list)  # objective h before each update step
    drifts: list[float] = field(default_factory=list)  # ||c_after - c_org|| after each update step
    seconds: float = 0.0  # time spent in updates
    targets: list[str] = field(default_factory=list)  # the condition tensors DATE moved
    update_norms_per_tensor: dict[str, list[float]] = field(default_factory=dict)  # name -> norm per update step
    # moves c_after - c_before of the first target (tokens, (B, L, D)) per update step, on the CPU; filled only
    # with DateHook(keep_directions=True)
    directions: list[torch.Tensor] = field(default_factory=list)

    @property
    def final_drift(self) -> float:
        """``||c_final - c_org||_F`` (0 when nothing was updated)."""
        return self.drifts[-1] if self.drifts else 0.0


def frobenius(x: torch.Tensor) -> torch.Tensor:
    """Per-sample Frobenius norm of ``(B, ...)`` -> ``(B, 1, ...)`` (as many dims as ``x``)."""
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def joint_norm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The per-sample Frobenius norm over all ``tensors`` together, shaped to broadcast against each of them
    (one tensor: exactly :func:`frobenius`)."""
    if len(tensors) == 1:
        return {k: frobenius(v) for k, v in tensors.items()}
    total = sum(v.flatten(1).pow(2).sum(dim=1) for v in tensors.values()).sqrt()
    return {k: total.view(-1, *([1] * (v.dim() - 1))) for k, v in tensors.items()}


Targets = dict[str, torch.Tensor]  # the moved tensors of a condition, by name, float32


class DateHook:
    """The DATE condition hook (see module docstring); call it with each step's :class:`StepState`.

    Args:
        config: the DATE settings (``config.targets`` picks the condition tensors it moves).
        update_indices: resolved step indices (from :func:`parse_update_steps`).
        denoiser: ``eps = denoiser(x_t, t, cond)``; must let gradients flow to the condition's tensors.
        decode: latents -> images ``(B, 3, H, W)``, nominally in ``[0, 1]`` (unclamped, as in the reference
            implementation, unless ``config.clamp_decoded``), differentiable.
        score: ``(images, prompts) -> (B,)`` differentiable, higher is better.
        prompts: the target prompts the score compares against.
        uncond: the unconditional condition (never updated); None for no guidance.
        guidance_scale: the CFG scale of the step, used for the guided eps of the gradient pass.
        schedule / timesteps: to compute ``x0_hat`` (and the next latent for the ``xt`` ablation).
        noise_maps: the edit's noise maps (only needed for the ``xt`` ablation of an edit).
        keep_directions: record every update's move of the first target in ``trace.directions`` (for analyses).
    """

    def __init__(
        self,
        config: DateConfig,
        update_indices: Sequence[int],
        *,
        denoiser: Denoiser,
        decode: Callable[[torch.Tensor], torch.Tensor],
        score: Callable[[torch.Tensor, Sequence[str]], torch.Tensor],
        prompts: Sequence[str],
        uncond: Optional[Condition],
        guidance_scale: float,
        schedule: NoiseSchedule,
        timesteps: Sequence[int],
        noise_maps: Optional[torch.Tensor] = None,
        keep_directions: bool = False,
    ) -> None:
        self.config = config
        self.keep_directions = keep_directions
        self.indices = frozenset(update_indices)
        self.denoiser, self.decode, self.score = denoiser, decode, score
        self.prompts = list(prompts)
        self.uncond, self.guidance_scale = uncond, guidance_scale
        self.schedule, self.timesteps, self.noise_maps = schedule, list(timesteps), noise_maps
        self.trace = DateTrace()
        self.cond_org: Optional[Conditioning] = None
        self.names: tuple[str, ...] = ()
        self.masks: Targets = {}  # entries of a target DATE never moves (SD3's zero pad block), as 0/1 masks
        self._generator = torch.Generator().manual_seed(config.seed)

    def __call__(self, state: StepState) -> Condition:
        """Return the condition for this step: updated on scheduled steps, unchanged otherwise (same type as
        ``state.cond``: a tensor stays a tensor)."""
        given = as_conditioning(state.cond)
        if self.cond_org is None:
            self.cond_org = given.detach().clone()
            self.names = given.resolve_targets(self.config.targets)
            self.masks = {n: given.mask(n) for n in self.names if given.mask(n) is not None}
            self.trace.targets = list(self.names)
        if state.index not in self.indices or not self.config.moves:
            if state.index in self.indices:  # rho 0: record a zero move, keep c bit for bit
                current = {n: given[n].detach() for n in self.names}
                self._record(state, current, current, torch.zeros(()), float("nan"), 0.0)
            return state.cond
        start = time.perf_counter()
        before = {n: given[n].detach() for n in self.names}
        cond = {n: v.float() for n, v in before.items()}
        base = cond if self.config.mode == UpdateMode.ACCUMULATE else {n: self.cond_org[n].float() for n in self.names}
        grad_norm, score = torch.zeros(()), float("nan")
        for _ in range(self.config.iterations):
            moves, grad_norm, score = self._direction(state, given, cond)
            origin = cond if self.config.mode == UpdateMode.ACCUMULATE else base
            cond = {n: origin[n] + moves[n] for n in self.names}
        after = {n: cond[n].to(before[n].dtype) for n in self.names}
        self._record(state, before, after, grad_norm, score, time.perf_counter() - start)
        if self.keep_directions:
            first = self.names[0]
            self.trace.directions.append((after[first].float() - before[first].float()).cpu())
        updated = given.replace(**after)
        return updated if isinstance(state.cond, Conditioning) else updated["tokens"]

    def _radii(self) -> Targets:
        """Each target's per-sample radius: ``rho`` (or ``rho_relative`` times the original's norm), shared by
        the targets jointly or given to each (``config.norm``)."""
        org = {n: self.cond_org[n].float() for n in self.names}
        if len(org) == 1 or self.config.norm == TargetNorm.PER_TENSOR:
            return {n: self.config.radius(v) for n, v in org.items()}
        if self.config.rho_relative is not None:
            return {n: self.config.rho_relative * v for n, v in joint_norm(org).items()}
        return {n: self.config.radius(v) for n, v in org.items()}

    def _norms(self, grads: Targets) -> Targets:
        """The normaliser of each target's gradient: joint over the targets, or its own (``config.norm``)."""
        if self.config.norm == TargetNorm.PER_TENSOR:
            return {n: frobenius(g) for n, g in grads.items()}
        return joint_norm(grads)

    def _random_move(self, cond: Targets, rho: Targets) -> Targets:
        """``rho`` times a random direction of unit (joint or per-tensor) norm, from the ablation's generator."""
        noise = {n: self._masked(n, torch.randn(v.shape, generator=self._generator, dtype=torch.float32).to(v.device))
                 for n, v in cond.items()}
        norms = self._norms(noise)
        return {n: rho[n] * v / norms[n] for n, v in noise.items()}

    def _direction(self, state: StepState, given: Conditioning, cond: Targets) -> tuple[Targets, torch.Tensor, float]:
        """The move ``rho * g / ||g||`` of every target (or its ablations), with ``||g||`` and the score before
        the move."""
        rho = self._radii()
        if self.config.direction == Direction.RANDOM and self.config.normalize:
            return self._random_move(cond, rho), torch.zeros(()), float("nan")
        grads, h = self._gradients(state, given.replace(**cond))
        norms = self._norms(grads)
        mean_norm = joint_norm(grads)[self.names[0]].mean()
        if self.config.direction == Direction.RANDOM:  # unnormalised random: same norm as rho * g
            move = self._random_move(cond, rho)
            return {n: move[n] * norms[n] for n in self.names}, mean_norm, h
        if not self.config.normalize:
            return {n: rho[n] * grads[n] for n in self.names}, mean_norm, h
        moves = {}
        for n, grad in grads.items():
            norm = norms[n]
            usable = (norm > 0) & torch.isfinite(norm)  # a zero or non-finite gradient (fp16 overflow) moves nothing
            safe = torch.where(usable, norm, torch.ones_like(norm))
            grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
            moves[n] = torch.where(usable, rho[n] * grad / safe, torch.zeros_like(grad))
        return moves, mean_norm, h

    def gradient(self, state: StepState, cond: Condition) -> tuple[torch.Tensor | Targets, float]:
        """``g = d h / d c`` at ``cond`` with the guided eps as in the official code, and ``h``: for a plain
        ``(B, L, D)`` tensor the gradient tensor; for a :class:`Conditioning` a dict, one gradient per target."""
        grads, h = self._gradients(state, cond)
        return (grads if isinstance(cond, Conditioning) else grads["tokens"]), h

    def _gradients(self, state: StepState, cond: Condition) -> tuple[Targets, float]:
        """The gradient of every target tensor of ``cond`` (float32 leaves) and the score."""
        given = as_conditioning(cond)
        names = self.names or ("tokens",)
        x_t, t = state.x_t.detach(), state.t
        w = self.guidance_scale
        eps_u = None
        if self.uncond is not None and w != 1.0:
            if state.eps_uncond is None:  # computed once per step; the sampling step reuses it
                with torch.no_grad():
                    state.eps_uncond = self.denoiser(x_t, t, self.uncond)
            eps_u = state.eps_uncond
        leaves = {n: given[n].detach().float().requires_grad_(True) for n in names}
        with torch.enable_grad():
            leaf_cond = given.replace(**leaves)
            # the denoiser gets the kind of condition the loop gives it: a plain tensor stays a tensor
            plain = not isinstance(state.cond, Conditioning)
            eps_c = self.denoiser(x_t, t, leaf_cond["tokens"] if plain else leaf_cond)
            eps = eps_c if eps_u is None else eps_u + w * (eps_c - eps_u)
            if self.config.objective == Objective.X0:
                target = self.schedule.x0(x_t, eps, t)
            else:
                t_prev = self.schedule.next_timestep(self.timesteps, state.index)
                if self.noise_maps is not None:
                    target = self.schedule.ddpm(x_t, eps, t, t_prev, self.noise_maps[state.index])
                else:
                    target = self.schedule.ddim(x_t, eps, t, t_prev)
            with reference_grad_preprocessing(self.config.grad_preprocess == GradPreprocess.REFERENCE):
                h = self.score(self.decode(target), self.prompts)
            grads = torch.autograd.grad(h.sum(), [leaves[n] for n in names])
        return {n: self._masked(n, g.detach()) for n, g in zip(names, grads)}, float(h.detach().float().mean())

    def _masked(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` with the entries DATE never moves set to zero."""
        mask = self.masks.get(name)
        return value if mask is None else value * mask.to(value.device, value.dtype)

    def _record(self, state: StepState, before: Targets, after: Targets, grad_norm, score: float,
                seconds: float) -> None:
        moved = {n: after[n].float() - before[n].float() for n in self.names}
        drift = {n: after[n].float() - self.cond_org[n].float() for n in self.names}
        self.trace.update_steps.append(state.index)
        self.trace.timesteps.append(state.t if isinstance(state.t, int) else float(state.t))
        self.trace.update_norms.append(float(joint_norm(moved)[self.names[0]].mean()))
        for n, move in moved.items():
            self.trace.update_norms_per_tensor.setdefault(n, []).append(float(frobenius(move).mean()))
        self.trace.grad_norms.append(float(grad_norm))
        self.trace.scores.append(score)
        self.trace.drifts.append(float(joint_norm(drift)[self.names[0]].mean()))
        self.trace.seconds += seconds
