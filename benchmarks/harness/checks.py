"""The harness's checks of what it is given (before any model loads or any file is written), the folder names it
makes of method labels, and its error line.

Everything here is light (no torch): a refused run costs no model load and writes nothing.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Optional

from benchmarks.suites.pie.data import excerpt, plain_name
from date_edit.errors import ConfigError, printable
from date_edit.limits import check_n_avg

MAX_STEPS_FACTOR = 10.0  # fixed-equal-compute@steps-factor=F: at most this many times the measured steps
MAX_ERROR_CHARS = 400  # an error line longer than this loses its middle


def number(text: str, key: str, value: str, most: Optional[float] = None) -> float:
    """A method's ``@key=value`` number: finite, not negative, at most ``most`` (one-line ConfigError else)."""
    try:
        parsed = float(value)
    except ValueError:
        parsed = math.nan
    if not math.isfinite(parsed) or parsed < 0 or (most is not None and parsed > most):
        bound = f"a number from 0 to {most:g}" if most is not None else "a finite number >= 0"
        raise ConfigError(None, f"method {excerpt(text)}: {key} takes {bound}, got {excerpt(value)}")
    return parsed


def check_item_id(item_id: str, out: Path) -> str:
    """``item_id`` if it can name a file in ``out`` by itself (PIE keys are data: never a path), else a ConfigError."""
    if not plain_name(item_id):
        raise ConfigError(None, f"item id {excerpt(item_id)} is not a plain file name; it would name a file outside "
                                f"{out}")
    return item_id


def method_slug(label: str) -> str:
    """A method's label as the name of its folders (``images/<slug>``, ``reference/<slug>``): runs of other characters
    than ``A-Za-z0-9.=%-`` become ``_``, ``%`` becomes ``pct``."""
    return re.sub(r"[^A-Za-z0-9.=%-]+", "_", label).replace("%", "pct")


def check_arguments(args, edit_suites: tuple[str, ...]) -> None:
    """The command line's checks that need no model (one-line ConfigErrors naming the option and the bound)."""
    check_n_avg(args.n_avg, name="--n-avg")
    if args.n_avg is not None and args.suite not in edit_suites:
        raise ConfigError("--n-avg", f"is a FlowEdit setting: it needs an edit suite ({', '.join(edit_suites)})")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit", f"must be >= 1, got {args.limit}")
    if args.seeds < 1:
        raise ConfigError("--seeds", f"must be >= 1, got {args.seeds}")
    if args.out:  # the run folder, or the first of its parents that exists, must be a folder
        path = Path(args.out).absolute()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError("--out", f"{excerpt(args.out)}: {excerpt(str(existing))} is not a folder; give a "
                                       "folder for the run")


def print_error(message: str, most: int = MAX_ERROR_CHARS) -> None:
    """``benchmarks: error: <message>`` on stderr: its first line, printable, the middle of a long one cut out."""
    line = printable((message.splitlines() or [""])[0])
    if len(line) > most:
        line = f"{line[:most // 2]} ... {line[-most // 2:]}"
    print(f"benchmarks: error: {line}", file=sys.stderr)
