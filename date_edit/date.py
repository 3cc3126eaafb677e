"""DATE: Diffusion Adaptive Text Embedding (NeurIPS 2025, arXiv 2510.23974).

At scheduled steps the conditional text embedding is moved by ``rho`` along the normalised
gradient of a differentiable image-text score of the Tweedie estimate ``x0_hat``:
``c_new = c + rho * g / ||g||_F`` with ``g = d h(decode(x0_hat(x_t, c)), prompt) / d c``.
It is a condition hook of :func:`date_edit.sampling.sample`, so the loop stays unchanged.

The pieces: the settings (:mod:`date_edit.date_config`), the objective and its gradient
(:mod:`date_edit.date_objective`), the update rule (:mod:`date_edit.date_update`, plain functions), and here the
hook that runs them at the scheduled steps and the trace it keeps. The settings' names are re-exported here.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from . import date_update as update
from .cfg import ClassifierFreeGuidance
from .conditioning import Condition, Conditioning, as_conditioning
from .date_config import (  # noqa: F401 - re-exported: the documented home of DATE's settings
    DateConfig,
    Direction,
    GradPreprocess,
    Objective,
    TargetNorm,
    UpdateMode,
    ablation_changes,
    frobenius,
    parse_update_steps,
)
from .date_objective import TweedieObjective
from .date_update import Targets, joint_norm
from .errors import ConfigError
from .sampling import StepState


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

    def record(self, index: int, t, before: Targets, after: Targets, org: Targets, grad_norm, score: float,
               seconds: float) -> None:
        """Add one update step: the targets ``before`` and ``after`` it and the original ``org``, by name."""
        names = list(before)
        moved = {n: after[n].float() - before[n].float() for n in names}
        drift = {n: after[n].float() - org[n].float() for n in names}
        self.update_steps.append(index)
        self.timesteps.append(t if isinstance(t, int) else float(t))
        self.update_norms.append(float(joint_norm(moved)[names[0]].mean()))
        for n, move in moved.items():
            self.update_norms_per_tensor.setdefault(n, []).append(float(frobenius(move).mean()))
        self.grad_norms.append(float(grad_norm))
        self.scores.append(score)
        self.drifts.append(float(joint_norm(drift)[names[0]].mean()))
        self.seconds += seconds


class DateHook:
    """The DATE condition hook (see module docstring); call it with each step's :class:`StepState`.

    Args:
        config: the DATE settings (``config.targets`` picks the condition tensors it moves).
        update_indices: resolved step indices (from :func:`parse_update_steps`).
        objective: what is differentiated (:class:`~date_edit.date_objective.TweedieObjective`: the denoiser and
            its guidance, decoder, scorer, prompts, schedule, timesteps, noise maps).
        keep_directions: record every update's move of the first target in ``trace.directions`` (for analyses).
        **parts: instead of ``objective``, its parts as keywords, as earlier versions took them: ``denoiser``,
            ``uncond`` (None for no guidance), ``guidance_scale``, ``decode``, ``score``, ``prompts``,
            ``schedule``, ``timesteps`` and optionally ``noise_maps``.
    """

    def __init__(self, config: DateConfig, update_indices: Sequence[int],
                 objective: Optional[TweedieObjective] = None, *, keep_directions: bool = False, **parts) -> None:
        if objective is None:
            objective = _objective_of(**parts)
        elif parts:
            raise TypeError(f"DateHook takes an objective or its parts, not both (got {', '.join(parts)})")
        self.config, self.objective, self.keep_directions = config, objective, keep_directions
        self.indices = frozenset(update_indices)
        self.trace = DateTrace()
        self.cond_org: Optional[Conditioning] = None
        self.names: tuple[str, ...] = ()
        self.masks: Targets = {}  # entries of a target DATE never moves (SD3's zero pad block), as 0/1 masks
        self._generator = torch.Generator().manual_seed(config.seed)

    @property
    def guidance(self) -> ClassifierFreeGuidance:
        """The classifier-free guidance of the gradient pass; a loop with the same ``uncond`` and scale takes the
        unconditional prediction it kept at an update step (:func:`date_edit.cfg.shared_guidance`)."""
        return self.objective.guidance

    def __call__(self, state: StepState) -> Condition:
        """Return the condition for this step: updated on scheduled steps, unchanged otherwise (same type as
        ``state.cond``: a tensor stays a tensor)."""
        given = as_conditioning(state.cond)
        if self.cond_org is None:
            self.cond_org = given.detach().clone()
            self.names = given.resolve_targets(self.config.targets)
            self.masks = {n: given.mask(n) for n in self.names if given.mask(n) is not None}
            self.trace.targets = list(self.names)
        if state.index not in self.indices:
            return state.cond
        if not self.config.moves:  # rho 0: record a zero move, keep c bit for bit
            current = {n: given[n].detach() for n in self.names}
            self.trace.record(state.index, state.t, current, current, self._org(), torch.zeros(()), float("nan"),
                              0.0)
            return state.cond
        start = time.perf_counter()
        before = {n: given[n].detach() for n in self.names}
        after, grad_norm, score = self._update(state, given, before)
        self.trace.record(state.index, state.t, before, after, self._org(), grad_norm, score,
                          time.perf_counter() - start)
        if self.keep_directions:
            first = self.names[0]
            self.trace.directions.append((after[first].float() - before[first].float()).cpu())
        updated = given.replace(**after)
        return updated if isinstance(state.cond, Conditioning) else updated["tokens"]

    def gradient(self, state: StepState, cond: Condition) -> tuple[torch.Tensor | Targets, float]:
        """``g = d h / d c`` at ``cond`` with the guided eps as in the official code, and ``h``: for a plain
        ``(B, L, D)`` tensor the gradient tensor; for a :class:`Conditioning` a dict, one gradient per target."""
        grads, h = self._gradients(state, cond)
        return (grads if isinstance(cond, Conditioning) else grads["tokens"]), h

    def _org(self) -> Targets:
        return {n: self.cond_org[n] for n in self.names}

    def _update(self, state: StepState, given: Conditioning, before: Targets) -> tuple[Targets, torch.Tensor, float]:
        """The targets after ``config.iterations`` moves (in ``before``'s dtypes), the last ``||g||`` and score."""
        accumulate = self.config.mode == UpdateMode.ACCUMULATE
        cond = {n: v.float() for n, v in before.items()}
        base = cond if accumulate else {n: v.float() for n, v in self._org().items()}
        grad_norm, score = torch.zeros(()), float("nan")
        for _ in range(self.config.iterations):
            rho = update.radii(self.config, {n: v.float() for n, v in self._org().items()})
            grads = None
            if update.needs_gradient(self.config):
                grads, score = self._gradients(state, given.replace(**cond))
                grad_norm = update.mean_norm(grads)
            noise = self._noise(cond) if self.config.direction == Direction.RANDOM else None
            moves = update.move(self.config, rho, grads, noise)
            origin = cond if accumulate else base
            cond = {n: origin[n] + moves[n] for n in self.names}
        return {n: cond[n].to(before[n].dtype) for n in self.names}, grad_norm, score

    def _gradients(self, state: StepState, cond: Condition) -> tuple[Targets, float]:
        """The objective's gradient of every target tensor (zero where DATE never moves) and the score."""
        grads, h = self.objective.gradients(state, cond, self.config, self.names or ("tokens",))
        return {n: self._masked(n, g) for n, g in grads.items()}, h

    def _noise(self, cond: Targets) -> Targets:
        """The random-direction ablation's standard normal draw per target, from the hook's own generator."""
        return {n: self._masked(n, torch.randn(v.shape, generator=self._generator, dtype=torch.float32).to(v.device))
                for n, v in cond.items()}

    def _masked(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` with the entries DATE never moves set to zero."""
        mask = self.masks.get(name)
        return value if mask is None else value * mask.to(value.device, value.dtype)


def _objective_of(*, denoiser, uncond: Optional[Condition], guidance_scale: float, **rest) -> TweedieObjective:
    """The objective from the keyword parts :class:`DateHook` also takes."""
    return TweedieObjective(ClassifierFreeGuidance(denoiser, uncond, guidance_scale), **rest)


def date_hook(backbone, config: Optional[DateConfig], scorer, prompts: Sequence[str], uncond: Optional[Condition],
              guidance_scale: float, timesteps: Sequence, noise_maps: Optional[torch.Tensor] = None,
              keep_directions: bool = False) -> Optional[DateHook]:
    """The DATE hook of a run of ``backbone`` (its gradient decoder, schedule and CFG with ``uncond`` at
    ``guidance_scale``), or None when ``config`` is None or schedules no update in ``timesteps``.

    Raises:
        ConfigError: no scorer, or one that is not differentiable.
    """
    if config is None:
        return None
    indices = parse_update_steps(config.update_steps, len(timesteps))
    if not indices:
        return None
    if scorer is None:
        raise ConfigError("scorer", "is missing: DATE needs one; pass a scorer, or disable DATE")
    if not getattr(scorer, "differentiable", False):
        raise ConfigError("scorer", f"{scorer.name!r} is not differentiable, so it cannot be a DATE objective")
    decode = functools.partial(backbone.grad_decode, clamp=config.clamp_decoded)
    objective = TweedieObjective(ClassifierFreeGuidance(backbone, uncond, guidance_scale), decode=decode,
                                 score=scorer, prompts=prompts, schedule=backbone.schedule, timesteps=timesteps,
                                 noise_maps=noise_maps)
    return DateHook(config, indices, objective, keep_directions=keep_directions)
