"""Writing outputs: tensors to 8-bit images, PNGs saved safely, default output names, records as strict JSON.

Saving writes a temporary file beside the target and renames it into place, so an interrupted run never
leaves a half-written PNG; it refuses to overwrite the input image under any flag, and with ``within`` it
writes only inside the real path of that folder, never through a link.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from .errors import OutputError, printable

if TYPE_CHECKING:
    import torch

PathLike = str | os.PathLike[str]  # a path as str or pathlib.Path


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
        protect: paths (the input image first, then any other input: a mask file, weights) that must never be
            replaced, even with `overwrite`.
        within: a folder the file must stay inside. `path` must lie under it, and every folder from the real
            path of `within` down to the file is opened without following symlinks (and created as a plain
            folder where missing), at write time, so no link inside `within` can send the write elsewhere.

    Raises:
        OutputError: one line, when the target exists (without `overwrite`), is protected, is a directory,
            would leave `within`, or its folder cannot be created or written. No temporary file is left behind.
    """
    target = Path(os.fspath(path))
    if target.suffix.lower() != ".png":
        raise OutputError(f"{target}: output must be a .png file; choose another output path")
    info = _png_info(metadata)
    return _write_atomic(target, lambda f: image.save(f, format="PNG", pnginfo=info), overwrite=overwrite,
                         protect=protect, within=within)


def save_text(text: str, path: PathLike, *, overwrite: bool = False, protect: Iterable[PathLike] = (),
              within: PathLike | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`save_png`'s rules: atomically, never over a ``protect``-ed
    file (the input) or a folder, over an existing file only with ``overwrite``, inside ``within`` when given.

    Raises:
        OutputError: one line, as :func:`save_png`; no temporary file is left behind.
    """
    data = text.encode("utf-8", "backslashreplace")
    return _write_atomic(Path(os.fspath(path)), lambda f: f.write(data), overwrite=overwrite, protect=protect,
                         within=within)


def _write_atomic(target: Path, write, *, overwrite: bool, protect: Iterable[PathLike],
                  within: PathLike | None) -> Path:
    """Create a temp file beside ``target``, ``write(file)`` into it, fsync, and rename it into place."""
    dir_fd = _open_output_folder(target, within)
    try:
        _check_target(target, dir_fd, protect, overwrite)
        try:
            fd, tmp = _open_temp(dir_fd, target.name)
        except OSError as e:
            raise OutputError(f"cannot write to directory {target.parent}: {e.strerror or e}") from e
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
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
                raise OutputError(f"{target} exists (overwrite was not asked for); choose another output path") from e
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
    for i, guarded in enumerate(protect):
        try:
            g = os.stat(os.fspath(guarded))
            followed = os.stat(target.name, dir_fd=dir_fd)
        except OSError:
            continue
        if (g.st_dev, g.st_ino) in ((st.st_dev, st.st_ino), (followed.st_dev, followed.st_ino)):
            which = "the input image" if i == 0 else "an input of this run"
            raise OutputError(f"refusing to write {target}: it is {which} {os.fspath(guarded)}, and inputs are never "
                              "replaced; choose another --out")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{target} is a directory; choose a file name for the output")
    if not overwrite:
        raise OutputError(f"{target} exists (overwrite was not asked for); choose another output path")


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


def slug(text: str, max_len: int = 40) -> str:
    """Lowercase ASCII slug of `text`: runs of anything outside [a-z0-9] become one '-', at most `max_len` chars."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def default_output_name(input_path: PathLike | None, prompt: str, seed: int, suffix: str = ".png") -> str:
    """File name ``<input stem>_<prompt slug>_s<seed><suffix>`` (``gen_...`` without an input); slug <= 40 chars."""
    stem = Path(os.fspath(input_path)).stem if input_path is not None else "gen"
    return f"{stem}_{slug(prompt)}_s{seed}{suffix}"


def json_safe(obj: Any) -> Any:
    """Strict JSON: NaN and infinities become null (other readers than Python reject them), and text that is not
    valid Unicode (a file name whose bytes are not UTF-8) is escaped (``\\xe9``), so a record always encodes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(str(k)): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (int, bool)):
        return obj
    if isinstance(obj, enum.Enum):
        return json_safe(obj.value)
    return printable(str(obj))  # a Path too
