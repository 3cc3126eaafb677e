"""Stable Diffusion 1.x/2.x backbones: load (hub id, local folder, single file, tiny, toy), encode, denoise, decode.

The only core module that touches diffusers/transformers, and only inside functions.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from .choices import CHECKPOINTING_MODES, COMPILE_MODES, DEFAULT_MODEL, DTYPE_NAMES  # noqa: F401
from .components import SD_SCHEDULER_CONFIG, save_components, sd15_components, tiny_components  # noqa: F401
from .errors import BackboneError, ConfigError  # noqa: F401  (BackboneError re-exported)
from .hub import hub_reachable, seeded
from .limits import check_device
from .schedule import NoiseSchedule, v_to_eps

TOY_DIR = Path(__file__).parent / "assets" / "toy"
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.float16, torch.bfloat16)))


@dataclass
class Backbone:
    """A loaded SD-style model: the frozen parts plus what the math needs.

    Attributes:
        name: what was asked for (``"tiny"``, ``"toy"``, a hub id, a folder, a file).
        unet / vae / text_encoder / tokenizer: the diffusers/transformers components, frozen, eval mode.
        schedule: the noise schedule (from the scheduler config).
        dtype: compute dtype of the models; latents, embeddings and the step math stay float32.
        device: where the models live.
        native_size: the longer image side the model was trained at (512 for SD 1.x).
        random_weights: True for ``tiny``: its images are noise.
    """

    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    schedule: NoiseSchedule
    dtype: torch.dtype
    device: torch.device
    native_size: int
    random_weights: bool = False
    scheduler_config: dict = field(default_factory=dict)
    grad_decoder: Optional[torch.nn.Module] = None  # opt-in approximate decoder for DATE's gradient pass only
    compiled_unet: Optional[torch.nn.Module] = None  # torch.compile'd UNet for the no-grad passes (opt-in)
    compile_mode: Optional[str] = None
    compile_s: float = 0.0  # one-off seconds spent in first calls of the compiled UNet (compilation), so far
    _compiled_shapes: set = field(default_factory=set)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: VAE factor times the UNet's total downsampling."""
        downs = len(self.unet.config.down_block_types) - 1
        return self.vae_scale_factor * 2**downs

    @property
    def min_side(self) -> int:
        """The smallest image side this backbone runs at: ``size_multiple``, or twice it when the UNet's deepest
        group norms hold one channel per group (they then need more than one latent cell: 32 px for ``tiny``)."""
        cfg = self.unet.config
        channels = list(cfg.block_out_channels)
        per_group = min(channels[-2:]) // max(1, int(getattr(cfg, "norm_num_groups", None) or 32))
        return self.size_multiple * (1 if per_group > 1 else 2)

    @property
    def scaling_factor(self) -> float:
        """The VAE latent scaling factor, read from its config (0.18215 for SD 1.x)."""
        return float(self.vae.config.scaling_factor)

    def denoise(self, x_t: torch.Tensor, t: int, embeds: torch.Tensor) -> torch.Tensor:
        """Noise prediction eps (float32) for ``(B, 4, h, w)`` latents at timestep ``t``; v-models converted.

        With :meth:`compile` on, passes without autograd (plain steps, the inversion, DATE's unconditional
        branch) run the compiled UNet; DATE's gradient pass runs the eager one.
        """
        timestep = torch.full((x_t.shape[0],), int(t), device=self.device, dtype=torch.long)
        x_in, e_in = x_t.to(self.device, self.dtype), embeds.to(self.device, self.dtype)
        if self.compiled_unet is not None and not torch.is_grad_enabled():
            out = self._compiled_denoise(x_in, timestep, e_in)
        else:
            out = self.unet(x_in, timestep, encoder_hidden_states=e_in).sample.float()
        if self.schedule.prediction_type == "v_prediction":
            return v_to_eps(x_t.float(), out, self.schedule.abar(int(t)))
        return out

    __call__ = denoise

    def compile(self, mode: Optional[str] = "auto") -> None:
        """``torch.compile`` the UNet for the passes that need no gradients; ``None`` or ``"none"`` turns it off.

        ``auto`` is ``reduce-overhead`` on CUDA (CUDA graphs: the batch-1 loop is launch-bound) and ``default``
        (Inductor kernels) on the CPU. Each new input shape compiles once; the seconds those first calls take are
        added to :attr:`compile_s`, so a caller can report the one-off cost and amortise it over a batch job.
        """
        if mode in (None, "none"):
            self.compiled_unet, self.compile_mode = None, None
            return
        if mode not in COMPILE_MODES:
            raise ConfigError("compile_mode", f"{mode!r}: use one of {', '.join(COMPILE_MODES)}")
        if mode == "auto":
            mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        self.compiled_unet = torch.compile(self.unet, mode=mode, dynamic=False)
        self.compile_mode = mode
        self._compiled_shapes = set()

    def _compiled_denoise(self, x: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), tuple(embeds.shape), x.dtype)
        first = key not in self._compiled_shapes
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are no longer read
        # A CUDA-graph replay reuses its output buffer: copy before the next call overwrites it.
        out = self.compiled_unet(x, timestep, encoder_hidden_states=embeds).sample.float().clone()
        if first:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_s += time.perf_counter() - start
            self._compiled_shapes.add(key)
        return out

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        """Token ids ``(B, 77)`` padded to the tokenizer's length, and per prompt whether it was truncated."""
        tok = self.tokenizer
        limit = tok.model_max_length
        full = tok(list(prompts), padding=False, truncation=False).input_ids
        truncated = [len(ids) > limit for ids in full]
        ids = tok(list(prompts), padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
        return ids.input_ids, truncated

    @torch.no_grad()
    def encode_prompt(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(B, 77, D)`` in float32 (the last hidden state, as SD conditions on)."""
        ids, truncated = self.tokenize(prompts)
        for prompt, cut in zip(prompts, truncated):
            if cut:
                warnings.warn(
                    f"prompt truncated to {self.tokenizer.model_max_length} tokens: {prompt[:60]!r}...",
                    PromptTruncatedWarning,
                    stacklevel=2,
                )
        return self.text_encoder(ids.to(self.device))[0].float()

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Latents ``z = E(x).mode() * scaling_factor`` of images ``(B, 3, H, W)`` in ``[0, 1]`` (float32)."""
        x = (pixels * 2.0 - 1.0).to(self.device, self.dtype)
        return self.vae.encode(x).latent_dist.mode().float() * self.scaling_factor

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` from latents, ``D(z / scaling) / 2 + 0.5``; differentiable (no ``no_grad``).

        ``clamp`` (outputs) clips to ``[0, 1]``; DATE's gradient pass decodes with ``clamp=False``, as the
        reference implementation does, so pixels outside ``[0, 1]`` keep their gradient.
        """
        x = self.vae.decode((latents / self.scaling_factor).to(self.dtype)).sample.float()
        x = x / 2.0 + 0.5
        return x.clamp(0.0, 1.0) if clamp else x

    def set_gradient_checkpointing(self, mode: str = "auto") -> None:
        """``auto`` (VAE on CUDA, none on CPU), ``none``, ``vae``, ``unet`` or ``all``: see
        :meth:`enable_gradient_checkpointing`. Plain sampling runs without gradients and is unaffected."""
        if mode not in CHECKPOINTING_MODES:
            raise ConfigError("grad_checkpointing", f"{mode!r}: use one of {', '.join(CHECKPOINTING_MODES)}")
        if mode == "auto":
            mode = "vae" if self.device.type == "cuda" else "none"
        self.enable_gradient_checkpointing(vae=mode in ("vae", "all"), unet=mode in ("unet", "all"))

    def grad_decode(self, latents: torch.Tensor, clamp: bool = False) -> torch.Tensor:
        """The decoder of DATE's gradient pass: the VAE, or the opt-in approximate one (e.g. TAESD).

        Unclamped by default (the reference implementation's ``vae.decode(x0).sample / 2 + 0.5``); ``clamp``
        is the ablation that clips to ``[0, 1]`` and so zeroes the gradient of every pixel outside it.
        An approximate decoder only steers the embedding; the output image is always decoded by the VAE.
        """
        if self.grad_decoder is None:
            return self.decode(latents, clamp=clamp)
        out = self.grad_decoder.decode(latents.to(self.dtype)).sample.float() / 2.0 + 0.5
        return out.clamp(0.0, 1.0) if clamp else out

    def modules(self) -> list[torch.nn.Module]:
        """Every model the backbone holds (UNet, VAE, text encoder, and the gradient decoder when set): what a
        change of device or dtype must move together."""
        return [m for m in (self.unet, self.vae, self.text_encoder, self.grad_decoder) if m is not None]

    def set_grad_decoder(self, spec: Optional[str]) -> None:
        """``vae``/None (exact, default), ``taesd`` (madebyollin/taesd), ``tiny`` (random, tests),
        ``random-full`` (TAESD architecture, random: cost benchmarks) or a folder with an AutoencoderTiny."""
        if spec in (None, "", "vae"):
            self.grad_decoder = None
            return
        from diffusers import AutoencoderTiny

        if spec == "tiny":
            with seeded(0):
                module = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8),
                                         decoder_block_out_channels=(8, 8, 8, 8),
                                         num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
        elif spec == "random-full":
            with seeded(0, self.device):
                module = AutoencoderTiny()
        else:
            source = "madebyollin/taesd" if spec == "taesd" else spec
            try:
                module = AutoencoderTiny.from_pretrained(source, local_files_only=True)
            except (OSError, ValueError):
                if Path(source).exists() or not hub_reachable():
                    raise BackboneError(
                        f"approximate decoder {source!r} is not available: run `hf download {source}` "
                        "where there is network, or use --grad-decoder vae"
                    ) from None
                module = AutoencoderTiny.from_pretrained(source)
        _freeze(module)
        module.to(self.device)
        if self.dtype != torch.float32:
            module.to(self.dtype)
        self.grad_decoder = module

    def enable_gradient_checkpointing(self, vae: bool = True, unet: bool = False) -> None:
        """Recompute activations in DATE's backward pass instead of storing them (less memory, more time).

        The VAE decoder's activations at full resolution dominate the update's memory; on an H100 (fp16,
        512x512, 10% updates) checkpointing it cut DATE's peak from 1.89x to 1.52x of plain sampling for
        about 5% more time (benchmarks/results/h100-run1).
        """
        for flag, module in ((vae, self.vae), (unet, self.unet)):
            # diffusers keeps the flag on submodules, so always set it both ways
            if flag:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()

    def describe(self) -> dict:
        """A JSON-ready description for result records."""
        return {
            "name": self.name,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "prediction_type": self.schedule.prediction_type,
            "native_size": self.native_size,
            "random_weights": self.random_weights,
            "compile": self.compile_mode,
            "compile_s": round(self.compile_s, 3),
        }


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's 77 tokens and was cut."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU, or a name that is no device, is a clear
    error (:class:`BackboneError`) before any weights load."""
    if isinstance(device, torch.device):
        return device
    try:
        device = check_device(device)
    except ValueError as e:
        raise BackboneError(str(e)) from None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackboneError("device cuda was asked for but no CUDA GPU is visible; use cpu or auto")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``fp32|fp16|bf16`` -> torch dtype; fp16 on CPU is refused (many CPU kernels lack it)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"{dtype!r} is unknown: use one of {', '.join(DTYPES)}")
    if dtype == "fp16" and device.type == "cpu":
        raise ConfigError("dtype", "fp16 needs a GPU; on the CPU use fp32 or bf16")
    return DTYPES[dtype]


def _freeze(*modules: torch.nn.Module) -> None:
    for m in modules:
        m.eval().requires_grad_(False)


def _from_components(
    name: str, comps: dict, dtype: torch.dtype, device: torch.device, *, random_weights: bool = False
) -> Backbone:
    unet, vae, text_encoder = comps["unet"], comps["vae"], comps["text_encoder"]
    from .tokenizer import check_tokenizer

    check_tokenizer(comps["tokenizer"])
    _freeze(unet, vae, text_encoder)
    for module in (unet, vae, text_encoder):
        module.to(device)
        if dtype != torch.float32:
            module.to(dtype)
    sched_cfg = dict(comps["scheduler"].config)
    schedule = NoiseSchedule.from_config(sched_cfg)
    native_size = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
    return Backbone(
        name=name,
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=comps["tokenizer"],
        schedule=schedule,
        dtype=dtype,
        device=device,
        native_size=native_size,
        random_weights=random_weights,
        scheduler_config=sched_cfg,
    )


def _load_folder(path: str, *, local_only: bool) -> dict:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": local_only}
    return {
        "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw),
        "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", **kw),
        "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kw),
        "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw),
        "scheduler": DDIMScheduler.from_pretrained(path, subfolder="scheduler", **kw),
    }


def _load_single_file(path: str, config: Optional[str], *, local_only: bool) -> dict:
    from diffusers import StableDiffusionPipeline

    kw = {"local_files_only": local_only, "safety_checker": None}
    if config:
        kw["config"] = config
    pipe = StableDiffusionPipeline.from_single_file(path, **kw)
    return {k: getattr(pipe, k) for k in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}


def load_backbone(
    model: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "fp32",
    device: str = "auto",
    config: Optional[str] = None,
    grad_checkpointing: str = "auto",
    grad_decoder: Optional[str] = None,
    compile: Optional[str] = None,
) -> Backbone:
    """Load a backbone: ``tiny`` (random), ``toy`` (shipped), a diffusers folder, a ``.safetensors``/``.ckpt``
    file (``config``: a diffusers folder or hub id with its configs), or a hub id (cached, or downloaded).
    ``grad_checkpointing``: see :meth:`Backbone.set_gradient_checkpointing`; ``grad_decoder``: see
    :meth:`Backbone.set_grad_decoder` (off by default); ``compile``: see :meth:`Backbone.compile` (off by default).

    Raises:
        BackboneError: one line naming the model and how to get it.
    """
    backbone = _load_backbone(model, dtype=dtype, device=device, config=config)
    backbone.set_gradient_checkpointing(grad_checkpointing)
    backbone.set_grad_decoder(grad_decoder)
    backbone.compile(compile)
    return backbone


def _load_backbone(model: str, *, dtype, device: str, config: Optional[str]) -> Backbone:
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if model == "tiny":
        return _from_components("tiny", tiny_components(), dt, dev, random_weights=True)
    if model == "toy":
        if not (TOY_DIR / "model_index.json").is_file():
            raise BackboneError(f"the toy model is not in {TOY_DIR}: rebuild it with `make toy-model`")
        return _from_components("toy", _load_folder(str(TOY_DIR), local_only=True), dt, dev)
    path = Path(model).expanduser()
    is_file = path.suffix.lower() in (".safetensors", ".ckpt")
    looks_local = is_file or path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    try:
        if is_file:
            if not path.is_file():
                raise BackboneError(f"model file {model} does not exist")
            local_only = config is None or Path(config).is_dir() or not hub_reachable()
            comps = _load_single_file(str(path), config, local_only=local_only)
        elif looks_local:
            if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
                raise BackboneError(
                    f"{model} is not a diffusers model folder (no model_index.json or unet/); "
                    "pass a folder saved with save_pretrained, a .safetensors file, or a hub id"
                )
            comps = _load_folder(str(path), local_only=True)
        else:
            try:
                comps = _load_folder(model, local_only=True)
            except (OSError, ValueError):
                if not hub_reachable():
                    raise BackboneError(
                        f"model {model!r} is not cached and the hub cannot be reached: "
                        f"run `hf download {model}` where there is network, or pass a local folder "
                        "with --model PATH"
                    ) from None
                comps = _load_folder(model, local_only=False)
    except BackboneError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (a single-file checkpoint offline needs --model-config DIR, a diffusers SD folder)" if is_file else ""
        raise BackboneError(f"could not load model {model!r}: {first[:200]}{hint}") from None
    return _from_components(model, comps, dt, dev)


def backbone_from_components(
    name: str, components: dict, *, dtype: str | torch.dtype = "fp32", device: str = "auto",
    random_weights: bool = False,
) -> Backbone:
    """Wrap already-built components (e.g. :func:`sd15_components`, or a pipeline's) as a :class:`Backbone`."""
    dev = resolve_device(device)
    return _from_components(name, components, resolve_dtype(dtype, dev), dev, random_weights=random_weights)
