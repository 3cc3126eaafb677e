"""A job from start to end, on one process or on several (torchrun, ``accelerate launch``, SLURM's srun).

One process: take the lock, clean up after a killed run, then prepare and edit every item in order, appending to
``results.jsonl``. Several processes (:class:`date_edit.distributed.Dist` with ``world > 1``, already joined):

1. Rank 0 alone does the housekeeping (the lock, leftover temp files, repairing ``results.jsonl``, merging the
   rank logs a killed run left) while the others wait for it; then every rank knows whether it worked, and the
   run id.
2. Each rank checks its round-robin share of all items: what is up to date is recorded as skipped, a bad item as
   failed; the rest is the to-do list, gathered so every rank holds the same one.
3. Each rank edits ``todo[rank::world]``: a rerun with another number of processes does only what is left, and
   balances it again. Every rank writes its own log, ``results.rank<N>.jsonl``; no two ranks write one file.
4. When all are done, rank 0 merges the rank logs into ``results.jsonl`` by record id, and every rank returns the
   whole job's counts, so all exit with the same code.

A rank that dies leaves its outputs (each written whole, with its record inside) and its log; the next run,
with any number of processes, merges the log and skips those outputs. A progress bar, on rank 0 only, counts the
items of all ranks through the job's store.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..distributed import Dist, JobProgress
from ..errors import BatchError, DateEditError, DistributedError
from ..limits import DEFAULT_MAX_PIXELS
from .items import RESULTS_NAME, BatchInterrupted, Item, ItemSettings, PathLike, Summary
from .results import ResultsLog, _locked, clean_temp_files, merge_rank_logs, rank_log_name
from .run import _Runner, _Work, basic_record, reason

if TYPE_CHECKING:
    from ..backbones import Backbone
    from ..pipeline import Result

PROGRESS_KEY = "date-edit/batch"  # the job's counters in the store: records written by all ranks, ranks done


class _Job:
    """One run of a job by this process, alone or as one rank of several."""

    def __init__(self, runner: _Runner, dist: Dist) -> None:
        self.runner, self.dist = runner, dist
        self.main_log: ResultsLog | None = None  # results.jsonl, open on rank 0 (or the one process)

    def run(self) -> Summary:
        """Run the job; returns this process's summary (under several processes: the whole job's counts)."""
        r, d = self.runner, self.dist
        start = time.perf_counter()
        _make_out_dir(r.out)
        with r.interrupts, contextlib.ExitStack() as stack:
            self.housekeeping(stack)
            s = r.summary
            progress = JobProgress(d, len(r.items), enabled=r.show_progress, desc="batch", key=PROGRESS_KEY,
                                   postfix=lambda: f"ok {s.ok}, skipped {s.skipped}, failed {s.failed}")
            r.bar, r.tick = progress.bar, progress.step  # the runner writes its messages above the bar
            try:
                if d.active:
                    with ResultsLog(r.out / rank_log_name(d.rank)) as r.log:  # closed before rank 0 merges it
                        self.sharded()
                    progress.wait_all(check=r.interrupts.check)  # rank 0's bar moves until every rank is done
                else:
                    r.log = self.main_log
                    self.process(r.items)
            except BatchInterrupted as e:
                r.summary.interrupted = e.signum
            finally:
                progress.close()
                r.bar = None
            if d.active and r.summary.interrupted is None:
                self.finish()
        r.summary.seconds = time.perf_counter() - start
        return r.summary

    def housekeeping(self, stack: contextlib.ExitStack) -> None:
        """Rank 0 (or the one process) locks OUT_DIR, removes leftover temp files, repairs results.jsonl and merges
        leftover rank logs; the other ranks wait, then learn whether it worked and take rank 0's run id."""
        r, d = self.runner, self.dist
        error, merged = None, 0
        if d.main:
            try:
                stack.enter_context(_locked(r.out))
                r.summary.cleaned = clean_temp_files(r.out)
                self.main_log = stack.enter_context(ResultsLog(r.out / RESULTS_NAME))
                r.summary.repaired = self.main_log.dropped
                merged = merge_rank_logs(r.out, self.main_log)
            except (DateEditError, OSError) as e:
                if not d.active:
                    raise
                error = reason(e) if not isinstance(e, OSError) else f"cannot prepare {r.out}: {e.strerror or e}"
        error, r.run_id = d.broadcast((error, r.run_id))  # the others wait here for rank 0's housekeeping
        if error:
            raise BatchError(error)
        if d.main:
            s = r.summary
            if s.cleaned:
                r.say(f"removed {s.cleaned} temporary file(s) an interrupted run left in {r.out}")
            if s.repaired:
                r.say(f"dropped {s.repaired} unreadable line(s) of {self.main_log.path} (an interrupted write)")
            if merged:
                r.say(f"merged {merged} record(s) an interrupted run left in its rank logs into {self.main_log.path}")

    def prepare(self, item: Item) -> _Work | None:
        """The runner's :meth:`prepare`, an unexpected error being that item's failure."""
        try:
            return self.runner.prepare(item)
        except (BatchError, BatchInterrupted, DistributedError):
            raise
        except Exception as e:  # noqa: BLE001 - one item's failure must not stop the batch
            self.runner.fail(item, reason(e))
            return None

    def process(self, items: Sequence[Item]) -> None:
        """Prepare and edit ``items`` in order (loading the model when the first needs work), then the rest."""
        r = self.runner
        for item in items:
            r.interrupts.check()
            work = self.prepare(item)
            if work is None:
                continue
            r.ensure_model(work.settings)  # a model that cannot load stops the run (not one item's fault)
            r.add(work)
        r.flush()

    def sharded(self) -> None:
        """Check this rank's share of all items, agree on the to-do list, edit this rank's share of it."""
        r, d = self.runner, self.dist
        pending, error = [], None
        try:
            for item in d.shard(r.items):
                r.interrupts.check()
                if self.prepare(item) is not None:
                    pending.append(item.index)
        except BatchError as e:  # the job's own options are wrong: every rank stops with the same line
            error = str(e)
        gathered = d.gather((pending, error))
        errors = [e for _, e in gathered if e]
        if errors:
            raise BatchError(errors[0])
        by_index = {item.index: item for item in r.items}
        todo = sorted(i for share, _ in gathered for i in share)
        self.process([by_index[i] for i in d.shard(todo)])

    def finish(self) -> None:
        """Rank 0 merges the rank logs; every rank takes the whole job's counts (so all exit with one code)."""
        r, d = self.runner, self.dist
        s = r.summary
        counts = d.gather((s.ok, s.skipped, s.failed))
        if d.main:
            merge_rank_logs(r.out, self.main_log)
        s.ok, s.skipped, s.failed = (sum(c[k] for c in counts) for k in range(3))
        d.barrier()  # results.jsonl is whole before any rank returns


def _make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BatchError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise BatchError(f"the output folder {out} is not writable; choose another folder")


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
    dist: Dist | None = None,
    prepare: Callable[..., ItemSettings] | None = None,
) -> Summary:
    """Run a job: skip up-to-date items, edit the rest in batches, append one record per item to results.jsonl.

    Args:
        items: from :func:`plan_folder` or :func:`plan_manifest` (every rank must plan the same list).
        out_dir: OUT_DIR (created); holds the outputs, ``results.jsonl`` and the lock file.
        base_options: the job's options (CLI names, see ``OPTION_TYPES``); each item's ``options`` override them.
        resolve: merged options -> :class:`ItemSettings`; a ValueError fails the item (or, when the item
            overrides nothing, is the job's own usage error: :class:`BatchError`).
        load_model: ``(needs_date) -> (backbone, scorer)``, called once, when the first item needs work.
        make_record: ``(result, settings, loaded, backbone, scorer) -> dict``, the item's edit record.
        batch_size: items per forward pass (same processed size and settings); None: 4 on CUDA, 1 on CPU.
        force: redo up-to-date items and replace outputs not written by date-edit batch (never an input).
        max_pixels: inputs with more pixels fail (checked before decoding).
        show_progress: a progress bar on stderr (rank 0 only; it counts the items of all ranks).
        edit_fn: the edit function (default :func:`date_edit.pipeline.edit`; tests inject failures here).
        dist: this process's place in a job of several (joined with :meth:`Dist.init`); None: one process.
        prepare: ``(settings, loaded, backbone) -> settings`` once the item's photo is loaded, before it joins a
            batch (the CLI captions a photo without a source prompt here); a :class:`DateEditError` fails the item,
            a :class:`~date_edit.errors.CaptionerError` (no captioner at all) stops the job.

    Returns the :class:`Summary` (of the whole job, on every rank). SIGINT/SIGTERM abandon the current batch (its
    items get no record) and set ``summary.interrupted``; outputs and results stay consistent and a rerun, with
    any number of processes, completes the job.
    """
    runner = _Runner(items, Path(out_dir), base_options=base_options, resolve=resolve, load_model=load_model,
                     make_record=make_record, batch_size=batch_size, force=force, max_pixels=max_pixels,
                     show_progress=show_progress, say=say, on_record=on_record, edit_fn=edit_fn,
                     prepare=prepare)
    return _Job(runner, dist or Dist()).run()
