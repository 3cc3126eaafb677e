"""The per-item decision of a batch run, as a pure function of what is known about the item: skip it, fail it,
edit it, or resolve its settings first. The run (:mod:`.run`) gathers the facts; this decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .items import PathLike


@dataclass(frozen=True)
class Decision:
    """What to do with an item: ``skip`` (its output is up to date), ``fail`` (with ``reason``), ``edit`` (and
    whether to ``overwrite`` an output of ours), or ``resolve`` (the options alone cannot tell: resolve the
    settings and decide again with their ``config_hash``)."""

    action: str
    reason: str | None = None
    overwrite: bool = False


def decide(*, input_hash: str, options_hash: str, state: str, previous: Mapping[str, Any] | None, force: bool,
           inside: bool = True, config_hash: str | None = None, output: PathLike | None = None,
           out_dir: PathLike | None = None) -> Decision:
    """The per-item decision of a run, pure: no file is read here.

    Args:
        input_hash: the input's sha256 now.
        options_hash: :func:`options_hash` of the item's merged options.
        state, previous: :func:`output_state` of its output path (``absent``, ``ours`` with the record the PNG
            carries, or ``foreign``).
        force: ``--force`` (redo up-to-date items, replace foreign files).
        inside: whether the output path stays inside the output folder (no link leads out).
        config_hash: the resolved settings' hash, once known.
        output, out_dir: for the messages.

    An output is up to date when it is ours, its record says ok, it was made from this input content, and its
    options hash (or, once resolved, its config hash) matches; ``force`` makes nothing up to date.
    """
    if not inside:
        return Decision("fail", f"{output} leads outside --out {out_dir} through a symlink; outputs are only written "
                                "inside --out: remove the link or choose another output name")
    previous = previous or {}
    fresh = (not force and state == "ours" and previous.get("status") == "ok"
             and previous.get("input_sha256") == input_hash)
    if fresh and previous.get("options_hash") == options_hash:
        return Decision("skip")
    if state == "foreign" and not force:
        return Decision("fail", f"{output} exists and was not written by date-edit batch; move it away or pass "
                                "--force")
    if config_hash is None:
        return Decision("resolve")
    if fresh and previous.get("config_hash") == config_hash:
        return Decision("skip")
    return Decision("edit", overwrite=force or state == "ours")
