"""How a command body runs: exit codes, one-line errors, signals, progress bars.

Imports click, the standard library and :mod:`date_edit.errors` (no torch), so every command module can use it
and a command that ends early (a usage error, a batch with nothing to do) never pays for the heavy libraries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Optional

import click

from date_edit.errors import (  # noqa: F401
    EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ConfigError, DateEditError, check_text, printable,
)

DEBUG_ENV = "DATE_EDIT_DEBUG"  # set to 1: an unexpected error prints its traceback instead of saving it

# library parameter -> the flag that sets it, where the two are not simply --the-name-with-dashes
_FLAGS = {"iterations": "--grad-iters", "mode": "--update-mode", "guidance_scale": "--cfg-target",
          "seeds": "--seed"}


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


MAX_LINE = 1000  # characters of one message line at most: user text inside is quoted as an excerpt anyway


def say(message: str) -> None:
    """One line on stderr, prefixed ``date-edit:``; a line over :data:`MAX_LINE` characters (a message quoting a
    huge argument whole) is cut there, with its length."""
    text = printable(message)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... (cut: {len(text):,} characters)"
    click.echo(f"date-edit: {text}", err=True)


def _is_ours(category: type, filename: str) -> bool:
    """A warning about the user's run: raised by date-edit's own code, or of a warning class it defines."""
    import date_edit

    roots = {os.path.dirname(os.path.abspath(date_edit.__file__)), os.path.dirname(os.path.abspath(__file__))}
    path = os.path.abspath(filename or "")
    return (getattr(category, "__module__", "").startswith("date_edit")
            or any(path.startswith(root + os.sep) for root in roots))


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` replacement: the first line of a warning about the user's run (one date-edit
    raises), no source location; the libraries' own warnings (deprecations and the like) are not shown."""
    if _is_ours(category, filename):
        say(f"warning: {str(message).splitlines()[0]}")


def flag_for(param: Optional[str]) -> Optional[str]:
    """The CLI flag of a library parameter (``update_steps`` -> ``--update-steps``); None stays None."""
    if param is None:
        return None
    return _FLAGS.get(param, "--" + param.replace("_", "-"))


class Signals:
    """SIGINT and SIGTERM both become KeyboardInterrupt (one line, exit 130); held back while outputs are
    written, so a signal never leaves a half-written file."""

    def __init__(self) -> None:
        self.holding = False
        self.pending: Optional[int] = None

    def install(self) -> dict:
        """Route SIGINT and SIGTERM here (main thread only); returns the handlers they had."""
        previous = {}
        self.pending = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        return previous

    @contextlib.contextmanager
    def installed(self):
        """SIGINT and SIGTERM routed here inside the block; the previous handlers back after it (so running a
        command in-process, e.g. under click's test runner, leaves the caller's handlers alone)."""
        previous = self.install()
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.holding:
            self.pending = signum
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self):
        """Inside, a signal is only noted (``pending``); the caller decides what to do after."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


SIGNALS = Signals()


def progress(quiet: bool):
    """A tqdm-backed ``progress(phase, i, n)`` on stderr, or None when quiet or not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, object] = {}

    def update(phase: str, i: int, n: int) -> None:
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=n, desc=phase, file=sys.stderr, leave=False)
        bar.update(1)
        if i + 1 >= n:
            bar.close()

    return update


def _is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _report_bug(exc: BaseException) -> None:
    """An unexpected exception: one line naming it as a bug, the traceback saved to a file (or, with
    ``DATE_EDIT_DEBUG=1``, raised so that Python prints it)."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise exc
    first = printable((str(exc).strip().splitlines() or [""])[0])
    where = "(the traceback could not be saved)"
    try:  # text that is not UTF-8 (an argument's bytes, a file name) is escaped, never a second error
        fd, path = tempfile.mkstemp(prefix=f"date-edit-error-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"date-edit {' '.join(printable(a) for a in sys.argv[1:])}\n\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=f)
        where = f"the traceback is in {path}"
    except (OSError, ValueError):  # UnicodeError is a ValueError
        pass
    say(f"error: unexpected {type(exc).__name__}: {first}. This is a bug, not bad input: {where} "
        f"({DEBUG_ENV}=1 prints it); please report it")


TEXT_PARAMS = ("prompt", "source_prompt")  # parameters that reach a tokenizer: valid UTF-8 text only


def check_text_params() -> None:
    """Refuse a prompt whose bytes are not UTF-8 (``$'caf\\xe9'`` in a shell) in one line (exit 2), before any work."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    for param in ctx.command.params:
        if param.name in TEXT_PARAMS and isinstance(ctx.params.get(param.name), str):
            name = param.human_readable_name if isinstance(param, click.Argument) else max(param.opts, key=len)
            try:
                check_text(ctx.params[param.name], name)
            except ConfigError as exc:
                raise CliError(str(exc), EXIT_USAGE) from None


def run_command(fn):
    """Run a command body, turning every expected failure into one line and an exit code.

    2: bad input or options (a :class:`CliError` with that code, or a library :class:`DateEditError` other than
    a model that fails to load); 1: a runtime failure (model loading, memory) or a bug; 130: interrupted.
    A bug (any other exception) is said to be one, with the place its traceback was saved.
    """
    warnings.showwarning = show_warning
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        with SIGNALS.installed():
            check_text_params()
            return fn()
    except SystemExit:
        raise
    except CliError as exc:
        say(f"error: {exc}")
        sys.exit(exc.code)
    except ConfigError as exc:
        say(f"error: {exc.message_for(flag_for(exc.param)).splitlines()[0]}")
        sys.exit(EXIT_USAGE)
    except DateEditError as exc:
        say(f"error: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
        sys.exit(EXIT_USAGE if exc.usage else EXIT_ERROR)
    except KeyboardInterrupt:
        say("interrupted; nothing was written")
        sys.exit(EXIT_INTERRUPTED)
    except MemoryError:
        say("error: out of memory; try a smaller --size, --dtype fp16 on a GPU, or fewer --update-steps")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a bare traceback
        if _is_out_of_memory(exc):
            say("error: the GPU ran out of memory; try --dtype fp16, a smaller --size or fewer --update-steps")
            sys.exit(EXIT_ERROR)
        _report_bug(exc)
        sys.exit(EXIT_ERROR)
