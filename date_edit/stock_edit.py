"""Edit-friendly DDPM editing inside a stock diffusers pipeline (SD 1.x/2.x, SDXL), without a fork.

An edit resamples from the inversion's latent at step ``skip`` with DDPM (eta 1) steps whose noise is not drawn but
taken from the inversion's stored maps (Huberman-Spiegelglas et al., CVPR 2024). diffusers' ``DDIMScheduler.step``
takes ``eta`` and a ``variance_noise`` tensor, and a pipeline runs whatever timesteps its scheduler's
``set_timesteps`` leaves in ``scheduler.timesteps``; so a DDIM scheduler that keeps the last ``steps - skip``
timesteps and steps with ``eta=1`` and the stored map of each step is all the pipeline needs::

    from date_edit import invert_image, Backbone
    from date_edit.stock_edit import edit_friendly_kwargs

    backbone = Backbone.from_pipeline(pipe)
    inversion = invert_image(backbone, pixels, source_prompt="a photo of a cat", steps=100, cfg_source=3.5)
    image = pipe("a photo of a dog", guidance_scale=15, **edit_friendly_kwargs(pipe, inversion, skip=36)).images[0]

The pipeline's scheduler is replaced for the call by :class:`EditFriendlyScheduler` (``kwargs`` restore nothing:
keep your own scheduler object and set it back, or use :func:`edit_friendly_pipeline`, a context manager). DATE
composes through :class:`date_edit.callback.DateCallback` as in generation (its update steps count the edit's run
steps). SD3 and FLUX are not supported this way: FlowEdit evaluates the velocity at two different latents each step
(the noised source and the edit) and integrates their difference, which a single-branch pipeline loop cannot express
without replacing the transformer call itself.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .errors import ConfigError
from .inversion import Inversion


def _ddim_class():
    from diffusers import DDIMScheduler

    return DDIMScheduler


class EditFriendlyScheduler(_ddim_class()):
    """A ``DDIMScheduler`` that runs the edit's tail of an inversion's timesteps with its stored noise maps.

    Build it with :meth:`for_inversion`; ``set_timesteps(n)`` ignores ``n`` (the inversion fixes the schedule) and
    keeps the timesteps from ``skip`` on; each ``step`` is DDIM with ``eta=1`` and ``variance_noise`` = the
    stored map of that step, so the pipeline lands where :func:`date_edit.edit` does.
    """

    def bind(self, inversion: Inversion, skip: int) -> "EditFriendlyScheduler":
        """Attach ``inversion``'s noise maps from step ``skip`` on; returns self."""
        _, timesteps, maps = inversion.start(skip)
        self._ef_full = len(inversion.timesteps)
        self._ef_skip = skip
        self._ef_timesteps = [int(t) for t in timesteps]
        self._ef_maps = maps
        self._ef_index = 0
        return self

    @classmethod
    def for_inversion(cls, config, inversion: Inversion, skip: int) -> "EditFriendlyScheduler":
        """From a scheduler ``config`` (the pipeline's), bound to ``inversion`` from step ``skip``."""
        return cls.from_config(config).bind(inversion, skip)

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs) -> None:
        """The inversion's timesteps from ``skip`` on (``num_inference_steps`` is ignored: the inversion fixed
        them); checks they are this scheduler's own for the inversion's step count."""
        super().set_timesteps(self._ef_full, device=device)
        ours = [int(t) for t in self.timesteps[self._ef_skip:]]
        if ours != self._ef_timesteps:
            raise ConfigError("scheduler", "the pipeline's scheduler config gives other timesteps than the "
                                           "inversion ran: invert with Backbone.from_pipeline(pipe)")
        self.timesteps = self.timesteps[self._ef_skip:]
        self._ef_index = 0

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator=None, variance_noise=None, return_dict: bool = True):
        """DDIM with ``eta=1`` and this step's stored noise map (the pipeline's ``eta``/``generator`` are unused)."""
        if self._ef_index >= len(self._ef_maps):
            raise ConfigError("scheduler", "more steps than the inversion's stored noise maps")
        z = self._ef_maps[self._ef_index].to(sample.device, sample.dtype)
        self._ef_index += 1
        return super().step(model_output, timestep, sample, eta=1.0, use_clipped_model_output=False,
                            variance_noise=z, return_dict=return_dict)


def _check(pipe) -> None:
    from .backbones import Backbone

    family = Backbone.from_pipeline(pipe).family
    if family not in ("sd", "sdxl"):
        raise ConfigError("pipe", f"edit-friendly editing inside a stock pipeline needs SD or SDXL ({family} is a "
                                  "flow model: use date_edit.edit, which runs FlowEdit)")


def edit_friendly_kwargs(pipe, inversion: Inversion, skip: int) -> dict:
    """Install :class:`EditFriendlyScheduler` on ``pipe`` (replacing its scheduler) and return the call's
    ``latents`` and ``num_inference_steps``: ``pipe(target_prompt, **edit_friendly_kwargs(...))`` edits.

    Raises:
        ConfigError: a flow model, a ``skip`` outside the inversion, or an inversion of another batch size.
    """
    _check(pipe)
    n = len(inversion.timesteps)
    if not 0 <= skip < n:
        raise ConfigError("skip", f"must be between 0 and {n - 1} for an inversion of {n} steps, got {skip}")
    pipe.scheduler = EditFriendlyScheduler.for_inversion(pipe.scheduler.config, inversion, skip)
    x_start = inversion.x_ts[skip]
    return {"latents": x_start, "num_inference_steps": n}


@contextlib.contextmanager
def edit_friendly_pipeline(pipe, inversion: Inversion, skip: int) -> Iterator[dict]:
    """``with edit_friendly_pipeline(pipe, inversion, skip) as kw: pipe(prompt, **kw)``; the pipeline's own
    scheduler is put back afterwards, also on an error."""
    original = pipe.scheduler
    try:
        yield edit_friendly_kwargs(pipe, inversion, skip)
    finally:
        pipe.scheduler = original
