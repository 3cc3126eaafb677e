"""The errors the library raises on purpose, in one light module (no torch), so that a caller can tell them
from bugs without importing the heavy modules that raise them.

Every one is a :class:`DateEditError` whose ``str()`` is one line saying what is wrong and what to do.
A ``ValueError`` or ``RuntimeError`` that is *not* one of these is a bug (ours or a library's), not bad input.

* :class:`ConfigError` -- a parameter value the library cannot use; it names the *parameter*
  (``update_steps``), and a front end may name its own flag instead (the CLI says ``--update-steps``).
* :class:`ImageError`, :class:`OutputError` -- an input image or an output path that cannot be used.
* :class:`ScorerError` -- a scorer spec that cannot be resolved or built.
* :class:`CaptionerError` -- a captioner (``--source-prompt auto``) that cannot be loaded (a runtime failure).
* :class:`BatchError` -- a batch job that cannot run as asked (folder, manifest, output folder).
* :class:`NonFiniteError` -- an output that is NaN or infinite (a runtime failure; nothing is written).
* :class:`DistributedError` -- a job of several processes lost one of them (a runtime failure).
* :class:`BackboneError` -- a model that cannot be loaded (a runtime failure, not a usage error);
  :class:`ModelFileError`, one of them, a model file or folder that is malformed (a usage error).
"""

from __future__ import annotations

import re
from typing import Optional

# the process exit statuses of the CLI, here so that the batch summary and the CLI use the same numbers
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_SURROGATE = re.compile("[\ud800-\udfff]")  # lone surrogates: undecodable bytes (surrogateescape), bad JSON


def printable(text: str) -> str:
    """``text`` with every lone surrogate escaped, so that it always encodes (as UTF-8, in JSON, on a terminal).

    Python keeps the bytes of a file name or argument that are not UTF-8 as lone surrogates (``b"caf\\xe9"`` reads
    ``"caf\\udce9"``); those become ``\\xe9`` again, any other lone surrogate (``"\\ud800"`` from a JSON file)
    ``\\ud800``. Valid text, non-ASCII included, is returned unchanged.
    """
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: (f"\\x{ord(m.group()) - 0xDC00:02x}" if "\udc80" <= m.group() <= "\udcff"
                                     else f"\\u{ord(m.group()):04x}"), text)


EXCERPT_CHARS = 60  # user text quoted in a message at most (a 100,000-character prompt is not echoed whole)


def excerpt(text: object, limit: int = EXCERPT_CHARS, quote: bool = True) -> str:
    """``text`` for a one-line message: quoted (its ``repr``; as it is with ``quote=False``) when short, else its
    first ``limit`` characters with an ellipsis and the whole length (``'a red car and a blue'... (100,000
    characters)``), so that a message quoting user text stays one short line."""
    text = printable(str(text))
    head = text if len(text) <= limit else text[:limit]
    head = repr(head) if quote else head
    return head if len(text) <= limit else f"{head}... ({len(text):,} characters)"


def check_text(value: str, param: Optional[str]) -> str:
    """``value`` if it is valid Unicode text; a :class:`ConfigError` naming ``param`` if it holds bytes that are not
    UTF-8 (or lone surrogates), which no tokenizer takes."""
    if isinstance(value, str) and _SURROGATE.search(value):
        raise ConfigError(param, f"'{printable(value)}' is not valid UTF-8 text; give it in UTF-8")
    return value


class DateEditError(Exception):
    """Base of every error the library raises on purpose; ``str(e)`` is one line."""

    #: whether the caller asked for something unusable (a front end's usage error) rather than a runtime failure
    usage = True


class ConfigError(DateEditError, ValueError):
    """A parameter value the library cannot use.

    ``ConfigError("update_steps", "'0,200': step 200 is past the last step (99)")`` reads
    ``update_steps '0,200': ...``; :attr:`param` names the parameter so that a front end can name its own
    option instead (:meth:`message_for`).
    """

    def __init__(self, param: Optional[str], problem: str) -> None:
        self.param, self.problem = param, problem
        super().__init__(problem if param is None else f"{param} {problem}")

    def message_for(self, name: Optional[str]) -> str:
        """The message with ``name`` (e.g. a CLI flag) in place of the parameter name."""
        return self.problem if name is None else f"{name} {self.problem}"


class ImageError(DateEditError, ValueError):
    """An input image cannot be used; ``str(e)`` is ONE line saying what is wrong and what to do."""


class OutputError(DateEditError, ValueError):
    """An output path cannot be written; ``str(e)`` is one line."""


class ScorerError(DateEditError, ValueError):
    """A scorer could not be resolved or built; the message says what to change."""


class CaptionerError(DateEditError, RuntimeError):
    """A captioner (``--source-prompt auto``) could not be built or loaded; one line naming it, how to get its
    weights, and that a source prompt (``--source-prompt TEXT`` or ``none``) avoids captioning. A runtime failure,
    as a model that cannot load: the CLI exits 1 and writes nothing."""

    usage = False


class BatchError(DateEditError, ValueError):
    """The job cannot run as asked (folder, manifest, output folder); one line. The CLI exits 2."""


class BackboneError(DateEditError, RuntimeError):
    """A backbone could not be loaded; ``str(e)`` is one line naming the model and what to do."""

    usage = False


class NonFiniteError(DateEditError, RuntimeError):
    """An output came out NaN or infinite (an fp16 overflow, a DATE radius or guidance scale far too large); one line
    saying which and what to try. A runtime failure: nothing was written, and the CLI exits 1."""

    usage = False


class DistributedError(DateEditError, RuntimeError):
    """A job of several processes lost one of them (killed, hung, or its node gone); one line naming it. A runtime
    failure: the CLI exits 1, and a rerun finishes the job."""

    usage = False


class ModelFileError(BackboneError):
    """A model file or folder the user gave is not a usable model (garbage, truncated, a malformed or oversized
    config, weights that do not fit it): bad input, so a front end's usage error, unlike a model it cannot fetch."""

    usage = True
