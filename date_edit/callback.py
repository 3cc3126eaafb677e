"""DATE inside the diffusers pipelines people already run, through their ``callback_on_step_end``.

diffusers calls ``callback_on_step_end(pipe, i, t, tensors)`` after the scheduler's step ``i``, under
``torch.no_grad()``, with the tensors named in ``callback_on_step_end_tensor_inputs``; what it returns replaces them
for the steps that follow. An update computed there, at the new latents, is DATE's update for step ``i + 1``; an
update of step 0 must happen before the call (:meth:`DateCallback.prepare`). With classifier-free guidance the
pipeline's ``prompt_embeds`` is ``[negative; positive]`` inside the loop: the callback moves the positive half only.

    from date_edit import DateConfig
    from date_edit.callback import DateCallback
    from date_edit.scorers import build_scorer

    date = DateCallback(pipe, "a cat wearing a hat", scorer=build_scorer("clip"),
                        config=DateConfig(update_steps="0,10,20,30,40"))
    image = pipe(**date.prepare(num_inference_steps=50, guidance_scale=7.5, latents=noise)).images[0]
    # without step 0 in the schedule the pipeline's own call works as it is:
    image = pipe("a cat wearing a hat", callback_on_step_end=date,
                 callback_on_step_end_tensor_inputs=date.tensor_inputs).images[0]

What moves, per pipeline (``DateConfig.targets``): SD 1.x/2.x the token embeddings; SDXL the token embeddings and
(``pooled``/``all``) ``add_text_embeds``; SD3 the token embeddings and ``pooled_prompt_embeds``; FLUX the T5 token
embeddings only (its pipeline does not hand the pooled CLIP embedding to callbacks). The same scorers, radii
(``rho`` / ``rho_relative``), schedules, modes and trace as :func:`date_edit.generate`; with the pipeline's own
scheduler and settings the latents equal ``generate``'s (tested on the tiny models of every family).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from . import callback_checks as checks
from .backbones import Backbone
from .conditioning import Conditioning
from .date import DateConfig, DateTrace, date_hook, parse_update_steps
from .errors import ConfigError
from .sampling import StepState

# family -> the pipeline tensors the callback reads: (latents, token embeddings, pooled vector or None, extras)
_INPUTS = {
    "sd": ("latents", "prompt_embeds", None, ()),
    "sdxl": ("latents", "prompt_embeds", "add_text_embeds", ("add_time_ids",)),
    "sd3": ("latents", "prompt_embeds", "pooled_prompt_embeds", ()),
    "flux": ("latents", "prompt_embeds", None, ()),
}


class DateCallback:
    """DATE as a ``callback_on_step_end`` of a stock diffusers pipeline (see the module docstring).

    Args:
        pipe: a ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline`` or
            ``FluxPipeline`` (or a pipeline of one of those families with the same callback tensors).
        prompt: the prompt(s) the pipeline is called with: what the scorer compares the images against.
        scorer: the differentiable objective (:func:`date_edit.scorers.build_scorer`).
        config: the DATE settings; ``config.update_steps`` is resolved against the pipeline's step count.
        height / width: the image size the pipeline makes (default: the model's native size).
        then: another ``callback_on_step_end`` to run after DATE's, with the same arguments; its tensor inputs
            are added to :attr:`tensor_inputs` through ``then_inputs``.

    Raises:
        ConfigError: one line naming the argument, before any model runs: an argument of the wrong type or out of
            range (:mod:`date_edit.callback_checks`), a pipeline without ``callback_on_step_end``, or one that does
            not hand a tensor DATE must move to it (FLUX's pooled embedding, a variant without
            ``pooled_prompt_embeds``).
    """

    def __init__(self, pipe, prompt: str | Sequence[str], *, scorer, config: DateConfig = DateConfig(),
                 height: Optional[int] = None, width: Optional[int] = None,
                 then: Optional[Callable] = None, then_inputs: Sequence[str] = ()) -> None:
        checks.check_pipe(pipe)
        self.prompts = checks.check_prompts(prompt)
        checks.check_scorer(scorer)
        checks.check_config(config)
        then_inputs = checks.check_then(then, then_inputs)
        self.backbone = Backbone.from_pipeline(pipe)
        self.family = self.backbone.family
        self.config, self.scorer, self.then = config, scorer, then
        self.size = checks.check_size(height, width, self.backbone)
        latents, tokens, pooled, extras = _INPUTS[self.family]
        wanted = [latents, tokens] + ([pooled] if pooled else []) + list(extras)
        offered = list(getattr(pipe, "_callback_tensor_inputs", wanted))
        checks.check_then_offered(then_inputs, offered, type(pipe).__name__)
        self.base = self.backbone.encode_condition(self.prompts, size=self.size)
        # the unconditional branch as the loop builds it (SD: the empty prompt encoded once, here)
        self.base_uncond = self.backbone.unconditional(len(self.prompts), size=self.size)
        self.targets = self.base.resolve_targets(config.targets)
        if "pooled" in self.targets and pooled is None:
            raise ConfigError("date_targets", f"{type(pipe).__name__} does not hand its pooled embedding to "
                                              "callbacks, so DATE can move only the token embeddings there: use "
                                              "targets='tokens', or date_edit.generate on Backbone.from_pipeline")
        missing = [n for n in wanted if n not in offered and (n != pooled or "pooled" in self.targets)]
        if missing:
            raise ConfigError("pipe", f"{type(pipe).__name__} does not hand {', '.join(missing)} to callbacks "
                                      f"(it offers {', '.join(offered)}): DATE cannot update there")
        self._names = {"latents": latents, "tokens": tokens, "pooled": pooled if pooled in offered else None,
                       "extras": tuple(e for e in extras if e in offered)}
        self._needed = [n for n in wanted if n in offered]  # what each callback invocation must be handed
        self.tensor_inputs = list(dict.fromkeys([*self._needed, *then_inputs]))
        self._denoiser = checks.denoiser_of(pipe)
        self.hook = None
        self._indices: frozenset[int] = frozenset()
        self._timesteps: list = []
        self._scale = 1.0
        self._active = False  # a run is under way (prepare() or the first callback of a run started it)

    # -- the public surface ------------------------------------------------------------------------------------

    @property
    def trace(self) -> Optional[DateTrace]:
        """What DATE did in the last run (None before any update step ran)."""
        return self.hook.trace if self.hook is not None else None

    def prepare(self, *, num_inference_steps: int, guidance_scale: float, latents: torch.Tensor) -> dict:
        """Run step 0's update (when the schedule has it) and return the pipeline's keyword arguments.

        ``latents``: the initial noise ``(B, C, h, w)`` (FLUX: image layout or the pipeline's packed layout), as
        you would pass it to the pipeline. The returned dict holds the (updated) embeddings in place of the
        prompt, the latents, the callback and its tensor inputs, the steps, guidance and size: call
        ``pipe(**date.prepare(...))`` (add your own keyword arguments, but not ``prompt``).

        Raises:
            ConfigError: naming the argument, before any model runs: a step count that is not an integer from 1 to
                the model's training timesteps, a guidance scale that is not a finite number, or latents that are
                not a finite float tensor of this run's shape (one per prompt).
        """
        checks.check_run(num_inference_steps, guidance_scale, self.backbone)
        checks.check_latents(latents, self.backbone, self.size, len(self.prompts))
        self._start(num_inference_steps, float(guidance_scale), self.backbone.timesteps(num_inference_steps,
                                                                                        self.size))
        self._active = True
        x = self._image_layout(latents)
        cond = self.base
        if 0 in self._indices:
            state = StepState(index=0, t=self._timesteps[0], x_t=x.to(self.backbone.device, torch.float32),
                              cond=self._guided(cond))
            cond = self._strip(self.hook(state))
        return self._pipeline_kwargs(cond, latents, num_inference_steps, guidance_scale)

    def __call__(self, pipe, i: int, t, tensors: dict) -> dict:
        """diffusers' ``callback_on_step_end``: DATE's update for step ``i + 1`` when it is scheduled.

        Raises:
            ConfigError: before DATE runs, naming what to change: ``pipe`` is not the pipeline this callback was
                made for, ``tensors`` lacks what DATE reads (pass ``callback_on_step_end_tensor_inputs=
                date.tensor_inputs``), or the pipeline runs other prompts than the callback's.
        """
        try:
            checks.check_step(pipe, i, tensors, denoiser=self._denoiser, needed=self._needed)
            checks.check_batch(tensors, self._names, len(self.prompts),
                               bool(getattr(pipe, "do_classifier_free_guidance", False)))
            guidance = None if self._active else checks.check_guidance(getattr(pipe, "guidance_scale", 1.0))
        except ConfigError:
            self._active = False  # the pipeline stops here: the next call is a new run
            raise
        n = len(pipe.scheduler.timesteps)
        if not self._active:  # the callback alone: the run starts here, at the end of its first step
            self._start(n, guidance, self._pipe_timesteps(pipe, n))
            self._active = True
            if 0 in self._indices:
                self._active = False
                raise ConfigError("update_steps", "step 0 updates before the pipeline's first step: call "
                                                  "pipe(**date.prepare(...)) instead of passing the callback alone")
        k = i + 1
        if k < n and k in self._indices:
            cfg = bool(getattr(pipe, "do_classifier_free_guidance", False))
            cond, uncond = self._conditions(tensors, cfg)
            if uncond is not None:  # the pipeline's negative half: the user's negative prompt, if any
                self.hook.guidance.uncond = uncond
            x = self._pipeline_state(pipe, tensors[self._names["latents"]], k)
            state = StepState(index=k, t=self._timesteps[k], x_t=x, cond=self._guided(cond))
            tensors = self._write_back(tensors, self._strip(self.hook(state)), cfg)
        if k >= n:
            self._active = False  # the next pipeline call is a new run
        if self.then is not None:
            tensors = self.then(pipe, i, t, tensors)
        return tensors

    # -- internals ---------------------------------------------------------------------------------------------

    def _start(self, n: int, guidance_scale: float, timesteps: list) -> None:
        """A fresh DATE hook for a run of ``n`` steps (each pipeline call starts from the original embedding)."""
        self._timesteps = list(timesteps)
        self._indices = frozenset(parse_update_steps(self.config.update_steps, n))
        _, uncond, scale = self.backbone.guidance(self.base, self.base_uncond, guidance_scale)
        self._scale = guidance_scale
        self.hook = date_hook(self.backbone, self.config, self.scorer, self.prompts,
                              uncond if guidance_scale > 1.0 else None, scale, self._timesteps)
        if self.hook is None:  # no update step in this run
            self._indices = frozenset()

    def _pipe_timesteps(self, pipe, n: int) -> list:
        """The run's timesteps as the loop's numbers: ours where the pipeline's scheduler runs the same ones (exact
        parity with ``generate``), else the pipeline's own (another scheduler)."""
        theirs = [float(t) for t in pipe.scheduler.timesteps]
        ours = self.backbone.timesteps(n, self.size)
        if len(ours) == len(theirs) and all(abs(float(a) - b) < 1e-3 * max(1.0, abs(b)) for a, b in zip(ours, theirs)):
            return list(ours)
        return [t if self.family in ("sd3", "flux") else int(round(t)) for t in theirs]

    def _guided(self, cond: Conditioning) -> Conditioning:
        """``cond`` as the loop gives it to the model (FLUX-dev: the guidance scale embedded)."""
        return self.backbone.guidance(cond, None, self._scale)[0]

    def _strip(self, cond: Conditioning) -> Conditioning:
        """The hook's condition without the loop-only extras (FLUX's embedded guidance)."""
        return Conditioning(cond.tensors, {k: v for k, v in cond.extras.items() if k in self.base.extras},
                            cond.masks)

    def _image_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C, h, w)``; FLUX's packed ``(B, seq, 4C)`` unpacked."""
        if latents.dim() == 3:
            b = latents.shape[0]
            f = self.backbone.vae_scale_factor
            return self.backbone.unpack(latents, (b, self.backbone.latent_channels, self.size[0] // f,
                                                  self.size[1] // f))
        return latents

    def _pipeline_state(self, pipe, latents: torch.Tensor, k: int) -> torch.Tensor:
        """The loop's ``x_t`` at step ``k`` from the pipeline's latents (float32, image layout): a scheduler that
        scales its latents (Euler, ...) gives them back unscaled through its ``scale_model_input``."""
        x = latents
        if self.family in ("sd", "sdxl") and hasattr(pipe.scheduler, "scale_model_input"):
            x = pipe.scheduler.scale_model_input(latents, pipe.scheduler.timesteps[k])
        return self._image_layout(x).to(self.backbone.device, torch.float32)

    def _conditions(self, tensors: dict, cfg: bool) -> tuple[Conditioning, Optional[Conditioning]]:
        """The positive condition and (with CFG) the negative one, from the pipeline's tensors."""
        def halves(value: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
            value = value.float()
            return (value.chunk(2)[0], value.chunk(2)[1]) if cfg else (None, value)

        neg_tok, tok = halves(tensors[self._names["tokens"]])
        pos, neg = {"tokens": tok}, {"tokens": neg_tok}
        if self._names["pooled"]:
            neg["pooled"], pos["pooled"] = halves(tensors[self._names["pooled"]])
        cond = self.base.replace(**pos)
        uncond = None
        if cfg:
            uncond = self.base_uncond.replace(**neg)
        if "add_time_ids" in self._names["extras"]:
            neg_ids, ids = halves(tensors["add_time_ids"])
            cond = cond.with_extras(time_ids=ids)
            uncond = uncond.with_extras(time_ids=neg_ids) if uncond is not None else None
        return cond, uncond

    def _write_back(self, tensors: dict, cond: Conditioning, cfg: bool) -> dict:
        """The pipeline's tensors with their positive halves replaced by ``cond``'s moved tensors."""
        out = dict(tensors)
        for ours, theirs in (("tokens", self._names["tokens"]), ("pooled", self._names["pooled"])):
            if theirs is None or ours not in self.targets:
                continue
            old = tensors[theirs]
            new = cond[ours].to(old.device, old.dtype)
            out[theirs] = torch.cat([old.chunk(2)[0], new]) if cfg else new
        return out

    def _pipeline_kwargs(self, cond: Conditioning, latents: torch.Tensor, steps: int, guidance: float) -> dict:
        """What ``pipe(**...)`` takes: the embeddings instead of the prompt, and the rest of the run."""
        dtype = self.backbone.dtype
        kw = {"prompt_embeds": cond["tokens"].to(dtype), "latents": latents, "num_inference_steps": steps,
              "guidance_scale": guidance, "height": self.size[0], "width": self.size[1],
              "callback_on_step_end": self, "callback_on_step_end_tensor_inputs": self.tensor_inputs}
        if "pooled" in cond.names:
            kw["pooled_prompt_embeds"] = cond["pooled"].to(dtype)
        if self.family != "flux" and guidance > 1.0:
            uncond = self.base_uncond
            kw["negative_prompt_embeds"] = uncond["tokens"].to(dtype)
            if "pooled" in uncond.names:
                kw["negative_pooled_prompt_embeds"] = uncond["pooled"].to(dtype)
        if self.family == "flux" and latents.dim() == 4:
            kw["latents"] = self.backbone.pack(latents)
        return kw
