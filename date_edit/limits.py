"""What the editor accepts: processed sizes, pixel budgets, input file sizes, seeds and device names.

Imports nothing heavy (no numpy, PIL or torch), so the CLI checks its options with these functions before it
loads anything. Every check raises :class:`~date_edit.errors.ConfigError` (a ``ValueError``) with one line
naming the parameter (``name``); the CLI passes its flag as ``name``.
"""

from __future__ import annotations

import math
import os
import re
import stat

from .errors import ConfigError

MIN_SIZE = 64  # smallest longer side (pixels) a processed image may ask for: every built-in backbone runs at it
DEFAULT_MAX_PIXELS = 40_000_000  # pixel budget of an input image and of a processed image
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1 (negative seeds wrap around: refused)
BYTES_PER_PIXEL = 16  # input file size allowed per pixel of the budget (16-bit RGBA is 8, float RGB 12)
MIN_INPUT_BYTES = 64 * 2**20  # the input file size limit is never below this
UNLIMITED_PIXELS_INPUT_BYTES = 4 * 2**30  # the input file size limit when no pixel budget is set
MAX_GRAD_ITERS = 100  # gradient iterations per DATE update step (each costs about five plain steps)
MAX_N_AVG = 32  # FlowEdit noise draws averaged per step (published: 1; each costs two model calls a step)
MAX_SCORER_TERMS = 8  # distinct terms of a scorer spec (each loads a model); repeated terms are merged first
MAX_CONFIG_BYTES = 64 * 2**20  # a model's JSON files (model_index.json, */config.json, tokenizer.json) at most
MAX_MANIFEST_BYTES = 128 * 2**20  # a batch manifest at most (over a million rows of 100 bytes)
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def max_side(max_pixels: int) -> int:
    """The largest square side within a pixel budget: ``floor(sqrt(max_pixels))``."""
    return math.isqrt(max_pixels)


def check_max_pixels(max_pixels: int | None, *, name: str = "max_pixels") -> int | None:
    """``max_pixels`` if it is None or a positive integer; ConfigError otherwise."""
    if max_pixels is not None and (not _is_int(max_pixels) or max_pixels < 1):
        raise ConfigError(name, f"must be a positive integer, got {max_pixels!r}")
    return max_pixels


def check_size(size: int | None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "size") -> int | None:
    """Validate the longer side of a processed image: None (the model's native size), or an integer from
    :data:`MIN_SIZE` up to what fits the pixel budget (a ``size`` x ``size`` image, ``max_pixels`` pixels at most).

    Returns ``size``. Raises ConfigError naming ``name`` and the limit.
    """
    if size is None:
        return None
    if not _is_int(size):
        raise ConfigError(name, f"must be an integer number of pixels, got {size!r}")
    if size < MIN_SIZE:
        raise ConfigError(name, f"{size} is too small: the smallest processed size is {MIN_SIZE} px "
                         "(omit it for the model's native size)")
    check_max_pixels(max_pixels)
    if max_pixels is not None and size * size > max_pixels:
        raise ConfigError(name, f"{size} is too large: up to {size}x{size} = {size * size:,} pixels, over the "
                         f"limit of {max_pixels:,}; use at most {max_side(max_pixels)}")
    return size


def check_side(side: int | None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str = "side"
               ) -> int | None:
    """Validate one side of an image (a height or a width; None: the model's native size): an integer of at least
    :data:`MIN_SIZE` that leaves room for the other side (at least :data:`MIN_SIZE` too) within ``max_pixels``."""
    if side is None:
        return None
    if not _is_int(side):
        raise ConfigError(name, f"must be an integer number of pixels, got {side!r}")
    if side < MIN_SIZE:
        raise ConfigError(name, f"{side} is too small: the smallest is {MIN_SIZE} px (omit it for the native size)")
    check_max_pixels(max_pixels)
    if max_pixels is not None and side * MIN_SIZE > max_pixels:
        raise ConfigError(name, f"{side} is too large: even {side}x{MIN_SIZE} is over the limit of {max_pixels:,} "
                         f"pixels; use at most {max_pixels // MIN_SIZE}")
    return side


def check_dimensions(height: int | None, width: int | None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
                     ) -> None:
    """Validate an image's ``height`` and ``width`` (None: not yet known): each passes :func:`check_side`, and
    their product (or, with one unknown, the known one times :data:`MIN_SIZE`) is within ``max_pixels``."""
    check_side(height, max_pixels=max_pixels, name="height")
    check_side(width, max_pixels=max_pixels, name="width")
    if max_pixels is None or (height is None and width is None):
        return
    pixels = (height or MIN_SIZE) * (width or MIN_SIZE)
    if pixels > max_pixels:
        raise ConfigError(None, f"width {width or '?'} x height {height or '?'} is too large: at least "
                                f"{pixels:,} pixels, over the limit of {max_pixels:,}")


def check_seed(seed: int | None, *, name: str = "seed") -> int | None:
    """Validate a random seed: None, or an integer in ``0 .. MAX_SEED`` (what ``torch.Generator`` takes)."""
    if seed is None:
        return None
    if not _is_int(seed):
        raise ConfigError(name, f"must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(name, f"{seed} is out of range: seeds are integers from 0 to 2**64-1 = {MAX_SEED}")
    return seed


def _check_count(value, name: str, most: int, what: str) -> int:
    """``value`` if it is an integer from 1 to ``most``; a ConfigError naming ``name`` (and the bound) otherwise."""
    if not _is_int(value):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    if value < 1:
        raise ConfigError(name, f"must be >= 1, got {value}")
    if value > most:
        raise ConfigError(name, f"{value} is too many: at most {most} {what}")
    return value


def check_grad_iters(iterations: int, *, name: str = "iterations") -> int:
    """Validate DATE's gradient iterations per update step: an integer from 1 to :data:`MAX_GRAD_ITERS`."""
    return _check_count(iterations, name, MAX_GRAD_ITERS,
                        "gradient iterations per update step (each costs about five plain steps)")


def check_n_avg(n_avg: int | None, *, name: str = "n_avg") -> int | None:
    """Validate FlowEdit's noise draws per step: None (the model's default) or an integer from 1 to
    :data:`MAX_N_AVG` (the published value is 1; each draw costs two model calls a step: a huge count never ends)."""
    if n_avg is None:
        return None
    return _check_count(n_avg, name, MAX_N_AVG,
                        "noise draws per FlowEdit step (published: 1; each costs two model calls a step)")


def check_device(device: str, *, name: str = "device") -> str:
    """Validate a device name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether it exists is checked
    when a model is put on it)."""
    if not isinstance(device, str) or not DEVICE_RE.match(device.strip().lower()):
        raise ConfigError(name, f"{device!r} is not a device: use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
    return device.strip().lower()


def max_input_bytes(max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """The largest input file accepted: :data:`BYTES_PER_PIXEL` per pixel of the budget, at least
    :data:`MIN_INPUT_BYTES` (610 MiB for the default 40,000,000 pixels); 4 GiB without a budget."""
    if max_pixels is None:
        return UNLIMITED_PIXELS_INPUT_BYTES
    return max(MIN_INPUT_BYTES, BYTES_PER_PIXEL * check_max_pixels(max_pixels))


def read_capped(path: str | os.PathLike, max_bytes: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refused before a byte is read when it is larger than ``max_bytes``
    (and never more than ``max_bytes`` read, should it grow meanwhile). ``what`` names it in the message.

    Raises:
        ConfigError: one line: the file is over the limit, or not a regular file. OSError: it cannot be opened.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigError(None, f"{what} {os.fspath(path)} is not a regular file")
        data = f.read(max_bytes + 1) if size <= max_bytes else b""
        if size > max_bytes or len(data) > max_bytes:
            raise ConfigError(None, f"{what} {os.fspath(path)} is {format_bytes(max(size, len(data)))}, over the "
                                    f"limit of {format_bytes(max_bytes)}; it was not read")
    return data


def check_file_size(path: str | os.PathLike, max_bytes: int, what: str) -> None:
    """Refuse (ConfigError, one line) a file at ``path`` larger than ``max_bytes``, by its size alone."""
    size = os.stat(path).st_size
    if size > max_bytes:
        raise ConfigError(None, f"{what} {os.fspath(path)} is {format_bytes(size)}, over the limit of "
                                f"{format_bytes(max_bytes)}; it was not read")


def format_bytes(n: int) -> str:
    """``n`` bytes for a message: ``512 bytes``, ``3.4 MiB``, ``20.0 GiB``."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024.0
        if value < 1024.0 or unit == "TiB":
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")
