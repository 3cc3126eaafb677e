"""Classifier-free guidance (Ho & Salimans 2022): ``eps = eps_u + w (eps_c - eps_u)``.

:func:`guided_eps` is the one batched call the loops make. :class:`ClassifierFreeGuidance` is the same guidance as
an object that keeps the unconditional prediction it evaluated at a step: DATE's gradient pass needs the
conditional branch on its own (with autograd), and the sampling step that follows at the same ``x_t`` takes the
kept ``eps_u`` (:func:`step_eps`) instead of evaluating it again, so an update step costs one unconditional pass.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from .conditioning import Condition, cat_conditions


class Denoiser(Protocol):
    """``eps = denoiser(x_t, t, cond)``: the noise prediction (v-models converted to eps).

    Args:
        x_t: ``(B, C, h, w)`` latents.
        t: integer timestep.
        cond: a :class:`~date_edit.conditioning.Conditioning` of batch B, or a ``(B, L, D)`` token embedding.
    """

    def __call__(self, x_t: torch.Tensor, t: int, cond: Condition) -> torch.Tensor: ...


def guided_eps(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: int,
    cond: Condition,
    uncond: Optional[Condition],
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance ``eps = eps_u + w (eps_c - eps_u)`` in one batched call (Ho & Salimans 2022).

    With ``guidance_scale == 1`` or no unconditional embedding, only the conditional branch runs. A denoiser that
    builds its own guided batch (Prompt-to-Prompt runs the source branch in the same call) has a ``guided_eps``
    method with this signature, and it is used instead.
    """
    custom = getattr(denoiser, "guided_eps", None)
    if custom is not None:
        return custom(x_t, t, cond, uncond, guidance_scale)
    if uncond is None or guidance_scale == 1.0:
        return denoiser(x_t, t, cond)
    eps_u, eps_c = denoiser(torch.cat([x_t, x_t]), t, cat_conditions(uncond, cond)).chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


class ClassifierFreeGuidance:
    """CFG of ``denoiser`` with ``uncond`` at ``scale``, keeping the unconditional prediction of the current step.

    Attributes:
        denoiser: the model both branches run on.
        uncond: the unconditional condition, None for no guidance (it may be replaced between steps: the callback
            takes a pipeline's negative half).
        scale: the guidance scale ``w``.
    """

    def __init__(self, denoiser: Denoiser, uncond: Optional[Condition], scale: float) -> None:
        self.denoiser, self.uncond, self.scale = denoiser, uncond, scale
        self._kept: Optional[tuple] = None  # (x_t, t, uncond, eps_u) of the last evaluation

    @property
    def active(self) -> bool:
        """Whether the unconditional branch counts: an ``uncond`` and a scale other than 1."""
        return self.uncond is not None and self.scale != 1.0

    def unconditional(self, x_t: torch.Tensor, t) -> Optional[torch.Tensor]:
        """``eps_u`` at ``x_t`` and ``t`` without gradients, evaluated once and kept for the step (None when
        :attr:`active` is false)."""
        if not self.active:
            return None
        if not self._holds(x_t, t):
            with torch.no_grad():
                self._kept = (x_t, t, self.uncond, self.denoiser(x_t.detach(), t, self.uncond))
        return self._kept[3]

    def combine(self, eps_c: torch.Tensor, eps_u: Optional[torch.Tensor]) -> torch.Tensor:
        """The guided prediction from the conditional one and ``eps_u`` (``eps_c`` itself when ``eps_u`` is None)."""
        return eps_c if eps_u is None else eps_u + self.scale * (eps_c - eps_u)

    def take(self, x_t: torch.Tensor, t) -> Optional[torch.Tensor]:
        """Hand over the ``eps_u`` kept at this ``x_t`` (the same tensor) and ``t``, once; None if there is none."""
        eps_u = self._kept[3] if self._holds(x_t, t) else None
        self._kept = None
        return eps_u

    def _holds(self, x_t: torch.Tensor, t) -> bool:
        kept = self._kept
        return kept is not None and kept[0] is x_t and kept[1] == t and kept[2] is self.uncond


def shared_guidance(cond_hook, uncond: Optional[Condition], scale: float) -> Optional[ClassifierFreeGuidance]:
    """The :class:`ClassifierFreeGuidance` a condition hook evaluates (``cond_hook.guidance``: DATE's) when it guides
    with the loop's own ``uncond`` (the same object) and ``scale``, so the loop may take its kept ``eps_u``."""
    shared = getattr(cond_hook, "guidance", None)
    if isinstance(shared, ClassifierFreeGuidance) and shared.uncond is uncond and shared.scale == scale:
        return shared
    return None


def step_eps(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t,
    cond: Condition,
    uncond: Optional[Condition],
    guidance_scale: float,
    shared: Optional[ClassifierFreeGuidance] = None,
) -> torch.Tensor:
    """A loop step's guided eps: when ``shared`` kept the unconditional prediction at this ``x_t`` and ``t``, only
    the conditional branch of ``denoiser`` runs; otherwise :func:`guided_eps`."""
    eps_u = shared.take(x_t, t) if shared is not None and uncond is not None and guidance_scale != 1.0 else None
    if eps_u is None:
        return guided_eps(denoiser, x_t, t, cond, uncond, guidance_scale)
    return eps_u + guidance_scale * (denoiser(x_t, t, cond) - eps_u)
