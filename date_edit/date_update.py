"""DATE's update rule: plain functions of the gradients, the radius and the :class:`~date_edit.date_config.DateConfig`.

One iteration moves every target tensor by ``rho * g / ||g||_F`` (per sample; ``||g||`` joint over the targets or
each its own, ``config.norm``), or by one of the ablations: ``rho * g`` unnormalised, or a random direction of the
same norm. Nothing here evaluates a model or draws a random number: :class:`~date_edit.date.DateHook` hands in the
gradients (:mod:`date_edit.date_objective`) and, for the random ablation, the noise.
"""

from __future__ import annotations

from typing import Optional

import torch

from .date_config import DateConfig, Direction, TargetNorm, frobenius

Targets = dict[str, torch.Tensor]  # the moved tensors of a condition (or their gradients), by name, float32


def joint_norm(tensors: Targets) -> Targets:
    """The per-sample Frobenius norm over all ``tensors`` together, shaped to broadcast against each of them
    (one tensor: exactly :func:`~date_edit.date_config.frobenius`)."""
    if len(tensors) == 1:
        return {k: frobenius(v) for k, v in tensors.items()}
    total = sum(v.flatten(1).pow(2).sum(dim=1) for v in tensors.values()).sqrt()
    return {k: total.view(-1, *([1] * (v.dim() - 1))) for k, v in tensors.items()}


def radii(config: DateConfig, org: Targets) -> Targets:
    """Each target's per-sample radius from the original condition ``org``: ``rho`` (or ``rho_relative`` times the
    original's norm), shared by the targets jointly or given to each (``config.norm``)."""
    if len(org) == 1 or config.norm == TargetNorm.PER_TENSOR:
        return {n: config.radius(v) for n, v in org.items()}
    if config.rho_relative is not None:
        return {n: config.rho_relative * v for n, v in joint_norm(org).items()}
    return {n: config.radius(v) for n, v in org.items()}


def norms(config: DateConfig, grads: Targets) -> Targets:
    """The normaliser of each target's gradient: joint over the targets, or its own (``config.norm``)."""
    if config.norm == TargetNorm.PER_TENSOR:
        return {n: frobenius(g) for n, g in grads.items()}
    return joint_norm(grads)


def mean_norm(grads: Targets) -> torch.Tensor:
    """``||g||_F`` joint over the targets, averaged over the batch (what the trace records)."""
    return joint_norm(grads)[next(iter(grads))].mean()


def needs_gradient(config: DateConfig) -> bool:
    """False only for the normalised random direction, which ignores the score."""
    return not (config.direction == Direction.RANDOM and config.normalize)


def move(config: DateConfig, rho: Targets, grads: Optional[Targets] = None,
         noise: Optional[Targets] = None) -> Targets:
    """One iteration's move of every target.

    Args:
        rho: the radii (:func:`radii`).
        grads: the score's gradient per target (masked; not needed when :func:`needs_gradient` is false).
        noise: for ``config.direction == "random"``, standard normal noise per target (masked), the direction.
    """
    if config.direction == Direction.RANDOM:
        noise_norms = norms(config, noise)
        unit = {n: rho[n] * v / noise_norms[n] for n, v in noise.items()}
        if config.normalize:
            return unit
        grad_norms = norms(config, grads)  # unnormalised random: the same norm as rho * g
        return {n: unit[n] * grad_norms[n] for n in grads}
    if not config.normalize:
        return {n: rho[n] * g for n, g in grads.items()}
    grad_norms = norms(config, grads)
    moves = {}
    for n, grad in grads.items():
        norm = grad_norms[n]
        usable = (norm > 0) & torch.isfinite(norm)  # a zero or non-finite gradient (fp16 overflow) moves nothing
        safe = torch.where(usable, norm, torch.ones_like(norm))
        grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
        moves[n] = torch.where(usable, rho[n] * grad / safe, torch.zeros_like(grad))
    return moves
