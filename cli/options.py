"""The options the commands share, checked where click parses them.

Imports click, :mod:`date_edit.choices` and :mod:`date_edit.limits` only (both light: no torch), so every command
module can import it, and ``--help`` loads no torch.
"""

from __future__ import annotations

import click

from date_edit.choices import (
    ABLATIONS, CHECKPOINTING_MODES, COMPILE_MODES, DATE_NORMS, DATE_TARGETS, DEFAULT_MODEL, DTYPE_NAMES, EDIT_METHODS,
    RESIZE_MODES, UPDATE_MODES,
)
from date_edit.limits import MAX_GRAD_ITERS, MAX_SCORER_TERMS


def checked(check_name: str):
    """A click callback running ``date_edit.limits.<check_name>`` on the value: a ValueError becomes one usage line
    naming the flag (exit 2), at parse time, before anything loads. None (the option left out) passes."""

    def callback(ctx: click.Context, param: click.Parameter, value):
        if value is None:
            return None
        from date_edit import limits

        flag = max(param.opts, key=len)
        kwargs = {}
        if check_name in ("check_size", "check_side"):
            kwargs["max_pixels"] = ctx.params.get("max_pixels", limits.DEFAULT_MAX_PIXELS)
        try:
            return getattr(limits, check_name)(value, name=flag, **kwargs)
        except ValueError as exc:
            hint = " (or raise --max-pixels)" if "max_pixels" in ctx.params and "too large" in str(exc) else ""
            raise click.UsageError(f"{exc}{hint}", ctx) from None

    return callback


def device_option(**kwargs):
    """``--device``, checked at parse time (auto, cpu, cuda, cuda:N, mps)."""
    return click.option("--device", default="auto", show_default=True, callback=checked("check_device"),
                        help="auto, cpu, cuda or cuda:N.", **kwargs)


def seed_option(text: str, **kwargs):
    """``--seed`` with help ``text``, checked at parse time (0 .. 2**64-1, what torch.Generator takes)."""
    return click.option("--seed", type=int, callback=checked("check_seed"), help=text, **kwargs)


# ------------------------------------------------------------------------------------- option groups

MODEL_HELP = (
    f"Backbone, SD 1.x/2.x or SDXL: a hub id (default {DEFAULT_MODEL}; SDXL: "
    "stabilityai/stable-diffusion-xl-base-1.0), a local diffusers folder, a .safetensors/.ckpt file, "
    "'toy' (the shipped toy world), or 'tiny' / 'tiny-sdxl' (random weights: noise, for tests)."
)


def _apply(f, options: list):
    for decorator in reversed(options):
        f = decorator(f)
    return f


def model_options(exclude: tuple[str, ...] = ()):
    """The model, precision, device, seed and output options of edit/generate/reconstruct, less those named in
    ``exclude`` (parameter names: batch defines ``out``, ``seed``, ... with its own meaning)."""
    options = {
        "model": click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP),
        "model_config": click.option(
            "--model-config", default=None, metavar="DIR",
            help="For a single-file checkpoint offline: a diffusers folder (or hub id) of the same family (SD or "
                 "SDXL) with its configs."),
        "dtype": click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True,
                              help="Model precision (latents, embeddings and DATE updates stay fp32)."),
        "device": device_option(),
        "grad_checkpointing": click.option(
            "--grad-checkpointing", type=click.Choice(CHECKPOINTING_MODES), default="auto", show_default=True,
            help="Recompute activations in DATE's backward pass to save GPU memory (auto: the VAE on CUDA, nothing "
                 "on CPU). Plain sampling is unaffected."),
        "grad_decoder": click.option(
            "--grad-decoder", default="vae", show_default=True,
            help="Decoder of DATE's gradient pass only: vae (exact) or taesd (madebyollin/taesd, taesdxl for SDXL: "
                 "an approximate tiny autoencoder, faster, less memory; not for SD3/FLUX; opt-in, effect not yet "
                 "validated on real weights). The output image is always decoded by the VAE."),
        "compile_unet": click.option(
            "--compile", "compile_unet", is_flag=True,
            help="torch.compile the UNet for the passes without gradients (CUDA graphs on a GPU). The first call "
                 "per shape compiles (a minute or more, reported as compile_s); worth it for many images in one "
                 "process (batch)."),
        "compile_mode": click.option(
            "--compile-mode", type=click.Choice(COMPILE_MODES), default="auto", show_default=True,
            help="With --compile: auto is reduce-overhead (CUDA graphs) on CUDA, default on the CPU."),
        "seed": seed_option("Random seed, 0 to 2**64-1 (edit: 0, generate: 6, the official one).", default=None),
        "out": click.option("--out", "-o", type=click.Path(), default=None,
                            help="Output PNG path, or a folder for an automatic name (default ./outputs/)."),
        "overwrite": click.option("--overwrite", is_flag=True,
                                  help="Replace an existing output file (never the input)."),
        "as_json": click.option("--json", "as_json", is_flag=True,
                                help="Print one JSON record on stdout (also saved as <output>.json)."),
        "quiet": click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    }
    unknown = set(exclude) - set(options)
    if unknown:
        raise ValueError(f"model_options: no options named {sorted(unknown)}")
    return lambda f: _apply(f, [o for name, o in options.items() if name not in exclude])


def date_options(f):
    """DATE's options: on/off, radius, schedule, update mode, iterations, objective, ablations."""
    return _apply(f, [
        click.option("--no-date", is_flag=True, help="Fixed text embedding: plain sampling, no DATE updates."),
        click.option("--rho", type=float, default=None,
                     help="DATE radius: each update moves the embedding by rho (Frobenius norm)  [default: 0.5]."),
        click.option("--rho-relative", type=float, default=None,
                     help="DATE radius relative to the prompt's own embedding: each update moves sample b by "
                          "R * ||c_org[b]||_F, a scale that carries across text encoders (exclusive with --rho)."),
        click.option("--date-targets", type=click.Choice(DATE_TARGETS), default="tokens", show_default=True,
                     help="Condition tensors DATE moves: tokens (the token embedding: SD's only one, SDXL's "
                          "prompt_embeds), pooled (SDXL's pooled vector) or all. SDXL's time ids never move."),
        click.option("--date-norm", type=click.Choice(DATE_NORMS), default="joint", show_default=True,
                     help="With several targets: joint (the whole move has radius rho) or per-tensor (each tensor "
                          "moves by rho, or by R times its own norm with --rho-relative)."),
        click.option("--update-steps", default="every:10", show_default=True,
                     help="Sampler steps that update: '0,10,20', a range '20-40', 'every:10', a fraction '10%', "
                          "or 'none'. Indices count the steps actually run (after --skip for edits)."),
        click.option("--update-mode", type=click.Choice(UPDATE_MODES), default="accumulate", show_default=True,
                     help="accumulate: start each update from the last one; restart: from the original embedding."),
        click.option("--grad-iters", type=int, default=1, show_default=True, callback=checked("check_grad_iters"),
                     help=f"Gradient iterations per update step, 1 to {MAX_GRAD_ITERS}."),
        click.option("--scorer", "-s", default="clip", show_default=True,
                     help="DATE objective and reported score: clip (ViT-L/14), clip:tiny, clip:toy, clip:<id>, "
                          "other registered scorers (`date-edit scorers`), or a weighted sum 'clip=1,imagereward=0.5' "
                          f"of at most {MAX_SCORER_TERMS} different scorers (a scorer named twice is one term, its "
                          "weights added)."
                          " With --model toy, clip and min-concept mean the toy world's CLIP; with --model tiny (and "
                          "toy, for the rest) a name means its random-weight ':tiny' variant."),
        click.option("--ablation", type=click.Choice(ABLATIONS), default="none", show_default=True,
                     help="Benchmark ablations: a random direction of the same norm; the score of the noisy next "
                          "latent instead of x0_hat; the raw gradient c + rho*g; decode(x0_hat) clamped to [0, 1] "
                          "in the gradient pass (the reference does not clamp); the scorer's PIL-faithful "
                          "preprocessing in the gradient pass (the reference resizes bilinearly, unrounded)."),
    ])


def image_options(f):
    """How an input image is brought to the model's size."""
    return _apply(f, [
        click.option("--size", type=int, default=None, callback=checked("check_size"),
                     help="Longer side of the processed image in pixels (default: the model's native size, "
                          "512 for SD 1.x; rounded to what the UNet accepts): at least 64, and size x size within "
                          "40,000,000 pixels (batch: --max-pixels)."),
        click.option("--resize", type=click.Choice(RESIZE_MODES), default="fit", show_default=True,
                     help="fit: keep aspect; crop: centre square; stretch: square, distorted."),
    ])


def _source_options() -> list:
    return [
        click.option("--source-prompt", default=None, metavar="TEXT|auto|none",
                     help="What the input image shows: text, 'auto' (caption the photo with --captioner, then edit "
                          "as with that text: Prompt-to-Prompt alignment and the automatic mask) or 'none' (the "
                          "empty source: the papers' plain setting)  [default: auto]."),
        click.option("--captioner", default=None, metavar="NAME",
                     help="Captioner of --source-prompt auto: blip (Salesforce/blip-image-captioning-large), "
                          "blip:base, blip:tiny (random weights, tests), blip:HUB_ID_OR_FOLDER, toy (the toy "
                          "world's, with its own CLIP), or a plugin's name  [default: the model's: toy for --model "
                          "toy, blip:tiny for the tiny models, blip otherwise]."),
    ]


def source_options(f):
    """What the input image shows: ``--source-prompt TEXT|auto|none`` and the ``--captioner`` of ``auto`` (``edit``,
    ``batch``, ``sweep`` and the web app alike)."""
    return _apply(f, _source_options())


def edit_options(f):
    """The edit's schedule: source prompt, steps, skip, the two CFG scales, the method and its settings. A schedule
    option left out is the model's default (:mod:`date_edit.defaults`, as in the Python API)."""
    return _apply(f, [
        *_source_options(),
        click.option("--steps", type=int, default=None,
                     help="Steps of the schedule  [default: the model's: 100 for DDPM editing; FlowEdit's published "
                          "28 on FLUX, 50 on SD3]."),
        click.option("--skip", default=None,
                     help="Steps skipped before editing: a count, or a percentage of --steps (36%% of 100 = 36)  "
                          "[default: 36%% for DDPM editing; FlowEdit's published 4 of 28 (FLUX), 17 of 50 (SD3), "
                          "the same share of another --steps]."),
        click.option("--cfg-source", type=float, default=None,
                     help="Guidance scale of the source prompt (the inversion; FlowEdit's source branch)  "
                          "[default: 3.5; FlowEdit on FLUX 1.5]."),
        click.option("--cfg-target", type=float, default=None,
                     help="Guidance scale of the edit  [default: DDPM editing 7.5 with a structure control "
                          "(Prompt-to-Prompt or a mask, the defaults), 15 without (--no-p2p --mask none: the "
                          "edit-friendly paper's); FlowEdit 5.5 on FLUX, 13.5 on SD3]."),
        click.option("--edit-method", type=click.Choice(EDIT_METHODS), default="auto", show_default=True,
                     help="ddpm: edit-friendly inversion, then resampling with the stored noise maps; flowedit: "
                          "inversion-free FlowEdit (SD3, FLUX); auto: flowedit for FLUX, ddpm otherwise. With "
                          "flowedit, --steps/--skip/--cfg-*/--n-min/--n-avg you leave out are FlowEdit's published "
                          "ones for the model (FLUX 28/4/1.5/5.5, SD3 50/17/3.5/13.5, n-min 0, n-avg 1)."),
        click.option("--n-min", type=int, default=None,
                     help="FlowEdit: run the last N steps as plain sampling of the target from the edited latent "
                          "(SDEdit-style; must leave at least one FlowEdit step)  [default: 0, the published]."),
        click.option("--n-avg", type=int, default=None, callback=checked("check_n_avg"),
                     help="FlowEdit: draw N noises per step and average their velocity differences (N times the "
                          "model calls; smoother, slower; at most 32)  [default: 1, the published]."),
        click.option("--reference-compat", is_flag=True,
                     help="Draw and use the noise as the official codes do, to compare with their results: DDPM "
                          "editing draws the per-step noises in the official order (the same seed then gives the "
                          "official noise) and zeroes the last noise map (reconstruction is then off by that "
                          "step's residual); FlowEdit on FLUX draws its noise in the packed layout. Off: date-edit's "
                          "own (exact reconstruction). Refused for FlowEdit on SD3, where it changes nothing."),
    ])


def _reweight(ctx: click.Context, param: click.Parameter, value):
    """``WORD=FACTOR`` pairs as ``((word, factor), ...)``; a malformed one is a usage error naming the flag."""
    import math

    from date_edit.errors import excerpt

    pairs = []
    for text in value or ():
        word, sep, factor = text.partition("=")
        try:
            number = float(factor)
        except ValueError:
            number = math.nan
        if not sep or not word.strip() or not math.isfinite(number) or number < 0:
            raise click.BadParameter(f"{excerpt(text)}: give WORD=FACTOR with a finite FACTOR >= 0 (e.g. red=2)",
                                     ctx, param)
        pairs.append((word.strip(), number))
    return tuple(pairs)


def control_options(f):
    """Structure controls of an edit: masks (user or automatic) and Prompt-to-Prompt attention control."""
    return _apply(f, [
        click.option("--mask", "mask", default=None, metavar="FILE|auto|none",
                     help="Where the edit may change the image: a mask file (white = may change; any size and "
                          "mode, resized with the image), 'auto' (where the source and target prompts' noise "
                          "predictions differ, DiffEdit-style; with --source-prompt none, where the target's "
                          "differs from the unconditional one) or 'none'. Outside it every pixel stays the input's "
                          "exactly.  [default: auto when there is a source prompt, given or captioned; none with "
                          "--source-prompt none]"),
        click.option("--save-mask", is_flag=True,
                     help="Also write the mask used as <output>.mask.png (its coverage is in the --json record)."),
        click.option("--mask-dilate", type=click.IntRange(0, 256), default=None,
                     help="Pixels the mask grows by  [default: 0 for a file, one latent cell (8 px) for auto]."),
        click.option("--mask-feather", type=click.IntRange(0, 256), default=2, show_default=True,
                     help="Pixels of soft edge inside the mask where the edit is pasted into the input."),
        click.option("--mask-threshold", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
                     default=0.5, show_default=True,
                     help="--mask auto: share of the difference map's maximum (brought to the image's pixels) "
                          "above which a pixel may change."),
        click.option("--mask-peak", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.9, show_default=True,
                     help="--mask auto: keep only the regions above the threshold whose own maximum reaches this "
                          "share of the map's maximum (1: only the strongest region; the threshold: every region)."),
        click.option("--p2p/--no-p2p", "p2p", default=None,
                     help="Prompt-to-Prompt: run the source branch (its exact inverted trajectory) beside the "
                          "target in each UNet call and inject its attention maps (SD 1.x/2.x, SDXL).  [default: on "
                          "where the model has cross-attention and the edit is DDPM; --p2p on SD3/FLUX is refused]"),
        click.option("--cross-replace", type=click.FloatRange(0.0, 1.0), default=None,
                     help="--p2p: fraction of the edit's steps whose cross-attention maps come from the source "
                          "(replace for a word swap, refine when words are added or removed)  [default: 0.8]. Like "
                          "every P2P option, giving it asks for Prompt-to-Prompt: refused on SD3/FLUX."),
        click.option("--self-replace", type=click.FloatRange(0.0, 1.0), default=None,
                     help="--p2p: fraction of the edit's steps whose self-attention maps are the source's  "
                          "[default: 0.8]."),
        click.option("--reweight", multiple=True, metavar="WORD=FACTOR", callback=_reweight,
                     help="--p2p: scale the attention to WORD of the target prompt by FACTOR (repeatable)."),
        click.option("--local-blend", is_flag=True,
                     help="--p2p: keep the latent outside the attention maps of the changed words on the "
                          "source's trajectory."),
    ])
