"""The names the library accepts, in one light module (no torch), so that the library, the CLI and the batch
job's option types read them from one place.

The enums of :mod:`date_edit.date` and :mod:`date_edit.imaging` take exactly these values (a test ties them).
"""

from __future__ import annotations

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the paper's SD 1.5, on the hub
DTYPE_NAMES = ("fp32", "fp16", "bf16")  # model precision (latents, embeddings and DATE updates stay fp32)
CHECKPOINTING_MODES = ("auto", "none", "vae", "unet", "all")  # activation recomputation in DATE's backward pass
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune")  # torch.compile modes (auto: by device)
UPDATE_MODES = ("accumulate", "restart")  # date.UpdateMode
RESIZE_MODES = ("fit", "crop", "stretch")  # imaging.ResizeMode
ANE_CATEGORIES = ("animals", "animals_objects", "objects")  # the Attend-and-Excite prompt set
# the benchmark ablations of DATE, each a DateConfig change (see date_edit.date.ablation_changes)
ABLATIONS = ("none", "random-direction", "noisy-objective", "unnormalized", "clamped-decode", "pil-preprocess")
# the built-in backbones that need no download: random weights for tests (SD-shaped and SDXL-shaped), and the
# shipped toy world
RANDOM_MODELS = ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux")
OFFLINE_MODELS = ("toy", *RANDOM_MODELS)
MODEL_FAMILIES = ("sd", "sdxl", "sd3", "flux")  # what --model can load: SD 1.x/2.x, SDXL, SD3 and FLUX.1 pipelines
EDIT_METHODS = ("auto", "ddpm", "flowedit")  # pipeline.EditConfig.method
DATE_TARGETS = ("tokens", "pooled", "all")  # the condition tensors DATE may move (conditioning.TARGETS)
DATE_NORMS = ("joint", "per-tensor")  # date.TargetNorm


MASK_KEYWORDS = ("auto", "none")  # --mask values (and manifest cells) that name no file


def mask_file(value) -> str | None:
    """The file a ``--mask`` value or manifest cell names, or None for ``auto``, ``none`` and an empty value."""
    text = "" if value is None else str(value).strip()
    return None if text.lower() in ("", *MASK_KEYWORDS) else text


def version() -> str:
    """The installed package's version (from its metadata: pyproject.toml is the one place it is written)."""
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        return _version("date-edit")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
