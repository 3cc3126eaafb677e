"""``date-edit``: edit photos and generate images with edit-friendly DDPM inversion and DATE.

Thin: parse options, build configs, call one library function, write files. Heavy imports
(torch, diffusers) happen inside commands so ``date-edit --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

import click

from .options import checked, device_option, seed_option

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MODEL_HELP = (
    "Backbone: a hub id (default stable-diffusion-v1-5/stable-diffusion-v1-5), a local diffusers folder, "
    "a .safetensors/.ckpt file, 'toy' (the shipped toy world) or 'tiny' (random weights: noise, for tests)."
)


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _say(message: str) -> None:
    click.echo(f"date-edit: {message}", err=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _say(f"warning: {str(message).splitlines()[0]}")


class DefaultEditGroup(click.Group):
    """A group where ``date-edit IMAGE PROMPT`` means ``date-edit edit IMAGE PROMPT``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert ``edit`` when the first argument is not a command or an option."""
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["edit"] + list(args)
        return super().parse_args(ctx, args)


# ----------------------------------------------------------------------------------------------- options


def _common_model_options(f):
    for decorator in reversed([
        click.option("--model", "-m", default="stable-diffusion-v1-5/stable-diffusion-v1-5", show_default=True,
                     help=MODEL_HELP),
        click.option("--model-config", default=None, metavar="DIR",
                     help="For a single-file checkpoint offline: a diffusers SD folder (or hub id) with its configs."),
        click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
                     help="Model precision (latents, embeddings and DATE updates stay fp32)."),
        device_option(),
        click.option("--grad-checkpointing", type=click.Choice(["auto", "none", "vae", "unet", "all"]),
                     default="auto", show_default=True,
                     help="Recompute activations in DATE's backward pass to save GPU memory (auto: the VAE on "
                          "CUDA, nothing on CPU). Plain sampling is unaffected."),
        click.option("--grad-decoder", default="vae", show_default=True,
                     help="Decoder of DATE's gradient pass only: vae (exact) or taesd (madebyollin/taesd, an "
                          "approximate tiny autoencoder: faster, less memory; opt-in, effect not yet validated on "
                          "real weights). The output image is always decoded by the VAE."),
        click.option("--compile", "compile_unet", is_flag=True,
                     help="torch.compile the UNet for the passes without gradients (CUDA graphs on a GPU). The "
                          "first call per shape compiles (a minute or more, reported as compile_s); worth it for "
                          "many images in one process (batch)."),
        click.option("--compile-mode", type=click.Choice(["auto", "default", "reduce-overhead", "max-autotune"]),
                     default="auto", show_default=True,
                     help="With --compile: auto is reduce-overhead (CUDA graphs) on CUDA, default on the CPU."),
        seed_option("Random seed, 0 to 2**64-1 (edit: 0, generate: 6, the official one).", default=None),
        click.option("--out", "-o", type=click.Path(), default=None,
                     help="Output PNG path, or a folder for an automatic name (default ./outputs/)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output file (never the input)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON record on stdout (also saved as <output>.json)."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    ]):
        f = decorator(f)
    return f


def _date_options(f):
    for decorator in reversed([
        click.option("--no-date", is_flag=True, help="Fixed text embedding: plain sampling, no DATE updates."),
        click.option("--rho", type=float, default=None,
                     help="DATE radius: each update moves the embedding by rho (Frobenius norm)  [default: 0.5]."),
        click.option("--rho-relative", type=float, default=None,
                     help="DATE radius relative to the prompt's own embedding: each update moves sample b by "
                          "R * ||c_org[b]||_F, a scale that carries across text encoders (exclusive with --rho)."),
        click.option("--update-steps", default="every:10", show_default=True,
                     help="Sampler steps that update: '0,10,20', a range '20-40', 'every:10', a fraction '10%', "
                          "or 'none'. Indices count the steps actually run (after --skip for edits)."),
        click.option("--update-mode", type=click.Choice(["accumulate", "restart"]), default="accumulate",
                     show_default=True,
                     help="accumulate: start each update from the last one; restart: from the original embedding."),
        click.option("--grad-iters", type=int, default=1, show_default=True,
                     help="Gradient iterations per update step."),
        click.option("--scorer", "-s", default="clip", show_default=True,
                     help="DATE objective and reported score: clip (ViT-L/14), clip:tiny, clip:toy, clip:<id>, "
                          "other registered scorers (`date-edit scorers`), or a weighted sum 'clip=1,imagereward=0.5'."
                          " With --model tiny/toy, 'clip' means clip:tiny/clip:toy."),
        click.option("--ablation", type=click.Choice(["none", "random-direction", "noisy-objective", "unnormalized",
                                                      "clamped-decode", "pil-preprocess"]),
                     default="none", show_default=True,
                     help="Benchmark ablations: a random direction of the same norm; the score of the noisy next "
                          "latent instead of x0_hat; the raw gradient c + rho*g; decode(x0_hat) clamped to [0, 1] "
                          "in the gradient pass (the reference does not clamp); the scorer's PIL-faithful "
                          "preprocessing in the gradient pass (the reference resizes bilinearly, unrounded)."),
    ]):
        f = decorator(f)
    return f


def _image_options(f):
    for decorator in reversed([
        click.option("--size", type=int, default=None, callback=checked("check_size"),
                     help="Longer side of the processed image in pixels (default: the model's native size, "
                          "512 for SD 1.x; rounded to what the UNet accepts): at least 64, and size x size within "
                          "40,000,000 pixels (batch: --max-pixels)."),
        click.option("--resize", type=click.Choice(["fit", "crop", "stretch"]), default="fit", show_default=True,
                     help="fit: keep aspect; crop: centre square; stretch: square, distorted."),
    ]):
        f = decorator(f)
    return f


def _edit_options(f):
    for decorator in reversed([
        click.option("--source-prompt", default="", help="Prompt describing the input image (default empty)."),
        click.option("--steps", type=int, default=100, show_default=True, help="DDPM steps of the schedule."),
        click.option("--skip", default="36%", show_default=True,
                     help="Steps skipped before editing: a count, or a percentage of --steps (36%% of 100 = 36)."),
        click.option("--cfg-source", type=float, default=3.5, show_default=True, help="CFG scale of the inversion."),
        click.option("--cfg-target", type=float, default=15.0, show_default=True, help="CFG scale of the edit."),
    ]):
        f = decorator(f)
    return f


# ------------------------------------------------------------------------------------------------ helpers


def _date_config(opts: dict):
    from date_edit.date import DateConfig

    if opts["no_date"]:
        return None
    ablation = opts["ablation"]
    if opts.get("rho") is not None and opts.get("rho_relative") is not None:
        raise click.UsageError("--rho and --rho-relative are exclusive: give the DATE radius one way")
    return DateConfig(
        rho=opts["rho"],
        rho_relative=opts.get("rho_relative"),
        clamp_decoded=ablation == "clamped-decode",
        grad_preprocess="pil" if ablation == "pil-preprocess" else "reference",
        update_steps=opts["update_steps"],
        mode=opts["update_mode"],
        iterations=opts["grad_iters"],
        direction="random" if ablation == "random-direction" else "gradient",
        objective="xt" if ablation == "noisy-objective" else "x0",
        normalize=ablation != "unnormalized",
    )


def _scorer_spec(spec: str, model: str) -> str:
    """``clip`` with the tiny/toy backbones means their own CLIP (no hub weights needed)."""
    if model in ("tiny", "toy"):
        from date_edit.scorers import parse_scorer_spec

        terms = []
        for name, variant, weight in parse_scorer_spec(spec):
            if variant is None and name == "clip":
                variant = model
            elif variant is None and model == "tiny":
                variant = "tiny"
            terms.append(f"{name}{':' + variant if variant else ''}={weight:g}")
        return ",".join(terms)
    return spec


def _output_path(out: Optional[str], default_name: str, overwrite: bool, protect: list[str], count: int = 1) -> Path:
    """Resolve ``--out`` and check, before any work, that it can be written: a .png name, not the input, not there
    yet (unless ``overwrite``), in a folder that exists or can be created and takes new files. Creates nothing."""
    if out is None:
        path = Path("outputs") / default_name
    else:
        path = Path(out).expanduser()
        if path.is_dir() or out.endswith(("/", os.sep)):
            path = path / default_name
    if path.suffix.lower() != ".png":
        raise CliError(f"--out {out}: outputs are PNG files; use a name ending in .png or a folder", EXIT_USAGE)
    targets = [path] if count == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]
    for target in targets:
        for src in protect:
            if Path(src).exists() and target.exists() and target.resolve() == Path(src).resolve():
                raise CliError(f"--out {target} is the input image; the input is never overwritten", EXIT_USAGE)
        if target.is_dir():
            raise CliError(f"--out {target} is a folder; give a file name ending in .png", EXIT_USAGE)
        if os.path.lexists(target) and not overwrite:
            raise CliError(f"{target} exists; pass --overwrite or choose another --out", EXIT_USAGE)
    _check_can_create(path.parent, path.name)
    return path


def _check_can_create(folder: Path, name: str) -> None:
    """Fail (exit 2) unless a file can be made in ``folder``, or ``folder`` can be created: probed by creating and
    removing a hidden file (or folder) in it, or in its nearest existing parent. Leaves nothing behind."""
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CliError(f"--out: {existing} is not a folder, so {folder} cannot be created; choose another --out",
                       EXIT_USAGE)
    probe = existing / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        if existing == folder:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600))
            os.unlink(probe)
        else:
            os.mkdir(probe, 0o700)
            os.rmdir(probe)
    except OSError as exc:
        why = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "a read-only file system", errno.ENOSPC: "no space left",
               errno.EDQUOT: "over the disk quota"}.get(exc.errno, exc.strerror or str(exc))
        what = "take new files" if existing == folder else f"take new folders, so {folder} cannot be created"
        raise CliError(f"--out: {existing} does not {what} ({why}); choose a folder you can write to",
                       EXIT_USAGE) from None


class _Signals:
    """SIGINT and SIGTERM both become KeyboardInterrupt (one line, exit 130); held back while outputs are
    written, so a signal never leaves a half-written file."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: Optional[int] = None

    def install(self) -> dict:
        """Route SIGINT and SIGTERM here (main thread only); returns the handlers they had."""
        previous = {}
        self.pending = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        return previous

    @contextlib.contextmanager
    def installed(self):
        """SIGINT and SIGTERM routed here inside the block; the previous handlers back after it (so running a
        command in-process, e.g. under click's test runner, leaves the caller's handlers alone)."""
        previous = self.install()
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.holding:
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        """Inside, a signal is only noted (``pending``); the caller decides what to do after."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


_SIGNALS = _Signals()


def _progress(quiet: bool):
    """A tqdm-backed ``progress(phase, i, n)`` on stderr, or None when quiet or not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, object] = {}

    def update(phase: str, i: int, n: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=n, desc=phase, file=sys.stderr, leave=False)
        bar.update(1)
        if i >= n:
            bar.close()

    return update


def _run(fn):
    """Run a command body, turning every expected failure into one line and an exit code."""
    from date_edit.backbones import BackboneError
    from date_edit.imaging import ImageError, OutputError
    from date_edit.scorers import ScorerError

    warnings.showwarning = _show_warning
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with _SIGNALS.installed():
            return fn()
    except CliError as exc:
        _say(f"error: {exc}")
        sys.exit(exc.code)
    except (ImageError, OutputError, BackboneError, ScorerError) as exc:
        _say(f"error: {exc}")
        sys.exit(EXIT_ERROR if isinstance(exc, BackboneError) else EXIT_USAGE)
    except ValueError as exc:
        _say(f"error: {str(exc).splitlines()[0]}")
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        _say("interrupted; nothing was written")
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError:
        _say("error: out of memory; try a smaller --size, --dtype fp16 on a GPU, or fewer --update-steps")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # torch.cuda.OutOfMemoryError and friends
        if type(exc).__name__ == "OutOfMemoryError":
            _say("error: the GPU ran out of memory; try --dtype fp16, a smaller --size or fewer --update-steps")
            sys.exit(EXIT_ERROR)
        raise


def _load(opts: dict):
    from date_edit.backbones import load_backbone

    model = opts["model"]
    backbone = load_backbone(model, dtype=opts["dtype"], device=opts["device"], config=opts["model_config"],
                             grad_checkpointing=opts["grad_checkpointing"], grad_decoder=opts["grad_decoder"],
                             compile=opts["compile_mode"] if opts.get("compile_unet") else None)
    if backbone.random_weights:
        _say("note: --model tiny has random weights; its images are noise (for tests and smoke runs)")
    return backbone


def _score_images(scorer, images, prompts) -> dict:
    """Each scorer's mean value on the output images (components of a weighted sum separately)."""
    import torch

    if scorer is None:
        return {}
    parts = dict(getattr(scorer, "components", lambda: {})())
    parts.setdefault(scorer.name, scorer)
    with torch.no_grad():
        return {name: float(s(images, prompts).float().mean()) for name, s in parts.items()}


def _write_outputs(result, path: Path, record: dict, overwrite: bool, protect: list[str], as_json: bool) -> None:
    from date_edit.imaging import save_png, to_pil

    images = to_pil(result.images)
    record["output"] = str(path)
    outputs = [path] if len(images) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}")
                                               for i in range(len(images))]
    if len(images) > 1:
        record["outputs"] = [str(p) for p in outputs]
    metadata = {"date-edit": json.dumps(record, default=str)}
    with _SIGNALS.held():  # a signal now waits the milliseconds until every file is whole
        for image, target in zip(images, outputs):
            save_png(image, target, metadata=metadata, overwrite=overwrite, protect=protect)
        json_path = path.parent / (path.name + ".json")
        if as_json:
            tmp = json_path.with_name(f".{json_path.name}.{secrets.token_hex(4)}.tmp")
            try:
                tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
                os.replace(tmp, json_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            click.echo(json.dumps(record, default=str))
        else:
            _say(f"wrote {', '.join(str(p) for p in outputs)}")
    if _SIGNALS.pending is not None:
        _say("interrupted while writing; the outputs above are complete")
        sys.exit(EXIT_INTERRUPTED)


def _record(command: str, result, backbone, opts: dict, scores: dict, extra: dict) -> dict:
    trace = result.trace
    date_config = result.config.get("date") or {}  # None without DATE (--no-date, reconstruct)
    rec = {
        "command": command,
        "output": None,
        "model": backbone.name,
        "backbone": backbone.describe(),
        "prompt": result.prompts[0] if len(result.prompts) == 1 else result.prompts,
        "seed": result.config.get("seed"),
        "steps": result.config.get("steps"),
        "skip": result.config.get("skip"),
        "update_steps": result.update_steps,
        "rho": date_config.get("rho"),  # the resolved radius (0.5 when neither --rho nor --rho-relative is given)
        "rho_relative": date_config.get("rho_relative"),
        "update_mode": opts.get("update_mode") if not opts.get("no_date") else None,
        "scorer": opts.get("scorer_resolved"),
        "embedding_update_norms": result.embedding_update_norms,
        "embedding_drift": result.embedding_drift,
        "date_scores": list(trace.scores) if trace else [],
        "scores": scores,
        "timings": result.timings,
        "peak_memory_mb": result.peak_memory_mb,
        "memory_kind": "cuda_max_allocated" if backbone.device.type == "cuda" else "process_max_rss",
        "config": result.config,
    }
    rec.update(extra)
    return rec


# ----------------------------------------------------------------------------------------------- commands


@click.group(cls=DefaultEditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="date-edit")
def main() -> None:
    """Edit photos and generate images with diffusion models, steering the text embedding with DATE.

    \b
      date-edit photo.png "a cat wearing a hat"          (same as: date-edit edit ...)
      date-edit generate "a red cube on a blue sphere"
      date-edit reconstruct photo.png                     (checks the inversion is exact)

    Exit codes: 0 ok, 1 runtime error (model, memory), 2 bad input or options, 130 interrupted.
    """


def _prepare_image(image: str, backbone, size: Optional[int], resize: str):
    from date_edit.imaging import load_image

    loaded = load_image(image, size=size or backbone.native_size, multiple=backbone.size_multiple, resize=resize,
                        min_side=backbone.min_side)
    for note in loaded.notes:
        _say(f"note: {note}")
    w, h = loaded.processed_size
    _say(f"processed size {w}x{h} (from {loaded.original_size[0]}x{loaded.original_size[1]})")
    return loaded


def _precheck_image(image: str) -> None:
    """Fail on an unreadable input before any model is loaded."""
    from date_edit.imaging import load_image

    load_image(image, size=64, multiple=8, resize="stretch")


@main.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.argument("prompt")
@_edit_options
@_date_options
@_image_options
@_common_model_options
def edit(image: str, prompt: str, **opts) -> None:
    """Edit IMAGE towards PROMPT: invert it (edit-friendly DDPM), resample with DATE."""

    def body():
        from date_edit.imaging import default_output_name

        seed = 0 if opts["seed"] is None else opts["seed"]
        # --out first: it costs no import of torch, so an unwritable one is answered at once
        path = _output_path(opts["out"], default_output_name(image, prompt, seed), opts["overwrite"], [image])
        from date_edit.pipeline import EditConfig, edit as run_edit

        config = EditConfig(steps=opts["steps"], skip=opts["skip"], cfg_source=opts["cfg_source"],
                            cfg_target=opts["cfg_target"], seed=seed, date=_date_config(opts))
        _check_schedule(config.date, config.run_steps())
        _precheck_image(image)
        backbone = _load(opts)
        loaded = _prepare_image(image, backbone, opts["size"], opts["resize"])
        scorer = _build_scorer(opts, backbone, config.date is not None)
        result = run_edit(backbone, loaded.pixels, prompt, source_prompt=opts["source_prompt"], config=config,
                          scorer=scorer, progress=_progress(opts["quiet"]))
        scores = _score_images(scorer, result.images, result.prompts)
        extra = {"input": image, "source_prompt": opts["source_prompt"],
                 "processed_size": list(loaded.processed_size), "cfg_source": config.cfg_source,
                 "cfg_target": config.cfg_target}
        _write_outputs(result, path, _record("edit", result, backbone, opts, scores, extra), opts["overwrite"],
                       [image], opts["as_json"])

    _run(body)


def _check_schedule(date, run_steps: int) -> None:
    if date is not None:
        from date_edit.date import parse_update_steps

        parse_update_steps(date.update_steps, run_steps)


def _build_scorer(opts: dict, backbone, for_date: bool):
    from date_edit.scorers import build_scorer

    spec = _scorer_spec(opts["scorer"], opts["model"])
    opts["scorer_resolved"] = spec
    if for_date:
        from date_edit.scorers.aesthetic import warn_if_aesthetic_alone

        warn_if_aesthetic_alone(spec)
    return build_scorer(spec, device=backbone.device, require_differentiable=for_date)


@main.command()
@click.argument("prompt")
@click.option("--steps", type=int, default=50, show_default=True, help="DDIM steps (eta 0).")
@click.option("--cfg-target", "--guidance-scale", "cfg_target", type=float, default=7.5, show_default=True,
              help="CFG scale.")
@click.option("--height", type=int, default=None, callback=checked("check_side"),
              help="Image height (default: the model's native size; at least 64).")
@click.option("--width", type=int, default=None, callback=checked("check_side"),
              help="Image width (default: the model's native size; at least 64).")
@click.option("--num-images", "-n", type=int, default=1, show_default=True, help="Images in one batch.")
@_date_options
@_common_model_options
def generate(prompt: str, **opts) -> None:
    """Generate an image of PROMPT with DDIM, DATE steering the text embedding (the paper's setting)."""

    def body():
        from date_edit.imaging import default_output_name

        seed = 6 if opts["seed"] is None else opts["seed"]
        if opts["num_images"] < 1:
            raise CliError("--num-images must be >= 1", EXIT_USAGE)
        path = _output_path(opts["out"], default_output_name(None, prompt, seed), opts["overwrite"], [],
                            count=opts["num_images"])
        from date_edit.pipeline import GenerateConfig, generate as run_generate

        config = GenerateConfig(steps=opts["steps"], guidance_scale=opts["cfg_target"], seed=seed,
                                height=opts["height"], width=opts["width"], date=_date_config(opts))
        _check_schedule(config.date, config.steps)
        backbone = _load(opts)
        scorer = _build_scorer(opts, backbone, config.date is not None)
        result = run_generate(backbone, prompt, config=config, scorer=scorer, num_images=opts["num_images"],
                              progress=_progress(opts["quiet"]))
        scores = _score_images(scorer, result.images, result.prompts)
        extra = {"guidance_scale": config.guidance_scale}
        _write_outputs(result, path, _record("generate", result, backbone, opts, scores, extra),
                       opts["overwrite"], [], opts["as_json"])

    _run(body)


@main.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.option("--source-prompt", default="", help="Prompt describing the input image (default empty).")
@click.option("--steps", type=int, default=100, show_default=True, help="DDPM steps.")
@click.option("--skip", default="36%", show_default=True, help="Steps skipped: a count or a percentage of --steps.")
@click.option("--cfg-source", type=float, default=3.5, show_default=True, help="CFG scale (inversion and resampling).")
@_image_options
@_common_model_options
def reconstruct(image: str, **opts) -> None:
    """Invert IMAGE and resample it with the source prompt: reports how exact the inversion is."""

    def body():
        from date_edit.imaging import default_output_name

        seed = 0 if opts["seed"] is None else opts["seed"]
        path = _output_path(opts["out"], default_output_name(image, "reconstruct", seed), opts["overwrite"], [image])
        import torch

        from date_edit.pipeline import EditConfig, psnr_db, reconstruct as run_reconstruct

        config = EditConfig(steps=opts["steps"], skip=opts["skip"], cfg_source=opts["cfg_source"],
                            cfg_target=opts["cfg_source"], seed=seed, date=None)
        _precheck_image(image)
        backbone = _load(opts)
        loaded = _prepare_image(image, backbone, opts["size"], opts["resize"])
        result = run_reconstruct(backbone, loaded.pixels, source_prompt=opts["source_prompt"], config=config,
                                 progress=_progress(opts["quiet"]))
        err = float((result.latents - result.source_latents).abs().max())
        with torch.no_grad():
            vae_images = backbone.decode(result.source_latents.to(backbone.device)).cpu()
        extra = {
            "input": image,
            "source_prompt": opts["source_prompt"],
            "processed_size": list(loaded.processed_size),
            "latent_max_abs_error": err,
            "image_psnr_db": psnr_db(result.images, vae_images),
            "input_psnr_db": psnr_db(result.images, loaded.pixels),
        }
        opts.update(no_date=True, scorer_resolved=None)
        record = _record("reconstruct", result, backbone, opts, {}, extra)
        _write_outputs(result, path, record, opts["overwrite"], [image], opts["as_json"])
        if not opts["as_json"]:
            _say(f"latent max abs error {err:.3g}, PSNR vs the VAE round trip {extra['image_psnr_db']:.2f} dB, "
                 f"vs the input {extra['input_psnr_db']:.2f} dB")

    _run(body)


def _register_subcommands() -> None:
    """Commands that live in their own modules (each imports only click at module level)."""
    from .ane_cmd import ane
    from .batch_cmd import batch
    from .scorers_cmd import score, scorers

    for command in (ane, batch, scorers, score):
        main.add_command(command)


_register_subcommands()


def run() -> None:
    """Console entry point: click errors become one line and exit code 2."""
    try:
        code = main.main(standalone_mode=False)
    except SystemExit:
        raise
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `date-edit`: show the help
            click.echo(exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        _say(f"error: {exc.format_message()} (see date-edit --help)")
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        _say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
