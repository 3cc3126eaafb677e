"""Folder and manifest jobs: plan the items, skip what is up to date, edit the rest, record every item.

A job is a list of :class:`Item` (an input file, its output path, its prompt and per-item option
overrides), planned from a folder (:func:`plan_folder`) or a CSV/JSONL/JSON manifest
(:func:`plan_manifest`). :func:`run_batch` loads the model once, batches items that share a processed
size and settings, and appends one record per item to ``OUT_DIR/results.jsonl`` (flushed and fsynced).
One bad item never stops the rest: it is recorded as ``failed`` with a one-line reason.

Resume key. Every output PNG carries its own record in its ``date-edit`` text chunk, written
atomically with the pixels, so the output is the source of truth and ``results.jsonl`` only a log.
An item is up to date when its output decodes, that record says ``ok``, its ``input_sha256`` is the
input's content hash now, and either its ``options_hash`` (the output-affecting options as given:
checked without importing torch) or its ``config_hash`` (the resolved settings: ``EditConfig`` with
the resolved skip, DATE config and seed, model, dtype, size, resize, prompts, and the scorer when DATE
steers) matches. A crash between the PNG and its results line therefore loses nothing.

Safety. Outputs are written by :func:`date_edit.imaging.save_png` (temp file, fsync, rename; never
the input; only inside the real path of ``OUT_DIR``, never through a link); inputs are only read, opened
as regular files whose size is checked before a byte is read (:func:`date_edit.imaging.open_input`);
``OUT_DIR`` is pruned from the input walk, so it may sit inside ``INPUT_DIR`` and outputs are never read
back as inputs (``OUT_DIR`` equal to, or containing, ``INPUT_DIR`` is refused); a lock file keeps two
runs out of one ``OUT_DIR`` (removed when the run ends); temp files a killed run left behind are removed at
the next start; a torn last line of ``results.jsonl`` is dropped.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import fnmatch
import gc
import hashlib
import io
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .limits import DEFAULT_MAX_PIXELS, check_seed  # DEFAULT_MAX_PIXELS: inputs with more pixels fail

if TYPE_CHECKING:  # torch and the pipeline load only when an item needs work: an up-to-date rerun never pays
    from .backbones import Backbone
    from .imaging import LoadedImage
    from .pipeline import EditConfig, Result

PathLike = str | os.PathLike[str]

DEFAULT_GLOBS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp", "*.tif", "*.tiff", "*.gif")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
RESULTS_NAME = "results.jsonl"  # one record per item and run, in OUT_DIR
LOCK_NAME = ".date-edit-batch.lock"  # held (flock) while a run writes to OUT_DIR
METADATA_KEY = "date-edit"  # the PNG text chunk holding an output's record
EXIT_OK, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130

# temp files of save_png (".<name>.<8 hex>.tmp") and of the results repair, left behind by a killed run
_TEMP_RE = re.compile(r"^\..+\.(png|json|jsonl)\.[0-9a-f]{8}\.tmp$")

# every option that decides an output, with its type (a tuple: the allowed values); options_hash covers these
OPTION_TYPES: dict[str, Any] = {
    "model": str,
    "model_config": str,
    "dtype": str,
    "prompt": str,
    "source_prompt": str,
    "seed": int,
    "steps": int,
    "skip": str,
    "cfg_source": float,
    "cfg_target": float,
    "no_date": bool,
    "rho": float,
    "rho_relative": float,
    "update_steps": str,
    "update_mode": ("accumulate", "restart"),
    "grad_iters": int,
    "scorer": str,
    "ablation": str,
    "size": int,
    "resize": ("fit", "crop", "stretch"),
}
# moot without DATE
DATE_OPTIONS = ("rho", "rho_relative", "update_steps", "update_mode", "grad_iters", "scorer", "ablation")
# manifest columns (CSV header / JSON keys); the rest of OPTION_TYPES (model, dtype, scorer, ...) is per job
MANIFEST_COLUMNS = ("image", "output", "prompt", "source_prompt", "seed", "steps", "skip", "cfg_source",
                    "cfg_target", "rho", "rho_relative", "update_steps", "update_mode", "grad_iters", "no_date",
                    "size", "resize")
_ALIASES = {"target_prompt": "prompt", "path": "image", "file": "image"}
_PER_ITEM = ("prompt", "seed", "source_prompt")  # per-item values that cannot make a configuration invalid


class BatchError(ValueError):
    """The job cannot run as asked (folder, manifest, ``--out``); one line. The CLI exits 2."""


class BatchInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised outside the critical sections, so no output is torn from its record."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Status(str, enum.Enum):
    """What happened to an item in a run."""

    OK = "ok"  # edited and written
    FAILED = "failed"  # recorded with a one-line ``error``; nothing written
    SKIPPED = "skipped"  # its output is up to date


@dataclass(frozen=True)
class Item:
    """One unit of a job: an input file, where its output goes, and its per-item options."""

    index: int  # position in the job (walk or manifest order), 0-based
    source: Path  # the input file (only ever read)
    output: Path | None  # OUT_DIR/<relative path>.png; None when planning failed
    label: str  # how messages name it: the path relative to INPUT_DIR, or "edits.csv row 3 (cat.jpg)"
    options: Mapping[str, Any] = field(default_factory=dict)  # prompt, seed, and per-item option overrides
    error: str | None = None  # a planning error (a bad manifest row): recorded as failed, nothing run
    row: int | None = None  # manifest row (1-based, header excluded); None for folder jobs


@dataclass(frozen=True)
class ItemSettings:
    """An item's resolved settings: everything that decides its output (``config_hash`` covers exactly this)."""

    prompt: str  # target prompt
    source_prompt: str  # what the input shows ("" = the unconditional branch alone)
    config: EditConfig  # steps, skip, CFG scales, seed, DATE
    model: str  # as given to --model
    model_config: str | None  # configs of a single-file checkpoint
    dtype: str  # fp32, fp16, bf16
    size: int | None  # longer side of the processed image; None = the model's native size
    resize: str  # fit, crop, stretch
    scorer: str | None  # resolved scorer spec: DATE's objective and the reported score
    options: Mapping[str, Any] = field(default_factory=dict)  # the merged options the settings came from

    def resolved(self) -> dict:
        """The JSON-ready settings the config hash is taken of."""
        return {
            "model": self.model,
            "model_config": self.model_config,
            "dtype": self.dtype,
            "prompt": self.prompt,
            "source_prompt": self.source_prompt,
            "size": self.size,
            "resize": self.resize,
            "config": self.config.to_dict(),
            "scorer": self.scorer if self.config.date is not None else None,  # it steers only through DATE
            # options the fields above do not resolve (e.g. one added to the CLI later) count as given
            "other": {k: v for k, v in sorted(self.options.items()) if k not in OPTION_TYPES},
        }

    def config_hash(self) -> str:
        """sha256 of :meth:`resolved`: equal hashes mean equal outputs for equal inputs."""
        return _digest(self.resolved())

    def group_key(self) -> str:
        """Items with equal keys (and processed sizes) can share a batch: all but prompts and seed agree."""
        d = self.resolved()
        d.pop("prompt")
        d["source_prompt"] = bool(d["source_prompt"])  # empty sources run without CFG, so they batch apart
        d["config"] = {**d["config"], "seed": None}
        return _digest(d)


@dataclass
class Summary:
    """Counts and time of one run; ``exit_code`` is the CLI's status."""

    total: int  # items in the job
    results: Path  # the results file
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: int | None = None  # the signal that stopped the run, if one did
    cleaned: int = 0  # leftover temp files removed at the start
    repaired: int = 0  # unparsable lines dropped from results.jsonl at the start

    @property
    def not_done(self) -> int:
        """Items with no record from this run (an interrupted run)."""
        return self.total - self.ok - self.skipped - self.failed

    @property
    def images_per_minute(self) -> float:
        """Edited images per minute of wall time."""
        return self.ok * 60.0 / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """130 interrupted, 3 when any item failed, else 0."""
        if self.interrupted is not None:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK

    def line(self) -> str:
        """The one-line summary printed at the end."""
        text = (f"batch: {self.ok} done, {self.skipped} skipped, {self.failed} failed in {self.seconds:.1f} s "
                f"({self.images_per_minute:.1f} images/min)")
        if self.interrupted is not None:
            text += f"; interrupted with {self.not_done} not done: run the same command again to finish"
        return f"{text}; results in {self.results}"


# ------------------------------------------------------------------------------------------------ hashing


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def sha256_file(path: PathLike, *, max_bytes: int | None = None) -> str:
    """Content hash of a regular file (read in 1 MiB chunks), opened by :func:`date_edit.imaging.open_input`:
    a device, pipe or socket, or a file over ``max_bytes`` (None: no limit), is an ``ImageError`` before any read."""
    from .imaging import open_input

    h = hashlib.sha256()
    with open_input(path, max_bytes=max_bytes) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def coerce_option(name: str, value: Any) -> Any:
    """``value`` as the type of option ``name`` (ints, finite floats, booleans, choices); ValueError if it is not."""
    kind = OPTION_TYPES.get(name, str)
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(kind, tuple):
        if text.lower() not in kind:
            raise ValueError(f"{name} {value!r}: choose one of {', '.join(kind)}")
        return text.lower()
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name} {value!r}: expected true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name} {value!r}: expected an integer")
        try:
            number = int(value) if isinstance(value, (int, float)) else int(text)
        except ValueError:
            raise ValueError(f"{name} {value!r}: expected an integer") from None
        return check_seed(number, name=name) if name == "seed" else number
    if kind is float:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"{name} {value!r}: expected a finite number")
        return number
    return value if isinstance(value, str) else text


def options_hash(options: Mapping[str, Any]) -> str:
    """sha256 of the output-affecting options as given: known ones type-normalised, DATE's dropped with no_date.

    Every key counts, known or not, so an option added to the CLI later can only cause a redo, never a wrong skip.
    """
    d = {k: coerce_option(k, v) for k, v in options.items()}
    d.update({k: coerce_option(k, options.get(k)) for k in OPTION_TYPES})
    if d["no_date"]:
        d.update(dict.fromkeys(DATE_OPTIONS))
    d["source_prompt"] = d["source_prompt"] or ""
    return _digest(d)


# ----------------------------------------------------------------------------------------------- planning


def _real(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _inside(child: str, parent: str) -> bool:
    return child != parent and child.startswith(parent.rstrip(os.sep) + os.sep)


def stays_inside(path: PathLike, out_dir: PathLike) -> bool:
    """True when ``path``, with every existing link on the way followed, lands strictly inside ``out_dir``."""
    return _inside(_real(Path(path)), _real(Path(out_dir)))


def check_out_dir(out_dir: PathLike, input_dir: PathLike) -> None:
    """Refuse an ``out_dir`` that is ``input_dir`` or contains it (outputs could land on inputs); inside is fine."""
    out, src = _real(Path(out_dir)), _real(Path(input_dir))
    if out == src:
        raise BatchError(f"--out {out_dir} is the input folder itself; outputs never go among the inputs, "
                         "choose another folder")
    if _inside(src, out):
        raise BatchError(f"--out {out_dir} contains the input folder {input_dir}, so outputs could land on "
                         "inputs; choose a folder beside it or inside it")


def _matches(rel: str, globs: Sequence[str]) -> bool:
    name, rel = rel.rsplit("/", 1)[-1].lower(), rel.lower()
    return any(fnmatch.fnmatchcase(name, g.lower()) or fnmatch.fnmatchcase(rel, g.lower()) for g in globs)


def walk_inputs(input_dir: PathLike, globs: Sequence[str] = DEFAULT_GLOBS, *, exclude: Sequence[PathLike] = ()
                ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files (and folders) under ``input_dir`` matching ``globs``, sorted; hidden and ``exclude`` subtrees pruned.

    Returns the matches and ``(folder, reason)`` for folders that could not be listed. Folder symlinks are
    not followed (no loops); a folder whose name matches (``x.jpg/``) is returned too, to be reported.
    """
    root = Path(input_dir)
    excluded_ids, excluded_real = set(), []
    for ex in exclude:
        with contextlib.suppress(OSError):
            st = os.stat(ex)
            excluded_ids.add((st.st_dev, st.st_ino))
        excluded_real.append(_real(Path(ex)))

    def is_excluded(path: Path) -> bool:
        real = _real(path)
        if any(real == ex or _inside(real, ex) for ex in excluded_real):
            return True
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) in excluded_ids

    found: list[Path] = []
    unreadable: list[tuple[Path, str]] = []

    def on_error(exc: OSError) -> None:
        unreadable.append((Path(exc.filename or root), exc.strerror or str(exc)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            full = here / d
            if d.startswith(".") or is_excluded(full):
                continue
            kept.append(d)
            if _matches(full.relative_to(root).as_posix(), globs):
                found.append(full)
        dirnames[:] = kept
        for f in sorted(filenames):
            full = here / f
            if not f.startswith(".") and _matches(full.relative_to(root).as_posix(), globs):
                found.append(full)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found, unreadable


def _dedupe(outputs: list[Path], rename: Callable[[int], Path]) -> list[Path]:
    """Give every colliding output (case-insensitively: some filesystems fold case) a distinct name."""
    def groups(paths: list[Path]) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}
        for i, p in enumerate(paths):
            seen.setdefault(str(p).lower(), []).append(i)
        return {k: v for k, v in seen.items() if len(v) > 1}

    result = list(outputs)
    for members in groups(result).values():
        for i in members:
            result[i] = rename(i)
    for members in groups(result).values():
        for i in members[1:]:
            result[i] = result[i].with_name(f"{result[i].stem}_{i + 1}.png")
    return result


def plan_folder(input_dir: PathLike, out_dir: PathLike, *, prompt: str,
                globs: Sequence[str] = DEFAULT_GLOBS) -> list[Item]:
    """Items for every matching file under ``input_dir``, outputs mirroring the tree as ``OUT_DIR/<rel>.png``.

    ``out_dir`` may lie inside ``input_dir``: its subtree is pruned from the walk, so outputs are never inputs.
    When two inputs would share an output name (``a.jpg`` and ``a.png``), the non-PNG ones keep their
    extension (``a.jpg.png``).
    """
    root, out = Path(input_dir), Path(out_dir)
    if not root.exists():
        raise BatchError(f"no such folder: {input_dir}")
    if not root.is_dir():
        raise BatchError(f"{input_dir} is not a folder; pass a folder of images, or --manifest FILE")
    check_out_dir(out, root)
    sources, unreadable = walk_inputs(root, globs or DEFAULT_GLOBS, exclude=[out])
    rels = [s.relative_to(root) for s in sources]
    outputs = _dedupe([out / r.with_suffix(".png") for r in rels],
                      lambda i: out / (rels[i].with_suffix(".png") if rels[i].suffix.lower() == ".png"
                                       else rels[i].with_name(rels[i].name + ".png")))
    items = [Item(i, s, o, r.as_posix(), {"prompt": prompt})
             for i, (s, r, o) in enumerate(zip(sources, rels, outputs))]
    for folder, reason in unreadable:
        items.append(Item(len(items), folder, None, str(folder), {"prompt": prompt},
                          error=f"cannot list folder {folder}: {reason}"))
    return items


def _normalise_key(key: str) -> str:
    k = str(key).strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(k, k)


def _read_manifest(path: Path) -> list[tuple[int, dict | str]]:
    """Rows of a manifest as ``(row number, {column: raw value})``, or ``(row, error)`` for an unreadable row."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise BatchError(f"cannot read manifest {path}: {getattr(e, 'strerror', None) or e}") from None
    rows: list[tuple[int, dict | str]] = []
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [_normalise_key(h) for h in (reader.fieldnames or [])]
        if "image" not in header:
            raise BatchError(f"manifest {path} has no 'image' column; its header must name: image, prompt, ...")
        unknown = [h for h in header if h and h not in MANIFEST_COLUMNS]
        if unknown:
            raise BatchError(f"manifest {path}: unknown column {unknown[0]!r}; columns are "
                             f"{', '.join(MANIFEST_COLUMNS)}")
        for n, raw in enumerate(reader, start=1):
            row = {_normalise_key(k): v for k, v in raw.items() if k is not None}
            if None in raw:
                rows.append((n, f"row {n} has more cells than the header"))
                continue
            if not any(str(v or "").strip() for v in row.values()) or str(row.get("image") or "").startswith("#"):
                continue
            rows.append((n, {k: v for k, v in row.items() if v is not None and str(v).strip() != ""}))
        return rows
    if suffix in (".jsonl", ".ndjson"):
        entries = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    entries.append((n, json.loads(line)))
                except ValueError as e:
                    entries.append((n, f"line {n} is not JSON ({e})"))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise BatchError(f"manifest {path} is not JSON ({e})") from None
        if not isinstance(data, list):
            raise BatchError(f"manifest {path} must hold a JSON list of objects")
        entries = list(enumerate(data, start=1))
    else:
        raise BatchError(f"manifest {path}: use a .csv, .jsonl or .json file")
    for n, entry in entries:
        if isinstance(entry, str):
            rows.append((n, entry))
        elif not isinstance(entry, dict):
            rows.append((n, f"row {n} is not a JSON object"))
        else:
            row = {_normalise_key(k): v for k, v in entry.items()}
            unknown = [k for k in row if k not in MANIFEST_COLUMNS]
            if unknown:
                rows.append((n, f"unknown key {unknown[0]!r}; keys are {', '.join(MANIFEST_COLUMNS)}"))
            else:
                rows.append((n, {k: v for k, v in row.items() if v is not None and str(v).strip() != ""}))
    return rows


def _safe_output(text: str, out: Path) -> Path:
    rel = Path(str(text).strip())
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"output {text!r} must be a relative path inside --out")
    if rel.suffix.lower() != ".png":
        raise ValueError(f"output {text!r}: outputs are PNG files, end the name in .png")
    return out / rel


def plan_manifest(manifest: PathLike, out_dir: PathLike, *, prompt: str | None = None, seed: int = 0) -> list[Item]:
    """Items from a manifest (``.csv`` with a header, ``.jsonl``, or a ``.json`` list) of images and options.

    Image paths are relative to the manifest's folder. Outputs are ``OUT_DIR/<image path>.png`` (the
    ``output`` column overrides); rows sharing an image get ``<stem>_<prompt>_s<seed>.png``. ``prompt``:
    the prompt of rows without one; ``seed``: the job's seed (for those names). A bad row becomes a failed item;
    a bad header is a :class:`BatchError`.
    """
    path = Path(manifest)
    if not path.is_file():
        raise BatchError(f"no such manifest file: {manifest}")
    out, base = Path(out_dir), path.parent
    out_real = _real(out)
    items: list[Item] = []
    defaults: list[Path | None] = []
    explicit: dict[int, Path] = {}
    for n, (row, raw) in enumerate(_read_manifest(path)):
        label = f"{path.name} row {row}"
        if isinstance(raw, str):
            items.append(Item(n, path, None, label, error=raw, row=row))
            defaults.append(None)
            continue
        image = str(raw.get("image", "")).strip()
        if image:
            label = f"{label} ({image})"
        try:
            if not image:
                raise ValueError("no image")
            options = {k: coerce_option(k, v) for k, v in raw.items() if k not in ("image", "output")}
            options.setdefault("prompt", prompt)
            if options["prompt"] is None:
                raise ValueError("no prompt (add a prompt column, or pass --prompt for rows without one)")
            image_path = Path(image).expanduser()
            source = image_path if image_path.is_absolute() else base / image_path
            if _real(source) == out_real or _inside(_real(source), out_real):
                raise ValueError(f"image {image} is inside --out {out_dir}; outputs are never inputs")
            if "output" in raw:
                explicit[n] = _safe_output(raw["output"], out)
            real_base = _real(base)
            rel = Path(os.path.relpath(_real(source), real_base)) if _inside(_real(source), real_base) else Path(
                source.name)
            default = out / rel.with_suffix(".png")
        except ValueError as e:
            items.append(Item(n, Path(image) if image else path, None, label, error=str(e), row=row))
            defaults.append(None)
            continue
        items.append(Item(n, source, None, label, options, row=row))
        defaults.append(default)

    taken: dict[str, int] = {}
    for n, p in explicit.items():
        if str(p).lower() in taken:
            raise BatchError(f"manifest {path}: rows {items[taken[str(p).lower()]].row} and {items[n].row} both "
                             f"name output {p}")
        taken[str(p).lower()] = n
    from .imaging import default_output_name

    planned = [i for i, d in enumerate(defaults) if d is not None and i not in explicit]
    counts: dict[str, int] = {}
    for i in planned:
        counts[str(defaults[i]).lower()] = counts.get(str(defaults[i]).lower(), 0) + 1
    seen = set(taken)
    for i in planned:
        name, opts = defaults[i], items[i].options
        if counts[str(name).lower()] > 1 or str(name).lower() in seen:  # one image, several rows: name by prompt
            name = name.with_name(default_output_name(name, opts["prompt"], opts.get("seed", seed)))
        while str(name).lower() in seen:
            name = name.with_name(f"{name.stem}_row{items[i].row}.png")
        seen.add(str(name).lower())
        items[i] = replace(items[i], output=name)
    for i, p in explicit.items():
        items[i] = replace(items[i], output=p)
    return items


# ------------------------------------------------------------------------------------------ results file


def _json_safe(obj: Any) -> Any:
    """Strict JSON: NaN and infinities become null (other readers than Python reject them)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return str(obj)


def dumps_record(record: Mapping[str, Any]) -> str:
    """One record as one line of strict JSON."""
    return json.dumps(_json_safe(dict(record)), ensure_ascii=False, allow_nan=False)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def repair_results(path: PathLike) -> int:
    """Drop unparsable lines (a torn last line of a killed run) from a results file, atomically; returns how many."""
    p = Path(path)
    try:
        if p.is_symlink():
            raise BatchError(f"{p} is a symlink; results are written only inside --out: remove the link")
        data = p.read_bytes()
    except FileNotFoundError:
        return 0
    if not data:
        return 0
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines = lines[:-1]
    good, dropped = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if ok:
            good.append(line)
        else:
            dropped += 1
    if dropped == 0 and complete and len(good) == len(lines):
        return 0
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in good))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(p.parent)
    return dropped


def read_results(path: PathLike) -> list[dict]:
    """The records of a results file, skipping any line that does not parse."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                records.append(obj)
    return records


class ResultsLog:
    """``results.jsonl``, append-only: one JSON object per line, each written whole, flushed and fsynced."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.dropped = 0  # lines the repair at open dropped
        self._fd: int | None = None

    def __enter__(self) -> ResultsLog:  # noqa: PYI034 - typing.Self needs Python 3.11
        self.dropped = repair_results(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line and make it durable before returning."""
        if self._fd is None:
            raise RuntimeError("ResultsLog is not open; use it as a context manager")
        view = memoryview((dumps_record(record) + "\n").encode("utf-8"))
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)


def clean_temp_files(out_dir: PathLike) -> int:
    """Remove the temp files (``.<name>.<8 hex>.tmp``) a killed run left under ``out_dir``; returns how many."""
    removed = 0
    for dirpath, _, filenames in os.walk(out_dir, followlinks=False):
        for name in filenames:
            if _TEMP_RE.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


def output_state(path: PathLike | None) -> tuple[str, dict | None]:
    """``("missing", None)``, ``("ours", record)`` for a decodable batch output, else ``("foreign", None)``."""
    if path is None:
        return "missing", None
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return "missing", None
    if not p.is_file():
        return "foreign", None
    from PIL import Image

    try:
        with Image.open(p) as im:
            im.load()  # decodes it all: an output that does not decode is not up to date
            text = getattr(im, "text", {}).get(METADATA_KEY)
        record = json.loads(text) if text else None
    except Exception:  # noqa: BLE001 - any decoding problem means "not a usable output of ours"
        return "foreign", None
    if not isinstance(record, dict) or "config_hash" not in record:
        return "foreign", None
    return "ours", record


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on OUT_DIR for the run (released by the kernel even on SIGKILL); removed after.

    The lock file is removed when the run ends, so a lock is only good while its file is still the one at
    the path: a run that locked a file another run has just removed tries again on the new one.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one run per folder is then up to the user
        fcntl = None
    path = out / LOCK_NAME
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
        except OSError as e:
            raise BatchError(f"cannot create the lock file {path}: {e.strerror or e} (a link there is refused; "
                             "remove it)") from None
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BatchError(f"another date-edit batch is writing to {out}; wait for it, or choose "
                             "another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file a finishing run had just removed: lock the one at the path now
    else:
        raise BatchError(f"could not lock {out}: its lock file keeps changing; is another run starting?")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding the lock, so no other run is using this file
        os.close(fd)


class _Interrupts:
    """SIGINT/SIGTERM become :class:`BatchInterrupted`, deferred while an output and its record are written."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.pending = signum
        if self.depth == 0:
            raise BatchInterrupted(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """No interruption inside; a signal that arrived meanwhile is raised right after."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self.check()

    def check(self) -> None:
        """Raise the pending interruption, if any."""
        if self.pending is not None and self.depth == 0:
            raise BatchInterrupted(self.pending)


# ------------------------------------------------------------------------------------------------ running


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (``torch.cuda.OutOfMemoryError``, or an older "out of memory" RuntimeError) or host OOM."""
    return (type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError)
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


def reason(exc: BaseException) -> str:
    """An exception as one line: its own message for expected errors, else ``Type: message``."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if type(exc).__name__ in ("ImageError", "OutputError", "BatchError"):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def as_float32(backbone: Backbone) -> Iterator[Backbone]:
    """Run the backbone's models in float32 inside the block, then back (fp16/bf16 -> fp32 -> back is exact)."""
    import torch

    dtype = backbone.dtype
    if dtype == torch.float32:
        yield backbone
        return
    modules = [backbone.unet, backbone.vae, backbone.text_encoder]
    with _quiet_diffusers():
        for m in modules:
            m.to(torch.float32)
    backbone.dtype = torch.float32
    try:
        yield backbone
    finally:
        with _quiet_diffusers():
            for m in modules:
                m.to(dtype)
        backbone.dtype = dtype


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers warns on every ``.to(dtype)`` of a model; a deliberate round trip needs no warning."""
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        yield
        return
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def basic_record(result: Result, settings: ItemSettings, loaded: LoadedImage, backbone: Backbone, scorer: Any) -> dict:
    """A minimal edit record (the CLI passes its ``edit --json`` record builder instead)."""
    return {
        "command": "edit",
        "model": settings.model,
        "prompt": settings.prompt,
        "source_prompt": settings.source_prompt,
        "seed": settings.config.seed,
        "processed_size": list(loaded.processed_size),
        "update_steps": result.update_steps,
        "embedding_drift": result.embedding_drift,
        "timings": result.timings,
        "config": result.config,
    }


@dataclass
class _Work:
    item: Item
    settings: ItemSettings
    input_hash: str | None
    options_hash: str
    overwrite: bool  # the output exists and is ours (stale), or --force
    loaded: Any = None  # LoadedImage


def _item_result(result: Result, i: int, seed: int) -> Result:
    """Item ``i`` of a batched result (the DATE trace stays the batch's: its norms are means over the batch)."""
    source = result.source_latents
    return replace(result, images=result.images[i:i + 1], latents=result.latents[i:i + 1],
                   prompts=[result.prompts[i]], config={**result.config, "seed": seed}, inversion=None,
                   source_latents=None if source is None else source[i:i + 1])


class _Runner:
    """State of one run: the lazily loaded model, open groups of items waiting to fill a batch, the counts."""

    def __init__(self, items: Sequence[Item], out: Path, *, base_options: Mapping[str, Any],
                 resolve: Callable[[Mapping[str, Any]], ItemSettings],
                 load_model: Callable[[bool], tuple[Backbone, Any]], make_record: Callable[..., dict],
                 batch_size: int | None, force: bool, max_pixels: int | None, show_progress: bool,
                 say: Callable[[str], None], on_record: Callable[[dict], None] | None,
                 edit_fn: Callable[..., Result] | None) -> None:
        self.items, self.out = list(items), out
        self.base_options, self.resolve, self.load_model = dict(base_options), resolve, load_model
        self.make_record, self.requested_batch_size, self.force = make_record, batch_size, force
        self.max_pixels, self.show_progress, self._say, self.on_record = max_pixels, show_progress, say, on_record
        self.edit_fn = edit_fn
        self.summary = Summary(total=len(self.items), results=out / RESULTS_NAME)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.backbone: Any = None
        self.scorer: Any = None
        self.batch_size = 1
        self.groups: dict[str, list[_Work]] = {}
        self.hashes: dict[str, str] = {}
        self.bar: Any = None
        self.interrupts = _Interrupts()
        self.log: ResultsLog | None = None

    # -- messages and records

    def say(self, text: str) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=sys.stderr):
                self._say(text)
        else:
            self._say(text)

    def _append(self, record: dict) -> None:
        with self.interrupts.critical():
            self.log.append(record)
        if self.on_record is not None:
            self.on_record(_json_safe(record))
        if self.bar is not None:
            s = self.summary
            self.bar.set_postfix_str(f"ok {s.ok}, skipped {s.skipped}, failed {s.failed}", refresh=False)
            self.bar.update(1)

    def _base_record(self, item: Item, status: Status, input_hash: str | None) -> dict:
        return {"status": status.value, "error": None, "input": str(item.source), "label": item.label,
                "row": item.row, "output": str(item.output) if item.output else None, "input_sha256": input_hash,
                "run_id": self.run_id}

    def fail(self, item: Item, why: str, input_hash: str | None = None, ohash: str | None = None) -> None:
        rec = self._base_record(item, Status.FAILED, input_hash)
        rec.update(error=why, prompt=item.options.get("prompt"),
                   seed=item.options.get("seed", self.base_options.get("seed")), options_hash=ohash)
        self.summary.failed += 1
        self._append(rec)
        self.say(f"failed: {item.label}: {why}")

    def skip(self, item: Item, previous: dict, input_hash: str | None) -> None:
        rec = dict(previous)
        rec.update(self._base_record(item, Status.SKIPPED, input_hash))
        rec["reason"] = "up to date"
        self.summary.skipped += 1
        self._append(rec)

    # -- the item pipeline

    def input_hash(self, item: Item) -> str:
        """The input's sha256, read only once it is known to be a regular file within the size limit (ImageError
        otherwise, naming the file: a device such as /dev/zero, or a huge file, fails at once)."""
        from .limits import max_input_bytes

        key = str(item.source)
        if key not in self.hashes:
            self.hashes[key] = sha256_file(item.source, max_bytes=max_input_bytes(self.max_pixels))
        return self.hashes[key]

    def prepare(self, item: Item) -> _Work | None:
        """Record planning errors, unreadable inputs and up-to-date outputs; return the work otherwise."""
        if item.error:
            self.fail(item, item.error)
            return None
        options = {**self.base_options, **item.options}
        ohash = options_hash(options)
        from .imaging import ImageError

        try:
            ihash = self.input_hash(item)
        except ImageError as e:
            self.fail(item, reason(e), None, ohash)
            return None
        except OSError as e:
            self.fail(item, f"cannot read {item.source}: {e.strerror or e}", None, ohash)
            return None
        if item.output is not None and not stays_inside(item.output, self.out):
            self.fail(item, f"{item.output} leads outside --out {self.out} through a symlink; outputs are only "
                            "written inside --out: remove the link or choose another output name", ihash, ohash)
            return None
        state, previous = output_state(item.output)
        fresh = (not self.force and state == "ours" and previous.get("status") == "ok"
                 and previous.get("input_sha256") == ihash)
        if fresh and previous.get("options_hash") == ohash:
            self.skip(item, previous, ihash)
            return None
        if state == "foreign" and not self.force:
            self.fail(item, f"{item.output} exists and was not written by date-edit batch; move it away or pass "
                            "--force", ihash, ohash)
            return None
        if self.backbone is None:
            # until the model is loaded, check the file first: a run of bad or up-to-date items loads nothing
            from .imaging import ImageError, load_image

            try:
                load_image(item.source, size=64, multiple=8, resize="stretch", max_pixels=self.max_pixels)
            except ImageError as e:
                self.fail(item, reason(e), ihash, ohash)
                return None
        try:
            settings = self.resolve(options)
        except ValueError as e:
            if not any(k not in _PER_ITEM for k in item.options):
                raise BatchError(reason(e) if not isinstance(e, BatchError) else str(e)) from None
            self.fail(item, reason(e), ihash, ohash)  # the row's own overrides are wrong: that row fails
            return None
        if fresh and previous.get("config_hash") == settings.config_hash():
            self.skip(item, previous, ihash)
            return None
        return _Work(item, settings, ihash, ohash, overwrite=self.force or state == "ours")

    def ensure_model(self, settings: ItemSettings) -> None:
        if self.backbone is None:
            self.backbone, self.scorer = self.load_model(settings.config.date is not None)
            default = 4 if self.backbone.device.type == "cuda" else 1
            self.batch_size = max(1, self.requested_batch_size or default)

    def add(self, work: _Work) -> None:
        from .imaging import ImageError, load_image

        bb = self.backbone
        try:
            work.loaded = load_image(work.item.source, size=work.settings.size or bb.native_size,
                                     multiple=bb.size_multiple, resize=work.settings.resize,
                                     max_pixels=self.max_pixels, min_side=getattr(bb, "min_side", None))
        except ImageError as e:
            self.fail(work.item, reason(e), work.input_hash, work.options_hash)
            return
        w, h = work.loaded.processed_size
        key = f"{work.settings.group_key()}|{w}x{h}"
        group = self.groups.setdefault(key, [])
        group.append(work)
        if len(group) >= self.batch_size:
            self.run_chunk(self.groups.pop(key))

    def flush(self) -> None:
        while self.groups:
            key = next(iter(self.groups))
            group = self.groups.pop(key)
            for start in range(0, len(group), self.batch_size):
                self.interrupts.check()
                self.run_chunk(group[start:start + self.batch_size])

    def edit(self, chunk: list[_Work]) -> Result:
        import torch

        edit_fn = self.edit_fn
        if edit_fn is None:
            from .pipeline import edit as edit_fn
        pixels = torch.cat([w.loaded.pixels for w in chunk])  # (B, 3, H, W)
        return edit_fn(self.backbone, pixels, [w.settings.prompt for w in chunk],
                       source_prompt=[w.settings.source_prompt for w in chunk], config=chunk[0].settings.config,
                       scorer=self.scorer, seeds=[w.settings.config.seed for w in chunk])

    def free_memory(self) -> None:
        gc.collect()
        if self.backbone is not None and getattr(self.backbone.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()

    def run_chunk(self, chunk: list[_Work], retry: bool = False) -> None:
        """Edit a chunk; on an error retry its items one by one (OOM: once, at batch 1), then record failures."""
        try:
            result = self.edit(chunk)
        except BatchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001 - one item's failure must not stop the batch
            result, oom, why = None, is_out_of_memory(e), reason(e)
        if result is None:  # retried outside the except block, so the failed attempt's frames and tensors are freed
            if oom:
                self.free_memory()
                self.batch_size = max(1, min(self.batch_size, len(chunk) // 2))
            if len(chunk) > 1 or (oom and not retry):
                for work in chunk:  # the one retry, at a smaller batch
                    self.interrupts.check()
                    self.run_chunk([work], retry=True)
                return
            if oom:
                why = (f"out of memory even alone, after a retry ({why}); try a smaller --size, --dtype fp16 or "
                       "fewer --update-steps")
            self.fail(chunk[0].item, why, chunk[0].input_hash, chunk[0].options_hash)
            return
        self.finish_chunk(chunk, result)

    def finish_chunk(self, chunk: list[_Work], result: Result) -> None:
        import torch

        finite = torch.isfinite(result.latents.float()).flatten(1).all(dim=1)  # (B,)
        bad = [w for w, ok in zip(chunk, finite.tolist()) if not ok]
        for i, work in enumerate(chunk):
            if finite[i]:
                self.write(work, _item_result(result, i, work.settings.config.seed), len(chunk))
        if not bad:
            return
        if self.backbone.dtype == torch.float32:
            for work in bad:
                self.fail(work.item, "non-finite values (NaN/Inf) in the output latents, in float32",
                          work.input_hash, work.options_hash)
            return
        with as_float32(self.backbone):  # fp16 overflow is the usual cause: the same items again in float32
            for work in bad:
                self.interrupts.check()
                try:
                    retried = self.edit([work])
                except BatchInterrupted:
                    raise
                except Exception as e:  # noqa: BLE001
                    self.fail(work.item, f"non-finite output latents, and the float32 retry failed: {reason(e)}",
                              work.input_hash, work.options_hash)
                    continue
                if not bool(torch.isfinite(retried.latents.float()).all()):
                    self.fail(work.item, "non-finite values (NaN/Inf) in the output latents, also in float32",
                              work.input_hash, work.options_hash)
                    continue
                self.write(work, _item_result(retried, 0, work.settings.config.seed), 1, retried_fp32=True)

    def write(self, work: _Work, result: Result, batch_size: int, retried_fp32: bool = False) -> None:
        from .imaging import save_png, to_pil

        item = work.item
        try:
            edit_record = self.make_record(result, work.settings, work.loaded, self.backbone, self.scorer)
            image = to_pil(result.images)[0]
        except BatchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001
            self.fail(item, reason(e), work.input_hash, work.options_hash)
            return
        record = {"status": Status.OK.value, "error": None}
        record.update(edit_record)
        record.update(self._base_record(item, Status.OK, work.input_hash))
        record.update(options_hash=work.options_hash, config_hash=work.settings.config_hash(),
                      notes=list(work.loaded.notes), batch_size=batch_size, retried_fp32=retried_fp32)
        failure = None
        with self.interrupts.critical():  # the PNG and its results line: both, or (after a crash) the PNG alone
            try:
                save_png(image, item.output, metadata={METADATA_KEY: dumps_record(record)}, overwrite=work.overwrite,
                         protect=[item.source], within=self.out)
            except (OSError, ValueError) as e:  # OutputError is a ValueError
                failure = reason(e)
            else:
                self.summary.ok += 1
                self._append(record)
        if failure:
            self.fail(item, failure, work.input_hash, work.options_hash)

    def run(self) -> Summary:
        start = time.perf_counter()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BatchError(f"cannot create --out {self.out}: {e.strerror or e}") from None
        if not os.access(self.out, os.W_OK):
            raise BatchError(f"--out {self.out} is not writable; choose another folder")
        with _locked(self.out), self.interrupts, ResultsLog(self.out / RESULTS_NAME) as log:
            self.log = log
            self.summary.cleaned = clean_temp_files(self.out)
            self.summary.repaired = log.dropped
            if self.summary.cleaned:
                self.say(f"removed {self.summary.cleaned} temporary file(s) an interrupted run left in {self.out}")
            if log.dropped:
                self.say(f"dropped {log.dropped} unreadable line(s) of {log.path} (an interrupted write)")
            if self.show_progress:
                from tqdm import tqdm

                self.bar = tqdm(total=len(self.items), unit="img", desc="batch", file=sys.stderr, dynamic_ncols=True)
            try:
                for item in self.items:
                    self.interrupts.check()
                    try:
                        work = self.prepare(item)
                    except (BatchError, BatchInterrupted):
                        raise
                    except Exception as e:  # noqa: BLE001
                        self.fail(item, reason(e))
                        continue
                    if work is None:
                        continue
                    self.ensure_model(work.settings)  # a model that cannot load stops the run (not one item's fault)
                    self.add(work)
                self.flush()
            except BatchInterrupted as e:
                self.summary.interrupted = e.signum
            finally:
                if self.bar is not None:
                    self.bar.close()
                    self.bar = None
        self.summary.seconds = time.perf_counter() - start
        return self.summary


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_batch(
    items: Sequence[Item],
    out_dir: PathLike,
    *,
    base_options: Mapping[str, Any],
    resolve: Callable[[Mapping[str, Any]], ItemSettings],
    load_model: Callable[[bool], tuple[Backbone, Any]],
    make_record: Callable[..., dict] = basic_record,
    batch_size: int | None = None,
    force: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    show_progress: bool = False,
    say: Callable[[str], None] = _stderr,
    on_record: Callable[[dict], None] | None = None,
    edit_fn: Callable[..., Result] | None = None,
) -> Summary:
    """Run a job: skip up-to-date items, edit the rest in batches, append one record per item to results.jsonl.

    Args:
        items: from :func:`plan_folder` or :func:`plan_manifest`.
        out_dir: OUT_DIR (created); holds the outputs, ``results.jsonl`` and the lock file.
        base_options: the job's options (CLI names, see ``OPTION_TYPES``); each item's ``options`` override them.
        resolve: merged options -> :class:`ItemSettings`; a ValueError fails the item (or, when the item
            overrides nothing, is the job's own usage error: :class:`BatchError`).
        load_model: ``(needs_date) -> (backbone, scorer)``, called once, when the first item needs work.
        make_record: ``(result, settings, loaded, backbone, scorer) -> dict``, the item's edit record.
        batch_size: items per forward pass (same processed size and settings); None: 4 on CUDA, 1 on CPU.
        force: redo up-to-date items and replace outputs not written by date-edit batch (never an input).
        max_pixels: inputs with more pixels fail (checked before decoding).
        edit_fn: the edit function (default :func:`date_edit.pipeline.edit`; tests inject failures here).

    Returns the :class:`Summary`. SIGINT/SIGTERM abandon the current batch (its items get no record) and set
    ``summary.interrupted``; outputs and results stay consistent and a rerun completes the job.
    """
    return _Runner(items, Path(out_dir), base_options=base_options, resolve=resolve, load_model=load_model,
                   make_record=make_record, batch_size=batch_size, force=force, max_pixels=max_pixels,
                   show_progress=show_progress, say=say, on_record=on_record, edit_fn=edit_fn).run()
