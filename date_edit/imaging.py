"""Image input for the editor: load any photo as a (1, 3, H, W) tensor in [0, 1] (saving: :mod:`.outputs`).

Loading applies EXIF orientation first (what the user sees in a viewer is what gets edited), then flattens
every Pillow mode to 8-bit RGB, then resizes by an explicit policy (``fit``, ``crop`` or ``stretch``). Every
conversion is recorded in ``LoadedImage.notes`` so nothing is silently changed. Errors are one line that
names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ConfigError, ImageError, OutputError  # noqa: F401  (re-exported)
from .limits import DEFAULT_MAX_PIXELS, format_bytes, max_input_bytes
from .outputs import default_output_name, save_png, slug, to_pil  # noqa: F401  (re-exported)

if TYPE_CHECKING:  # torch loads on first use, so a batch rerun that only checks files never pays for it
    import torch

PathLike = str | os.PathLike[str]  # a path as str or pathlib.Path

MIN_SIDE = 8  # smaller images carry no usable content for an 8x-downsampling VAE

_EXIF_ORIENTATION = 0x0112
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ResizeMode(str, enum.Enum):
    """How an image is brought to the model's size: keep aspect, centre-crop to a square, or distort."""

    FIT = "fit"  # longer side -> size, aspect kept (up to rounding to `multiple`)
    CROP = "crop"  # shorter side -> size, centre crop to size x size
    STRETCH = "stretch"  # size x size, aspect not kept


@dataclass(frozen=True)
class LoadedImage:
    """A decoded, oriented, RGB, resized image ready for the VAE, and what was done to get it."""

    pixels: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    source_path: str  # the path as given to load_image
    original_size: tuple[int, int]  # (width, height) after EXIF orientation, before resizing
    processed_size: tuple[int, int]  # (width, height) of pixels
    notes: tuple[str, ...]  # human-readable conversions applied, in order

    def __post_init__(self) -> None:
        w, h = self.processed_size
        if tuple(self.pixels.shape) != (1, 3, h, w):
            raise ValueError(f"pixels has shape {tuple(self.pixels.shape)}; expected (1, 3, {h}, {w})")


def _round_to_multiple(x: float, multiple: int) -> int:
    """Nearest positive multiple of `multiple` (halves round up, never below `multiple`)."""
    return max(multiple, math.floor(x / multiple + 0.5) * multiple)


def target_size(width: int, height: int, size: int, multiple: int, mode: ResizeMode | str) -> tuple[int, int]:
    """Output (width, height) for a `width` x `height` image under a resize policy.

    Args:
        width, height: source size in pixels (after EXIF orientation), both > 0.
        size: the LONGER side of the output, before rounding to `multiple`.
        multiple: every returned side is a positive multiple of this (8 for SD latents).
        mode: ``fit`` keeps aspect (longer side = size); ``crop`` and ``stretch`` give size x size.
    """
    mode = _resize_mode(mode)
    for name, value in (("width", width), ("height", height), ("size", size), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if mode is ResizeMode.FIT:
        scale = size / max(width, height)
        return _round_to_multiple(width * scale, multiple), _round_to_multiple(height * scale, multiple)
    side = _round_to_multiple(size, multiple)
    return side, side


def _resize_mode(mode: ResizeMode | str) -> ResizeMode:
    try:
        return ResizeMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in ResizeMode)
        raise ConfigError("resize", f"{mode!r} is unknown: choose one of {choices}") from None


def _high_bit_to_l(im: Image.Image) -> tuple[Image.Image, str]:
    """Scale a 16-bit / 32-bit integer / float greyscale image to 8-bit ``L`` by its value range, not by clipping."""
    arr = np.asarray(im).astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        # 65535 / 257 = 255 exactly, so the full 16-bit range maps onto the full 8-bit range
        out, note = arr / 257.0, "16-bit greyscale converted to 8-bit RGB"
    elif im.mode == "I" and lo >= 0 and hi <= 65535:
        # Pillow decodes some 16-bit files (older PNG, TIFF) as 32-bit "I"; the values are still 0..65535
        out, note = arr / 257.0, "32-bit integer greyscale (16-bit range) converted to 8-bit RGB"
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        out, note = arr * 255.0, "32-bit float greyscale (0..1) converted to 8-bit RGB"
    elif im.mode == "F" and lo >= 0 and hi <= 255:
        out, note = arr, "32-bit float greyscale (0..255) converted to 8-bit RGB"
    else:
        span = hi - lo
        out = (arr - lo) * (255.0 / span) if span > 0 else np.zeros_like(arr)
        note = f"{im.mode} greyscale with values {lo:g}..{hi:g} stretched to 0..255, converted to 8-bit RGB"
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8)), note


def _to_rgb(im: Image.Image, path: str) -> tuple[Image.Image, list[str]]:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white so edits see what a viewer shows."""
    notes: list[str] = []
    mode = im.mode
    if mode in _HIGH_BIT_MODES:
        im, note = _high_bit_to_l(im)
        return im.convert("RGB"), [note]
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    try:
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            label = "palette with transparency" if mode == "P" else mode
            notes.append(f"{label} composited on white")
            return Image.alpha_composite(white, rgba).convert("RGB"), notes
        if mode == "RGB":
            return im, notes
        rgb = im.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(f"{path}: cannot convert colour mode {mode} to RGB ({e}); save it as an RGB PNG first") from e
    label = {"P": "palette", "L": "greyscale", "1": "1-bit black-and-white"}.get(mode, mode)
    notes.append(f"{label} converted to RGB")
    return rgb, notes


def _resize(im: Image.Image, size: tuple[int, int], mode: ResizeMode) -> tuple[Image.Image, str | None]:
    """LANCZOS resize; crop mode resamples the centred box of the target's aspect in one pass (no double rounding)."""
    w, h = im.size
    tw, th = size
    box: tuple[float, float, float, float] | None = None
    detail = mode.value
    if mode is ResizeMode.CROP:
        # largest centred box with the target's aspect: the shorter side scales to the target, the rest is cut
        scale = max(tw / w, th / h)
        bw, bh = tw / scale, th / scale
        left, top = (w - bw) / 2, (h - bh) / 2
        box = (left, top, left + bw, top + bh)
        if (bw, bh) != (w, h):
            detail = f"crop: centre {round(bw)}x{round(bh)}"
    if (tw, th) == (w, h) and box in (None, (0.0, 0.0, float(w), float(h))):
        return im, None
    resized = im.resize((tw, th), Image.Resampling.LANCZOS, box=box)
    return resized, f"resized {w}x{h} -> {tw}x{th} ({detail})"


def open_input(path: PathLike, *, max_bytes: int | None) -> BinaryIO:
    """Open an input file read-only, as a regular file only, and check its size before reading a byte of it.

    The file is opened first and the open file is checked (so a link swapped meanwhile changes nothing), without
    blocking: a device (``/dev/zero``), a pipe or a socket is refused at once instead of being read forever.

    Args:
        path: the file; links are followed (an input may be a link to a photo).
        max_bytes: refuse a larger file (see :func:`date_edit.limits.max_input_bytes`); None: no limit.

    Raises:
        ImageError: one line naming the file: missing, a directory, not a regular file, unreadable, or too large.
    """
    source = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(source, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageError(f"no such file: {source}") from None
    except IsADirectoryError:  # where a folder cannot be opened at all
        raise ImageError(f"{source} is a directory, not an image file; pass the path of an image inside it") from None
    except OSError as e:
        raise ImageError(f"cannot read {source}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{source} is a directory, not an image file; pass the path of an image inside it")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{source} is not a regular file (a device, pipe or socket); pass an image file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageError(f"{source} is {format_bytes(st.st_size)}, over the limit of {format_bytes(max_bytes)} "
                             "for an input file; no photo is that large: downscale or re-encode it")
        with contextlib.suppress(OSError, AttributeError):  # a regular file: reads do not need O_NONBLOCK
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def load_image(
    path: PathLike,
    *,
    size: int,
    multiple: int,
    resize: ResizeMode | str = "fit",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> LoadedImage:
    """Read an image file as a (1, 3, H, W) float32 tensor in [0, 1], oriented, RGB and resized.

    Args:
        path: any file Pillow can decode. Only read; never opened for writing; opened as a regular file only,
            its size checked before reading (see :func:`open_input`).
        size: longer side of the output (see ``target_size``).
        multiple: output sides are multiples of this (8 for SD).
        resize: ``fit``, ``crop`` or ``stretch`` (see ``ResizeMode``).
        max_pixels: refuse images with more than this many pixels before decoding them, and files larger than
            :func:`date_edit.limits.max_input_bytes` of it before reading them; None for Pillow's own limit.
        min_side: refuse a processed size with a side below this (a backbone's ``min_side``); None: no check.

    Raises:
        ImageError: one line naming the file: missing, a directory, not a regular file, empty, not an image,
            truncated, too large (pixels or bytes), too small (< 8x8 px, or processed below ``min_side``), or in
            a colour mode that cannot become RGB.
    """
    mode = _resize_mode(resize)
    target_size(1, 1, size, multiple, mode)  # validate size and multiple before touching the file
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0):
        raise ValueError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")

    source = os.fspath(path)
    with open_input(source, max_bytes=max_input_bytes(max_pixels)) as f:
        return _load_open_image(f, source, size=size, multiple=multiple, mode=mode, max_pixels=max_pixels,
                                min_side=min_side)


def _load_open_image(f: BinaryIO, source: str, *, size: int, multiple: int, mode: ResizeMode,
                     max_pixels: int | None, min_side: int | None) -> LoadedImage:
    """:func:`load_image` on an open regular file."""
    if os.fstat(f.fileno()).st_size == 0:
        raise ImageError(f"{source} is empty (0 bytes); it is not an image, re-export or re-download it")

    notes: list[str] = []
    try:
        with Image.open(f) as im:  # f is open "rb": the source is never writable here
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(
                    f"{source} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                    f"downscale it first (e.g. to 4096 px on the longer side)"
                )
            if w < MIN_SIDE or h < MIN_SIDE:
                raise ImageError(
                    f"{source} is too small ({w}x{h} px); images must be at least {MIN_SIDE}x{MIN_SIDE} px"
                )
            n_frames = int(getattr(im, "n_frames", 1) or 1)
            if n_frames > 1:
                im.seek(0)
                notes.append(f"animated image ({n_frames} frames): first frame used")
            im.load()
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            # orientation before anything else: the user edits what their viewer shows them
            oriented = ImageOps.exif_transpose(im)
            if oriented is None or oriented is im:
                oriented = im.copy()
            if orientation in range(2, 9):
                notes.append(f"EXIF orientation {orientation} applied")
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{source} is too large for Pillow's decompression-bomb limit ({e}); downscale it first"
        ) from e
    except UnidentifiedImageError:
        raise ImageError(
            f"{source} cannot be decoded as an image (not a format Pillow knows); check the file is a complete image"
        ) from None
    except _DECODE_ERRORS as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(
            f"{source} cannot be decoded as an image ({reason}); check the file is a complete image"
        ) from e

    original_size = oriented.size
    rgb, colour_notes = _to_rgb(oriented, source)
    notes.extend(colour_notes)
    out_size = target_size(*original_size, size, multiple, mode)
    if min_side is not None and min(out_size) < min_side:
        raise ImageError(
            f"{source}: its processed size {out_size[0]}x{out_size[1]} has a side under {min_side} px, the least this "
            "model runs at; use a larger size, or the crop resize mode for a very long or tall image"
        )
    rgb, resize_note = _resize(rgb, out_size, mode)
    if resize_note:
        notes.append(resize_note)

    import torch

    arr = np.asarray(rgb, dtype=np.float32) / 255.0  # (H, W, 3)
    pixels = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]  # (1, 3, H, W)
    return LoadedImage(
        pixels=pixels,
        source_path=source,
        original_size=original_size,
        processed_size=rgb.size,
        notes=tuple(notes),
    )
