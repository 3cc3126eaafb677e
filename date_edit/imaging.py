"""Image I/O for the editor: load any photo as a (1, 3, H, W) tensor in [0, 1], save PNGs safely.

Loading applies EXIF orientation first (what the user sees in a viewer is what gets edited), then flattens
every Pillow mode to 8-bit RGB, then resizes by an explicit policy (``fit``, ``crop`` or ``stretch``). Every
conversion is recorded in ``LoadedImage.notes`` so nothing is silently changed. Errors are one line that
names the file and says what to do.

Saving writes a temporary file beside the target and renames it into place, so an interrupted run never
leaves a half-written PNG, and it refuses to overwrite the input image under any flag.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import math
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .limits import DEFAULT_MAX_PIXELS, format_bytes, max_input_bytes

if TYPE_CHECKING:  # torch loads on first use, so a batch rerun that only checks files never pays for it
    import torch

PathLike = str | os.PathLike[str]  # a path as str or pathlib.Path

MIN_SIDE = 8  # smaller images carry no usable content for an 8x-downsampling VAE

_EXIF_ORIENTATION = 0x0112
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F")
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageError(ValueError):
    """An input image cannot be used; ``str(e)`` is ONE line saying what is wrong and what to do."""


class OutputError(ValueError):
    """An output path cannot be written; ``str(e)`` is one line."""


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
        raise ValueError(f"unknown resize mode {mode!r}; choose one of: {choices}") from None


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


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) tensor in [0, 1] -> B 8-bit RGB images (values clamped, then rounded; NaN -> 0).

    Args:
        pixels: any float dtype and device; gradients are ignored.
    """
    import torch

    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"to_pil expects a (B, 3, H, W) tensor, got {shape}")
    x = torch.nan_to_num(pixels.detach().to("cpu", torch.float32), nan=0.0)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    arr = x.permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, 3)
    return [Image.fromarray(a) for a in arr]


def _png_info(metadata: Mapping[str, Any] | None) -> PngImagePlugin.PngInfo | None:
    """Validate metadata into PNG text chunks before any file is created."""
    if not metadata:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        # PNG keywords: 1-79 Latin-1 characters, no NUL (PNG spec 11.3.4.3)
        if not isinstance(key, str) or not 1 <= len(key) <= 79 or "\0" in key or not _is_latin1(key):
            raise ValueError(f"metadata key {key!r} is not a valid PNG keyword (1-79 Latin-1 characters)")
        if isinstance(value, str):
            text = value
        else:
            try:
                text = json.dumps(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"metadata[{key!r}] is not JSON-serialisable ({e}); pass a str or plain data") from e
        info.add_text(key, text)  # Pillow writes iTXt (UTF-8) when the text is not Latin-1
    return info


def _is_latin1(s: str) -> bool:
    try:
        s.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def save_png(
    image: Image.Image,
    path: PathLike,
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    protect: Iterable[PathLike] = (),
    within: PathLike | None = None,
) -> Path:
    """Write `image` as a PNG atomically (temp file in the same folder, fsync, rename) and return the path.

    Args:
        image: any Pillow image in a mode PNG can hold (RGB, RGBA, L, LA, P, I;16, 1).
        path: target file; must end in ``.png``. Missing parent folders are created.
        metadata: each key becomes a PNG text chunk; non-str values are JSON-dumped.
        overwrite: replace an existing file at `path` (a symlink there is replaced, never written through).
        protect: paths (e.g. the input image) that must never be replaced, even with `overwrite`.
        within: a folder the file must stay inside. `path` must lie under it, and every folder from the real
            path of `within` down to the file is opened without following symlinks (and created as a plain
            folder where missing), at write time, so no link inside `within` can send the write elsewhere.

    Raises:
        OutputError: one line, when the target exists (without `overwrite`), is protected, is a directory,
            would leave `within`, or its folder cannot be created or written. No temporary file is left behind.
    """
    target = Path(os.fspath(path))
    if target.suffix.lower() != ".png":
        raise OutputError(f"{target}: output must be a .png file; choose another --out")
    info = _png_info(metadata)
    dir_fd = _open_output_folder(target, within)
    try:
        _check_target(target, dir_fd, protect, overwrite)
        try:
            fd, tmp = _open_temp(dir_fd, target.name)
        except OSError as e:
            raise OutputError(f"cannot write to directory {target.parent}: {e.strerror or e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                image.save(f, format="PNG", pnginfo=info)
                f.flush()
                os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                _publish_exclusive(dir_fd, tmp, target.name)
            with contextlib.suppress(OSError):  # persist the rename itself; best effort
                os.fsync(dir_fd)
        except BaseException as e:
            _remove_quietly(dir_fd, tmp)
            if isinstance(e, FileExistsError):
                raise OutputError(f"{target} exists; pass --overwrite or choose another --out") from e
            if isinstance(e, OSError):
                raise OutputError(f"cannot write {target}: {e.strerror or e}") from e
            raise
    finally:
        os.close(dir_fd)
    return target


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_output_folder(target: Path, within: PathLike | None) -> int:
    """An fd of `target`'s folder, created where missing; under `within`, walked without following any link."""
    if within is None:
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create directory {parent}: {e.strerror or e}") from e
        try:
            return os.open(parent, _DIR_FLAGS)
        except OSError as e:
            raise OutputError(f"cannot write to directory {parent}: {e.strerror or e}") from e
    root = Path(os.fspath(within))
    rel = os.path.relpath(os.path.abspath(target.parent), os.path.abspath(root))
    parts = [] if rel == os.curdir else Path(rel).parts
    if os.path.isabs(rel) or (parts and parts[0] == os.pardir):
        raise OutputError(f"refusing to write {target}: it is not inside {root}")
    try:
        fd = os.open(os.path.realpath(root), _DIR_FLAGS)
    except OSError as e:
        raise OutputError(f"cannot write to directory {root}: {e.strerror or e}") from e
    here = root
    for part in parts:
        here = here / part
        try:
            try:
                os.mkdir(part, dir_fd=fd)
            except FileExistsError:
                pass
            child = os.open(part, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            if os.path.islink(here):
                raise OutputError(f"refusing to write {target}: {here} is a symlink, and outputs never follow "
                                  f"links out of {root}; remove the link or choose another --out") from e
            raise OutputError(f"cannot create directory {here}: {e.strerror or e}") from e
        os.close(fd)
        fd = child
    return fd


def _check_target(target: Path, dir_fd: int, protect: Iterable[PathLike], overwrite: bool) -> None:
    """Refuse a protected file, a directory, or (without `overwrite`) anything already at the target name."""
    try:
        st = os.stat(target.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from e
    for guarded in protect:
        try:
            g = os.stat(os.fspath(guarded))
            followed = os.stat(target.name, dir_fd=dir_fd)
        except OSError:
            continue
        if (g.st_dev, g.st_ino) in ((st.st_dev, st.st_ino), (followed.st_dev, followed.st_ino)):
            raise OutputError(
                f"refusing to write {target}: it is the input image {os.fspath(guarded)}; choose another --out"
            )
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{target} is a directory; choose a file name for --out")
    if not overwrite:
        raise OutputError(f"{target} exists; pass --overwrite or choose another --out")


def _remove_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _open_temp(dir_fd: int, name: str) -> tuple[int, str]:
    """Create a new hidden ``.<name>.<random>.tmp`` beside the target; mode 0o666 minus umask, like a normal file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666, dir_fd=dir_fd), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not create a unique temporary file", name)


def _publish_exclusive(dir_fd: int, tmp: str, name: str) -> None:
    """Move `tmp` to `name` only if `name` does not exist (a hard link fails atomically if it does)."""
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        # filesystems without hard links: the stat check before is the best we can do
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return
        raise FileExistsError(errno.EEXIST, "exists", name) from None
    _remove_quietly(dir_fd, tmp)


def _slug(text: str, max_len: int = 40) -> str:
    """Lowercase ASCII slug of `text`: runs of anything outside [a-z0-9] become one '-', at most `max_len` chars."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def default_output_name(input_path: PathLike | None, prompt: str, seed: int, suffix: str = ".png") -> str:
    """File name ``<input stem>_<prompt slug>_s<seed><suffix>`` (``gen_...`` without an input); slug <= 40 chars."""
    stem = Path(os.fspath(input_path)).stem if input_path is not None else "gen"
    return f"{stem}_{_slug(prompt)}_s{seed}{suffix}"
