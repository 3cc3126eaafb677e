"""Planning a job: the items of a folder walk or a manifest, with their output paths kept inside the output
folder."""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..choices import mask_file
from ..errors import BatchError, ConfigError, excerpt
from ..limits import MAX_MANIFEST_BYTES, read_capped

if TYPE_CHECKING:  # torch and the pipeline load only when an item needs work: an up-to-date rerun never pays
    pass
from .items import _ALIASES, DEFAULT_GLOBS, MANIFEST_COLUMNS, Item, PathLike, coerce_option

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
        raise BatchError(f"the output folder {out_dir} is the input folder itself; outputs never go among the inputs, "
                         "choose another folder")
    if _inside(src, out):
        raise BatchError(f"the output folder {out_dir} contains the input folder {input_dir}, so outputs could "
                         "land on inputs; choose a folder beside it or inside it")


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
        text = read_capped(path, MAX_MANIFEST_BYTES, "manifest").decode("utf-8-sig")
    except ConfigError as e:
        raise BatchError(str(e)) from None
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
        raise ValueError(f"output {excerpt(text)} must be a relative path inside the output folder")
    if rel.suffix.lower() != ".png":
        raise ValueError(f"output {excerpt(text)}: outputs are PNG files, end the name in .png")
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
            mask = mask_file(options.get("mask"))
            if mask:  # a mask file is relative to the manifest, as images are
                mask_path = Path(mask).expanduser()
                options["mask"] = str(mask_path if mask_path.is_absolute() else base / mask_path)
            elif not str(options.get("mask") or "").strip():  # an empty cell: the command line's --mask
                options.pop("mask", None)
            if options["prompt"] is None:
                raise ValueError("no prompt (add a prompt column, or pass --prompt for rows without one)")
            image_path = Path(image).expanduser()
            source = image_path if image_path.is_absolute() else base / image_path
            if _real(source) == out_real or _inside(_real(source), out_real):
                raise ValueError(f"image {image} is inside the output folder {out_dir}; outputs are never inputs")
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
    from ..imaging import default_output_name

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
