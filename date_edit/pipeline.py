"""Orchestration: prompts and images in, results out. Invert, edit, generate, reconstruct.

The only layer that tokenises; the math below it takes tensors. Every result carries its
resolved configuration so any output can be reproduced.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional, Sequence

import torch

from . import controls
from .timing import Clock as _Clock, peak_memory_mb  # noqa: F401 - peak_memory_mb: API
from .backbones import Backbone
from .conditioning import Conditioning
from .date import DateConfig, DateHook, DateTrace, date_hook, parse_update_steps
from .defaults import resolve_edit_config
from .edit_config import EditConfig, check_finite as _check_finite, check_steps as _check_steps
from .errors import ConfigError
from .inversion import Inversion, invert
from .limits import check_dimensions, check_seed
from .masks import LatentBlend
from .sampling import sample


@dataclass(frozen=True)
class GenerateConfig:
    """Settings of text-to-image generation (defaults: the DATE paper's, 50 DDIM steps, CFG 7.5, seed 6)."""

    steps: int = 50  # DDIM (eta 0) steps
    guidance_scale: float = 7.5  # CFG scale
    seed: int = 6  # seeds the initial noise (drawn on the CPU)
    height: Optional[int] = None  # pixels; None: the model's native size
    width: Optional[int] = None
    date: Optional[DateConfig] = field(default_factory=DateConfig)  # None: fixed embedding
    universal_guidance: float = 0.0  # > 0: Universal Guidance strength (baseline; uses the scorer)
    universal_guidance_steps: str = "every:1"  # steps it acts on (same syntax as DATE's update steps)

    def __post_init__(self) -> None:
        _check_steps(self.steps)
        _check_finite(self, "guidance_scale", "universal_guidance")
        if self.universal_guidance < 0:
            raise ConfigError("universal_guidance", f"must be >= 0, got {self.universal_guidance}")
        parse_update_steps(self.universal_guidance_steps, None)
        check_seed(self.seed, name="seed")
        check_dimensions(self.height, self.width)

    def to_dict(self) -> dict:
        """JSON-ready resolved configuration."""
        d = asdict(self)
        d["date"] = self.date.to_dict() if self.date else None
        return d


@dataclass
class Result:
    """What an edit, a generation or a reconstruction produced.

    Attributes:
        images: ``(B, 3, H, W)`` in [0, 1], on the CPU.
        latents: ``(B, 4, h, w)`` final latents (float32, CPU).
        prompts: the target prompts.
        update_steps: sampler step indices DATE updated (empty without DATE).
        trace: DATE's record (norms, drift, per-step scores), or None.
        timings: seconds: ``total_s``, ``inversion_s``, ``sampling_s``, ``date_s``.
        peak_memory_mb: peak GPU memory (CUDA) or peak resident memory of the process (CPU).
        config: the resolved configuration.
        inversion: the inversion (edits and reconstructions), else None.
        source_latents: ``(B, 4, h, w)`` latents of the input image (edits and reconstructions).
        mask: ``(B, 1, H, W)`` the pixel mask the edit was confined to (user or automatic), else None.
        source_prompts: the source prompt of each image the edit ran with (a caption where ``"auto"`` was asked).
    """

    images: torch.Tensor
    latents: torch.Tensor
    prompts: list[str]
    update_steps: list[int]
    trace: Optional[DateTrace]
    timings: dict
    peak_memory_mb: float
    config: dict
    inversion: Optional[Inversion] = None
    source_latents: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    source_prompts: list[str] = field(default_factory=list)

    @property
    def embedding_update_norms(self) -> list[float]:
        """``||c_after - c_before||_F`` per update step (mean over the batch)."""
        return list(self.trace.update_norms) if self.trace else []

    @property
    def embedding_drift(self) -> float:
        """``||c_final - c_original||_F`` (mean over the batch)."""
        return self.trace.final_drift if self.trace else 0.0


def _phase(progress: Optional[Callable[[str, int, int], None]], name: str) -> Optional[Callable[[int, int], None]]:
    """``progress`` bound to one phase name, or None."""
    return (lambda i, n: progress(name, i, n)) if progress else None


def _decoded_result(backbone: Backbone, latents: torch.Tensor, clock: _Clock, *, prompts: list[str],
                    hook: Optional[DateHook], config: dict, **extra) -> Result:
    """Decode the final latents, close the sampling phase, and gather the :class:`Result`."""
    with torch.no_grad():
        images = backbone.decode(latents)
    clock.lap("sampling_s")
    trace = hook.trace if hook else None
    return Result(images=images.cpu(), latents=latents.cpu(), prompts=prompts,
                  update_steps=list(trace.update_steps) if trace else [], trace=trace,
                  timings=clock.timings(trace), peak_memory_mb=peak_memory_mb(clock.device), config=config, **extra)


def invert_image(
    backbone: Backbone,
    pixels: torch.Tensor,
    *,
    source_prompt: str | Sequence[str] = "",
    steps: int = 100,
    cfg_source: float = 3.5,
    seed: int | Sequence[int] = 0,
    progress: Optional[Callable[[int, int], None]] = None,
    reference_compat: bool = False,
) -> Inversion:
    """Encode images ``(B, 3, H, W)`` in [0, 1] and invert them into edit-friendly noise maps (CVPR 2024).

    ``seed``: one for the batch, or one per image (each image's maps then do not depend on its batch).
    ``reference_compat``: the official noise order and zeroed last map (see :func:`~date_edit.inversion.invert`).
    """
    b = pixels.shape[0]
    sources = [source_prompt] * b if isinstance(source_prompt, str) else list(source_prompt)
    x0 = backbone.encode_image(pixels)
    size = tuple(pixels.shape[-2:])
    cond, uncond, scale = backbone.guidance(*_source_conditions(backbone, sources, size), cfg_source)
    if isinstance(seed, int):
        generator = torch.Generator().manual_seed(seed)
    else:
        generator = [torch.Generator().manual_seed(int(s)) for s in seed]
    timesteps = backbone.timesteps(steps, size)
    return invert(backbone, x0, timesteps, backbone.schedule, cond=cond, uncond=uncond,
                  guidance_scale=scale, generator=generator, progress=progress, reference_compat=reference_compat)


def _source_conditions(backbone: Backbone, sources: list[str],
                       size: tuple[int, int]) -> tuple[Conditioning, Optional[Conditioning]]:
    """The source condition: CFG on the source prompt, or the unconditional branch alone if it is empty."""
    uncond = backbone.unconditional(len(sources), size=size)
    if all(not s for s in sources):
        return uncond, None
    return backbone.encode_condition(sources, size=size), uncond


def edit(
    backbone: Backbone,
    pixels: torch.Tensor,
    prompt: str | Sequence[str],
    *,
    source_prompt: str | Sequence[str] = "",
    config: EditConfig = EditConfig(),
    scorer=None,
    inversion: Optional[Inversion] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    seeds: Optional[Sequence[int]] = None,
    mask: Optional[torch.Tensor] = None,
    captioner=None,
) -> Result:
    """Edit images: invert under the source prompt, then resample from step ``skip`` under the target
    prompt with the stored noise maps, DATE updating the target embedding at the scheduled steps.

    Structure controls (``config.mask``, ``config.p2p``) confine the edit: a mask keeps the latent outside it on
    the source's exact trajectory and pastes the result into the input, so pixels outside are the input's;
    Prompt-to-Prompt runs the source branch beside the target and injects its attention maps.

    Args:
        pixels: ``(B, 3, H, W)`` in [0, 1], sides multiples of ``backbone.size_multiple``.
        prompt: target prompt(s), one per image or one for all.
        scorer: the DATE objective (required when ``config.date`` schedules updates).
        inversion: reuse an earlier inversion of the same images with the same steps/seed/source.
        seeds: one inversion seed per image (overrides ``config.seed``), so each image's noise maps
            do not depend on the batch it runs in.
        mask: ``(1 or B, 1, H, W)`` in [0, 1], 1 where the image may change (a user mask).
        source_prompt: what the images show; ``"auto"``: each image's caption by ``captioner`` (a Captioner or
            its spec; default the model's); ``""``: none (the papers' plain setting).
    """
    device = backbone.device
    b = pixels.shape[0]
    size = tuple(pixels.shape[-2:])
    prompts, sources, caption_s = _prompts(backbone, pixels, prompt, source_prompt, captioner)
    config = controls.with_defaults(backbone, config, sources, user_mask=mask is not None, prompts=prompts,
                                    uncaptioned=caption_s is not None and not all(sources))
    user_mask = controls.user_mask(config, mask, b, size)
    config = controls.check(backbone, resolve_edit_config(config, backbone), sources)
    if config.method == "flowedit":
        return _timed_caption(_flowedit(backbone, pixels, prompts, source_prompt=sources, config=config,
                                        scorer=scorer, progress=progress, seeds=seeds, user_mask=user_mask), caption_s)
    clock = _Clock(device)
    if inversion is None:
        inversion = invert_image(backbone, pixels, source_prompt=sources, steps=config.steps,
                                 cfg_source=config.cfg_source, seed=config.seed if seeds is None else list(seeds),
                                 progress=_phase(progress, "invert"), reference_compat=config.reference_compat)
    clock.lap("inversion_s")
    skip = config.resolved_skip()
    x_start, timesteps, noise_maps = inversion.start(skip)
    trajectory = inversion.x_ts[skip:]  # (n + 1, B, C, h, w): the source's latent at each step and where it lands
    target_cond = backbone.encode_condition(prompts, size=size)
    cond, uncond, scale = backbone.guidance(target_cond, backbone.unconditional(b, size=size), config.cfg_target)
    hook = date_hook(backbone, config.date, scorer, prompts, uncond, scale, timesteps, noise_maps)
    needs_source = config.p2p is not None or (config.mask is not None and config.mask.source == "auto")
    source_cond = backbone.encode_condition(sources, size=size) if needs_source and all(sources) \
        else backbone.unconditional(b, size=size)
    latent_hw = tuple(x_start.shape[-2:])
    pixel_mask, latent_mask = controls.edit_mask(
        backbone, config.mask, user_mask, size, latent_hw,
        noisy=lambda ks: [(trajectory[k], timesteps[k]) for k in ks], n_run=len(timesteps),
        source=source_cond, target=target_cond)
    denoiser, control, blend = backbone, contextlib.nullcontext(), None
    if latent_mask is not None:
        blend = LatentBlend.fixed(latent_mask, trajectory)
    if config.p2p is not None:
        denoiser, control, blend = controls.prompt_to_prompt(backbone, config.p2p, sources, prompts, trajectory,
                                                     timesteps, source_cond, latent_mask, blend)
    with control:
        latents = sample(denoiser, x_start, timesteps, backbone.schedule, cond=cond, uncond=uncond,
                         guidance_scale=scale, noise_maps=noise_maps, cond_hook=hook, blend=blend,
                         progress=_phase(progress, "edit"))
    result = _decoded_result(backbone, latents, clock, prompts=prompts, hook=hook, config=config.to_dict(),
                             inversion=inversion, source_latents=inversion.x0.cpu(), source_prompts=sources)
    return _timed_caption(controls.composited(result, pixels, pixel_mask, config.mask), caption_s)


def _timed_caption(result: Result, seconds: Optional[float]) -> Result:
    """``result`` with the captioning's seconds in its timings (``caption_s``) when the source was captioned."""
    if seconds is not None:
        result.timings["caption_s"] = seconds
    return result


def _prompts(backbone: Backbone, pixels: torch.Tensor, prompt, source_prompt, captioner):
    """``(target prompts, source prompts, seconds captioning took or None)``, one of each per image; a source
    ``"auto"`` is the image's caption."""
    b = pixels.shape[0]
    prompts = [prompt] * b if isinstance(prompt, str) else list(prompt)
    if len(prompts) != b:
        raise ValueError(f"{b} images but {len(prompts)} prompts")
    sources = [source_prompt] * b if isinstance(source_prompt, str) else list(source_prompt)
    if "auto" not in sources:
        return prompts, sources, None
    sources, seconds = caption_sources(backbone, pixels, sources, captioner)
    return prompts, sources, seconds


def caption_sources(backbone: Backbone, pixels: torch.Tensor, sources: list[str], captioner=None):
    """``(sources with each "auto" replaced by its image's caption, seconds the captions took)``.

    ``captioner``: a :class:`~date_edit.captioning.Captioner`, a captioner spec (``"blip"``, ``"toy"``, ...) or None
    (the model's default captioner).

    Raises:
        CaptionerError: the captioner cannot be loaded (one line: how to get it; a source prompt avoids it).
    """
    import time

    from .captioning import cached_captioner, default_captioner

    started = time.perf_counter()
    if captioner is None or isinstance(captioner, str):
        captioner = cached_captioner(captioner or default_captioner(backbone.name, backbone.family),
                                     device=backbone.device)
    wanted = [i for i, s in enumerate(sources) if s == "auto"]
    captions = captioner(pixels[wanted].float().clamp(0, 1))
    out = list(sources)
    for i, text in zip(wanted, captions):
        out[i] = " ".join(str(text).split())
    return out, time.perf_counter() - started


def _flowedit(backbone: Backbone, pixels: torch.Tensor, prompts: list[str], *, source_prompt, config: EditConfig,
              scorer, progress, seeds: Optional[Sequence[int]], user_mask: Optional[torch.Tensor] = None) -> Result:
    """FlowEdit (see :mod:`date_edit.flowedit`) from step ``skip``, DATE on the target branch, its velocity
    difference confined to the mask when there is one."""
    from .flowedit import flow_edit, packed_noise

    b = len(prompts)
    sources = [source_prompt] * b if isinstance(source_prompt, str) else list(source_prompt)
    clock = _Clock(backbone.device)
    size = tuple(pixels.shape[-2:])
    x_src = backbone.encode_image(pixels)
    clock.lap("inversion_s")  # the encoding: FlowEdit inverts nothing
    timesteps = backbone.timesteps(config.steps, size)[config.resolved_skip():]
    src_cond, src_uncond, src_scale = backbone.guidance(*_source_conditions(backbone, sources, size),
                                                        config.cfg_source)
    target_cond = backbone.encode_condition(prompts, size=size)
    tar_cond, tar_uncond, tar_scale = backbone.guidance(target_cond, backbone.unconditional(b, size=size),
                                                        config.cfg_target)
    hook = date_hook(backbone, config.date, scorer, prompts, tar_uncond, tar_scale, timesteps)
    seed_list = [config.seed + i for i in range(b)] if seeds is None else [int(s) for s in seeds]

    def noisy(ks: list[int]) -> list:
        gen = [torch.Generator().manual_seed(s + 104729) for s in seed_list]  # not the edit's own noise stream
        return [(backbone.schedule.noisy(x_src, torch.stack([torch.randn(x_src.shape[1:], generator=g)
                                                             for g in gen]).to(x_src.device), timesteps[k]),
                 timesteps[k]) for k in ks]

    source_only = None  # the automatic mask's reference: the source prompt, or without one the unconditional
    if config.mask is not None and config.mask.source == "auto":
        source_only = backbone.encode_condition(sources, size=size) if all(sources) else \
            backbone.unconditional(b, size=size)
    pixel_mask, latent_mask = controls.edit_mask(backbone, config.mask, user_mask, size, tuple(x_src.shape[-2:]),
                                         noisy=noisy, n_run=len(timesteps), source=source_only, target=target_cond)
    latents = flow_edit(backbone, x_src, timesteps, backbone.schedule, src_cond=src_cond, src_uncond=src_uncond,
                        src_scale=src_scale, tar_cond=tar_cond, tar_uncond=tar_uncond, tar_scale=tar_scale,
                        generators=[torch.Generator().manual_seed(s) for s in seed_list], cond_hook=hook,
                        latent_mask=latent_mask, progress=_phase(progress, "edit"), n_min=config.n_min,
                        n_avg=config.n_avg, noise=packed_noise(backbone, x_src, seed_list) if
                        config.reference_compat else None)
    result = _decoded_result(backbone, latents, clock, prompts=prompts, hook=hook,
                             config=config.to_dict() | {"method": "flowedit"}, source_latents=x_src.cpu(),
                             source_prompts=sources)
    return controls.composited(result, pixels, pixel_mask, config.mask)


def reconstruct(
    backbone: Backbone,
    pixels: torch.Tensor,
    *,
    source_prompt: str = "",
    config: EditConfig = EditConfig(),
    progress: Optional[Callable[[str, int, int], None]] = None,
) -> Result:
    """Invert, then resample with the source prompt and its CFG and no DATE: the exactness check (DDPM inversion
    on any model: its defaults are DDPM editing's)."""
    config = resolve_edit_config(replace(config, method="ddpm"), backbone)
    b = pixels.shape[0]
    sources = [source_prompt] * b
    clock = _Clock(backbone.device)
    inversion = invert_image(backbone, pixels, source_prompt=source_prompt, steps=config.steps,
                             cfg_source=config.cfg_source, seed=config.seed, progress=_phase(progress, "invert"),
                             reference_compat=config.reference_compat)
    clock.lap("inversion_s")  # synchronised: CUDA work of the inversion is counted here, not in sampling
    x_start, timesteps, noise_maps = inversion.start(config.resolved_skip())
    cond, uncond, scale = backbone.guidance(*_source_conditions(backbone, sources, tuple(pixels.shape[-2:])),
                                            config.cfg_source)
    latents = sample(backbone, x_start, timesteps, backbone.schedule, cond=cond, uncond=uncond,
                     guidance_scale=scale, noise_maps=noise_maps,
                     progress=_phase(progress, "reconstruct"))
    cfg = config.to_dict() | {"cfg_target": config.cfg_source, "date": None}
    return _decoded_result(backbone, latents, clock, prompts=sources, hook=None, config=cfg, inversion=inversion,
                           source_latents=inversion.x0.cpu())


def generate(
    backbone: Backbone,
    prompt: str | Sequence[str],
    *,
    config: GenerateConfig = GenerateConfig(),
    scorer=None,
    num_images: int = 1,
    progress: Optional[Callable[[str, int, int], None]] = None,
    seeds: Optional[Sequence[int]] = None,
    keep_directions: bool = False,
) -> Result:
    """Text-to-image with DDIM (eta 0) from seeded noise, DATE updating the embedding (the paper's setting).

    ``seeds``: one initial-noise seed per image (overrides ``config.seed``), so an image does not depend on the
    batch it was generated in; by default all images' noise comes from one generator seeded with ``config.seed``.
    ``keep_directions``: record DATE's per-update moves in ``result.trace.directions`` (analyses).
    """
    device = backbone.device
    prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
    b = len(prompts)
    height = config.height or backbone.native_size
    width = config.width or backbone.native_size
    m = backbone.size_multiple
    if height % m or width % m:
        raise ConfigError("height", f"and width must be multiples of {m} for this model, got {width}x{height}")
    check_dimensions(height, width)
    f = backbone.vae_scale_factor
    channels = backbone.latent_channels
    clock = _Clock(device)
    shape = (channels, height // f, width // f)
    if seeds is None:
        generator = torch.Generator().manual_seed(config.seed)
        x_t = torch.randn((b, *shape), generator=generator, dtype=torch.float32).to(device)
    else:
        if len(seeds) != b:
            raise ConfigError("seeds", f"got {len(seeds)} for {b} images; give one seed per image")
        for s in seeds:
            check_seed(s)
        x_t = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32)
                           for s in seeds]).to(device)
    timesteps = backbone.timesteps(config.steps, (height, width))
    cond, uncond, scale = backbone.guidance(backbone.encode_condition(prompts, size=(height, width)),
                                            backbone.unconditional(b, size=(height, width)), config.guidance_scale)
    hook = date_hook(backbone, config.date, scorer, prompts, uncond, scale, timesteps,
                     keep_directions=keep_directions)
    denoiser, loop_uncond, loop_w = backbone, uncond, scale
    if config.universal_guidance > 0:
        from .guidance import UniversalGuidance

        if scorer is None:
            raise ConfigError("scorer", "is missing: Universal Guidance needs one")
        if backbone.schedule.prediction_type == "flow":
            raise ConfigError("universal_guidance", "is implemented for DDPM-schedule models (SD, SDXL) only")
        steps = set(parse_update_steps(config.universal_guidance_steps, len(timesteps)))
        denoiser = UniversalGuidance(backbone, uncond=uncond, guidance_scale=scale,
                                     decode=backbone.decode, score=scorer, prompts=prompts,
                                     schedule=backbone.schedule, strength=config.universal_guidance, steps=steps)
        loop_uncond, loop_w = None, 1.0
    latents = sample(denoiser, x_t, timesteps, backbone.schedule, cond=cond, uncond=loop_uncond,
                     guidance_scale=loop_w, cond_hook=hook, progress=_phase(progress, "generate"))
    return _decoded_result(backbone, latents, clock, prompts=prompts, hook=hook,
                           config=config.to_dict() | {"height": height, "width": width})
