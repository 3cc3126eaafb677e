"""The job's files in the output folder: results.jsonl (appended, fsynced, repaired), the lock, leftover temp
files, what an existing output says about itself, and signals deferred while an output is written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BatchError
from ..outputs import json_safe  # the batch package re-exports it from here
from .items import _NOFOLLOW, _TEMP_RE, LOCK_NAME, METADATA_KEY, BatchInterrupted, PathLike

# ------------------------------------------------------------------------------------------ results file


def dumps_record(record: Mapping[str, Any]) -> str:
    """One record as one line of strict JSON; never fails on text (see :func:`json_safe`)."""
    return json.dumps(json_safe(dict(record)), ensure_ascii=False, allow_nan=False)


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
            raise BatchError(f"{p} is a symlink; results are written only inside the output folder: remove the link")
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
        self.extend([record])

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records, one line each, and make them durable (one fsync) before returning."""
        if self._fd is None:
            raise RuntimeError("ResultsLog is not open; use it as a context manager")
        view = memoryview("".join(dumps_record(r) + "\n" for r in records).encode("utf-8", "backslashreplace"))
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)


def rank_log_name(rank: int) -> str:
    """The log of rank ``rank`` of a job with several processes, in OUT_DIR (merged into results.jsonl by rank 0)."""
    return f"results.rank{rank}.jsonl"


_RANK_LOG_RE = re.compile(r"^results\.rank\d+\.jsonl$")


def _read_records(path: Path) -> list[dict]:
    """The parsable JSON objects of a log, line by line (a torn line of a killed rank is left out)."""
    if path.is_symlink():
        raise BatchError(f"{path} is a symlink; logs are written only inside the output folder: remove the link")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n"):
        with contextlib.suppress(ValueError):
            record = json.loads(line) if line.strip() else None
            if isinstance(record, dict):
                records.append(record)
    return records


def merge_rank_logs(out_dir: PathLike, log: ResultsLog) -> int:
    """Move the records of every ``results.rank<N>.jsonl`` in ``out_dir`` into ``log`` (results.jsonl, open), then
    remove those files; returns how many records were added.

    Records are merged by ``record_id`` (``<run id>:<item index>``): one already in ``log`` is not added again, so
    a merge that a kill cut short is finished by the next one without a duplicate. They are added in run, then item
    order, so results.jsonl reads like a one-process run's. Only rank 0 (or the one process) calls this, while no
    rank writes its log.
    """
    out = Path(out_dir)
    paths = sorted(p for p in out.iterdir() if _RANK_LOG_RE.match(p.name))
    if not paths:
        return 0
    seen = {r.get("record_id") for r in _read_records(log.path)} - {None}
    new: list[dict] = []
    for path in paths:
        for record in _read_records(path):
            rid = record.get("record_id")
            if rid is None or rid not in seen:
                seen.add(rid)
                new.append(record)

    def order(record: dict) -> tuple:
        run, _, index = str(record.get("record_id") or "").rpartition(":")
        return (run, int(index) if index.isdigit() else -1)

    log.extend(sorted(new, key=order))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    _fsync_dir(out)
    return len(new)


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
