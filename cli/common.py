"""What the commands share between parsing and writing: configs from options, the output path check, model and
scorer loading, the JSON record and the atomic write of outputs.

Imports click and the standard library at module level; the library (torch) loads inside the functions, when a
command gets that far. Imports nothing from :mod:`.main`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Optional

import click

from . import running
from .running import EXIT_INTERRUPTED, EXIT_USAGE, CliError, say


def check_schedule_early(config) -> None:
    """Before a model is loaded: the DATE schedule against the run when ``--steps`` and ``--skip`` fix it, else
    against ``--steps`` (no run is longer), else its syntax alone; :func:`resolved_config` checks it exactly."""
    known = config.steps is not None and config.skip is not None
    check_schedule(config.date, config.run_steps() if known else config.steps)


def resolved_config(config, backbone):
    """``config`` resolved for ``backbone`` (method and the model's defaults for what was left out, FlowEdit's
    published settings included), its DATE schedule checked against the run."""
    from date_edit.defaults import resolve_edit_config

    config = resolve_edit_config(config, backbone)
    check_schedule(config.date, config.run_steps())
    return config


def check_schedule(date, run_steps: int) -> None:
    """Fail early (before loading a model) when an update step lies outside the run."""
    if date is not None:
        from date_edit.date import parse_update_steps

        parse_update_steps(date.update_steps, run_steps)


def scorer_spec(spec: str, model: str) -> str:
    """The scorer spec as resolved for ``model`` (offline backbones use their own scorers)."""
    from date_edit.scorers.registry import offline_scorer_spec

    return offline_scorer_spec(spec, model)


def output_path(out: Optional[str], default_name: str, overwrite: bool, protect: list[str], count: int = 1,
                as_json: Optional[bool] = None, photo: Optional[str] = None) -> Path:
    """Resolve ``--out`` and check, before any work, that it can be written: a .png name, none of the inputs
    ``protect`` (the request's inputs; ``photo`` is named as the input image), not there yet (unless
    ``overwrite``), in a folder that exists or can be created and takes new files; with ``as_json`` (None: the
    command's ``--json``), the same for the record's ``<output>.json``. Creates nothing."""
    if out is None:
        path = Path("outputs") / default_name
    else:
        path = Path(out).expanduser()
        if path.is_dir() or out.endswith(("/", os.sep)):
            path = path / default_name
    if path.suffix.lower() != ".png":
        raise CliError(f"--out {out}: outputs are PNG files; use a name ending in .png or a folder", EXIT_USAGE)
    targets = [path] if count == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]
    ctx = click.get_current_context(silent=True)
    if as_json is None:
        as_json = bool(ctx and ctx.params.get("as_json"))
    for target in targets + ([json_path(path)] if as_json else []):
        what = "the --json record " if target.suffix == ".json" else ""
        for src in protect:
            if Path(src).exists() and target.exists() and target.resolve() == Path(src).resolve():
                which = "the input image" if src == photo else f"an input of this run ({src})"
                raise CliError(f"--out {what}{target} is {which}; inputs are never overwritten, --overwrite or not",
                               EXIT_USAGE)
        if target.is_dir():
            raise CliError(f"--out {what}{target} is a folder; choose another --out", EXIT_USAGE)
        if os.path.lexists(target) and not overwrite:
            raise CliError(f"{what}{target} exists; pass --overwrite or choose another --out", EXIT_USAGE)
    check_can_create(path.parent, path.name)
    return path


def json_path(path: Path) -> Path:
    """Where ``--json`` saves the record of the output ``path``: ``<output>.json`` beside it."""
    return path.parent / (path.name + ".json")


_ERRNO_WORDS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "a read-only file system", errno.ENOSPC: "no space left",
                errno.EDQUOT: "over the disk quota"}


def check_can_create(folder: Path, name: str) -> None:
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
        why = _ERRNO_WORDS.get(exc.errno, exc.strerror or str(exc))
        what = "take new files" if existing == folder else f"take new folders, so {folder} cannot be created"
        raise CliError(f"--out: {existing} does not {what} ({why}); choose a folder you can write to",
                       EXIT_USAGE) from None


def bars_wanted(quiet: bool) -> bool:
    """Library progress bars (weights loading, downloads) only on a terminal and without ``--quiet``."""
    return sys.stderr.isatty() and not quiet


def score_images(scorer, images, prompts) -> dict:
    """Each scorer's mean value on the output images (components of a weighted sum separately)."""
    import torch

    if scorer is None:
        return {}
    parts = dict(getattr(scorer, "components", lambda: {})())
    parts.setdefault(scorer.name, scorer)
    with torch.no_grad():
        return {name: float(s(images, prompts).float().mean()) for name, s in parts.items()}


def prepare_image(image: str, backbone, size: Optional[int], resize: str):
    """Load ``image`` at the model's size, saying what was done to it."""
    from date_edit.imaging import load_image

    loaded = load_image(image, size=size or backbone.native_size, multiple=backbone.size_multiple, resize=resize,
                        min_side=backbone.min_side)
    for note in loaded.notes:
        say(f"note: {note}")
    w, h = loaded.processed_size
    say(f"processed size {w}x{h} (from {loaded.original_size[0]}x{loaded.original_size[1]})")
    return loaded


def precheck_image(image: str) -> None:
    """Fail on an unreadable input before any model is loaded."""
    from date_edit.imaging import load_image

    load_image(image, size=64, multiple=8, resize="stretch")


def check_finite(result, record: dict) -> None:
    """Fail in one line (exit 1), before anything is written, when the output latents or a score are not finite
    (NaN/Inf: an fp16 overflow, a DATE radius far too large), as ``batch`` fails such an item."""
    import math

    import torch

    if not bool(torch.isfinite(result.latents.float()).all()):
        raise CliError("non-finite values (NaN/Inf) in the output latents; nothing was written. Try a smaller --rho "
                       "(or --rho-relative), fewer --update-steps, or --dtype fp32")
    bad = [name for name, value in (record.get("scores") or {}).items() if not math.isfinite(value)]
    if bad:
        raise CliError(f"the score {bad[0]} of the output is not finite (NaN/Inf); nothing was written")


def write_outputs(result, path: Path, record: dict, overwrite: bool, protect: list[str], as_json: bool,
                  save_mask: bool = False, note: str = "") -> None:
    """Save the images (with ``save_mask`` the edit's mask, with ``as_json`` the record beside them): every file or
    none. Checked first (finite output), written after, and a write that fails removes the files this call wrote
    before it; a signal waits until the last is whole. ``note``: said after the written paths (the caption)."""
    from date_edit.outputs import json_safe
    from date_edit.imaging import to_pil

    check_finite(result, record)
    images = to_pil(result.images)
    record["output"] = str(path)
    outputs = [path] if len(images) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}")
                                               for i in range(len(images))]
    if len(images) > 1:
        record["outputs"] = [str(p) for p in outputs]
    record = json_safe(record)  # strict JSON: what is not finite is null, text that is not UTF-8 escaped
    metadata = {"date-edit": json.dumps(record, allow_nan=False)}
    files = [(mask_image(result), mask_path(path), None)] if save_mask and getattr(result, "mask", None) is not None \
        else []
    files += [(image, target, metadata) for image, target in zip(images, outputs)]
    if as_json:  # the record's file follows the PNG's rules: atomic, never over an input or a folder
        files.append((json.dumps(record, indent=2, allow_nan=False) + "\n", json_path(path), None))
    signals = running.SIGNALS
    with signals.held():  # a signal now waits the milliseconds until every file is whole
        write_all(files, overwrite, protect)
        if as_json:
            click.echo(json.dumps(record, allow_nan=False))
        else:
            say(f"wrote {', '.join(str(p) for p in outputs)}" + (f" ({note})" if note else ""))
    if signals.pending is not None:
        say("interrupted while writing; the outputs above are complete")
        sys.exit(EXIT_INTERRUPTED)


def record(command: str, result, backbone, *, scorer: Optional[str], update_mode: Optional[str], scores: dict,
           extra: dict) -> dict:
    """The JSON record of one run (what ``--json`` prints and the PNG carries): ``scorer`` is the resolved spec
    that scored it (None: none), ``update_mode`` DATE's (None without DATE)."""
    trace = result.trace
    date = result.config.get("date") or {}  # None without DATE (--no-date, reconstruct)
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
        "rho": date.get("rho"),  # the resolved radius (0.5 when neither --rho nor --rho-relative is given)
        "rho_relative": date.get("rho_relative"),
        "update_mode": update_mode,
        "scorer": scorer,
        "date_targets": list(trace.targets) if trace else [],
        "date_norm": date.get("norm"),
        "embedding_update_norms": result.embedding_update_norms,
        "embedding_update_norms_per_tensor": dict(trace.update_norms_per_tensor) if trace else {},
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


# ----------------------------------------------------------------------------------------- masks


def mask_path(path: Path) -> Path:
    """Where ``--save-mask`` writes the mask of output ``path``: ``photo.png`` -> ``photo.mask.png``."""
    return path.with_name(f"{path.stem}.mask.png")


def control_record(result) -> dict:
    """What the record says of the structure controls: which ran and the mask's coverage."""
    from date_edit.controls import ran_controls
    from date_edit.masks import coverage

    return {"controls": ran_controls(result.config), "mask_coverage": coverage(getattr(result, "mask", None))}


def mask_image(result):
    """The edit's mask (white = changed) as a PIL image, what ``--save-mask`` writes."""
    from date_edit.masks import to_image

    return to_image(result.mask)


def write_all(files: list, overwrite: bool, protect: list[str]) -> None:
    """Write ``(content, path, metadata)`` files in order (a PIL image as a PNG, text as UTF-8), each atomically;
    when one fails, the ones written before it are removed again, so a run leaves all its files or none."""
    from date_edit.imaging import save_png
    from date_edit.outputs import save_text

    written: list[Path] = []
    try:
        for content, target, metadata in files:
            if isinstance(content, str):
                save_text(content, target, overwrite=overwrite, protect=protect)
            else:
                save_png(content, target, metadata=metadata, overwrite=overwrite, protect=protect)
            written.append(Path(target))
    except BaseException:
        for done in written:
            with contextlib.suppress(OSError):
                done.unlink()
        raise
