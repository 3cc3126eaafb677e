"""A batch job's vocabulary: items, their resolved settings, statuses, the run summary, and the hashes that
decide whether an output is up to date (the options as given, the settings as resolved)."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..choices import (
    ABLATIONS, DATE_NORMS, DATE_TARGETS, DTYPE_NAMES, EDIT_METHODS, RESIZE_MODES, UPDATE_MODES, mask_file,
)
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, check_text, excerpt  # noqa: F401
from ..limits import check_seed

if TYPE_CHECKING:  # torch and the pipeline load only when an item needs work: an up-to-date rerun never pays
    from ..pipeline import EditConfig

PathLike = str | os.PathLike[str]

DEFAULT_GLOBS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.bmp", "*.tif", "*.tiff", "*.gif")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
RESULTS_NAME = "results.jsonl"  # one record per item and run, in OUT_DIR
LOCK_NAME = ".date-edit-batch.lock"  # held (flock) while a run writes to OUT_DIR
METADATA_KEY = "date-edit"  # the PNG text chunk holding an output's record
MAX_MASK_BYTES = 64 * 2**20  # a mask file larger than this is refused before it is read

# temp files of save_png (".<name>.<8 hex>.tmp") and of the results repair, left behind by a killed run
_TEMP_RE = re.compile(r"^\..+\.(png|json|jsonl)\.[0-9a-f]{8}\.tmp$")

# every option that decides an output, with its type (a tuple: the allowed values); options_hash covers these
OPTION_TYPES: dict[str, Any] = {
    "model": str,
    "model_config": str,
    "dtype": DTYPE_NAMES,
    "prompt": str,
    "source_prompt": str,
    "seed": int,
    "steps": int,
    "skip": str,
    "cfg_source": float,
    "cfg_target": float,
    "n_min": int,
    "n_avg": int,
    "reference_compat": bool,
    "no_date": bool,
    "rho": float,
    "rho_relative": float,
    "update_steps": str,
    "update_mode": UPDATE_MODES,
    "grad_iters": int,
    "scorer": str,
    "ablation": ABLATIONS,
    "date_targets": DATE_TARGETS,
    "date_norm": DATE_NORMS,
    "edit_method": EDIT_METHODS,
    "size": int,
    "resize": RESIZE_MODES,
    "mask": str,  # a mask file (relative to the manifest in a manifest row) or "auto"; its content is hashed too
    "mask_dilate": int,
    "mask_feather": int,
    "mask_threshold": float,
    "mask_peak": float,
    "p2p": bool,
    "cross_replace": float,
    "self_replace": float,
    "reweight": str,
    "local_blend": bool,
}
# moot without DATE
DATE_OPTIONS = ("rho", "rho_relative", "update_steps", "update_mode", "grad_iters", "scorer", "ablation",
                "date_targets", "date_norm")
# manifest columns (CSV header / JSON keys); the rest of OPTION_TYPES (model, dtype, scorer, ...) is per job
MANIFEST_COLUMNS = ("image", "output", "prompt", "source_prompt", "seed", "steps", "skip", "cfg_source",
                    "cfg_target", "n_min", "n_avg", "reference_compat", "rho", "rho_relative", "update_steps",
                    "update_mode", "grad_iters", "no_date", "size", "resize", "mask", "p2p", "cross_replace",
                    "self_replace")
_ALIASES = {"target_prompt": "prompt", "path": "image", "file": "image"}
_PER_ITEM = ("prompt", "seed", "source_prompt")  # per-item values that cannot make a configuration invalid


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
    config: EditConfig  # steps, skip, CFG scales (None: the model's default, resolved by edit()), seed, DATE
    model: str  # as given to --model
    model_config: str | None  # configs of a single-file checkpoint
    dtype: str  # fp32, fp16, bf16
    size: int | None  # longer side of the processed image; None = the model's native size
    resize: str  # fit, crop, stretch
    scorer: str | None  # resolved scorer spec: DATE's objective and the reported score
    options: Mapping[str, Any] = field(default_factory=dict)  # the merged options the settings came from
    # the front end's request these settings were resolved from (the CLI's EditRequest: its record is made from it);
    # outside the hashes and comparisons, which the fields above decide
    request: Any = field(default=None, compare=False, repr=False)

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
        if self.config.p2p is None:  # Prompt-to-Prompt aligns one prompt pair per forward pass
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
    from ..imaging import open_input

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
            raise ConfigError(name, f"{excerpt(value)}: choose one of {', '.join(kind)}")
        return text.lower()
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(name, f"{excerpt(value)}: expected true or false")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(name, f"{excerpt(value)}: expected an integer")
        try:
            number = int(value) if isinstance(value, (int, float)) else int(text)
        except ValueError:
            raise ConfigError(name, f"{excerpt(value)}: expected an integer") from None
        return check_seed(number, name=name) if name == "seed" else number
    if kind is float:
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(name, f"{excerpt(value)}: expected a finite number")
        return number
    if name in ("prompt", "source_prompt"):
        check_text(value if isinstance(value, str) else text, name)  # no tokenizer takes lone surrogates
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
    if mask_file(d.get("mask")):  # a mask file decides by its content, not its name
        try:
            d["mask_sha256"] = sha256_file(mask_file(d["mask"]), max_bytes=MAX_MASK_BYTES)
        except (OSError, ValueError):  # unreadable now: the item fails when it runs, with the reason
            d["mask_sha256"] = None
    return _digest(d)
