"""The loop: every (method, item, seed) not done yet, shared round-robin between the ranks of a launcher, one
record per image appended as it is made, then the merged records and the reports."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch

from benchmarks.harness.checks import check_item_id
from benchmarks.harness.methods import Method, expand_sweep, parse_method
from benchmarks.harness.records import (check_same_model, equal_compute_factor, load_all_records, merge_records,
                                        model_fingerprint, todo)
from benchmarks.harness.reports import compute_fid, write_reports
from benchmarks.suites import load_items, suite_module
from benchmarks.suites.base import Item
from date_edit.distributed import JobProgress
from date_edit.errors import ConfigError
from date_edit.scorers import offline_scorer_spec


def run(args) -> Optional[Path]:
    """Run a suite; returns the output folder (None on ranks other than 0, which write no reports).

    Under a launcher (torchrun, accelerate launch, srun) every rank takes its round-robin share of what is left,
    writes its own ``records.rank<N>.jsonl``, and rank 0 merges them into ``records.jsonl`` and writes the reports
    from the union of all ranks' records."""
    from date_edit.distributed import Dist

    dist = Dist.from_env()
    device = dist.device(args.device)
    dist.init(device)
    try:
        return _run(args, dist, device)
    finally:
        dist.close()


def _run(args, dist, device: str) -> Optional[Path]:
    from date_edit.backbones import load_backbone

    methods = [parse_method(m, args.updates) for m in expand_sweep(args.methods.split(","), args.sweep)]
    items = load_items(args.suite, args.limit, args.category, getattr(args, "data", None))
    out = Path(args.out or (Path("benchmarks") / "runs" / args.suite))
    out.mkdir(parents=True, exist_ok=True)
    done = load_all_records(out)
    dist.barrier()  # every rank has read what is done before any rank writes
    backbone = load_backbone(args.model, dtype=args.dtype, device=device)
    prints = dist.gather(model_fingerprint(backbone))
    if len(set(prints)) > 1:
        raise ConfigError(None, f"the ranks loaded different weights ({', '.join(prints)}): give every node the "
                                "same --model")
    if dist.main:
        check_same_model(out, args.model, backbone, resuming=bool(done))
    suite = suite_module(args.suite)
    suite.check(args, methods, backbone, items)
    runner = _Runner(args, out, backbone, suite)
    seeds = list(range(args.seed, args.seed + args.seeds))
    started = time.perf_counter()
    log_path = out / (f"records.rank{dist.rank}.jsonl" if dist.active else "records.jsonl")
    plain = [m for m in methods if m.base != "fixed-equal-compute"]
    equal = [m for m in methods if m.base == "fixed-equal-compute"]
    todo_plain, todo_equal = todo(plain, items, seeds, done), todo(equal, items, seeds, done)
    progress = JobProgress(dist, len(todo_plain) + len(todo_equal), enabled=not args.quiet and sys.stderr.isatty(),
                           desc=args.suite, key="date-edit/benchmarks")
    try:
        with open(log_path, "a") as log:
            runner.run_all(dist.shard(todo_plain), log, done, None, progress.step)
            progress.wait_all()
            # one-off: DATE's time over fixed, measured on every rank's records, computed once and sent to all
            equal_factor = dist.broadcast(equal_compute_factor(methods, load_all_records(out)) if dist.main
                                          else None)
            runner.run_all(dist.shard(todo_equal), log, done, equal_factor, progress.step)
        progress.wait_all()  # every rank's log is closed: rank 0 may merge them
    finally:
        progress.close()
    if not dist.main:
        return None
    records = merge_records(out, methods, items)
    fid = compute_fid(out, methods, args.fid_ref, backbone.device) if args.fid_ref else {}
    write_reports(out, records, fid=fid, meta={"suite": args.suite, "model": args.model, "seeds": seeds,
                                               "steps": runner.steps, "limit": args.limit, "processes": dist.world,
                                               "wall_s": time.perf_counter() - started,
                                               "device": str(backbone.device),
                                               "equal_compute_factor": equal_factor if equal else None})
    suite.write_tables(out, records, runner)
    return out


class _Runner:
    """Generates (or edits) and measures one (method, item, seed) at a time, with the scorers and source images
    built once."""

    def __init__(self, args, out: Path, backbone, suite) -> None:
        import socket

        self.args, self.out, self.backbone, self.suite = args, out, backbone, suite
        self.metrics = suite.Metrics(args.model, backbone.device, args.eval_clip, args.captioner)
        self.steps = args.steps or suite.DEFAULT_STEPS
        self.scorers: dict[str, object] = {}
        self.images: dict[str, object] = {}  # path -> LoadedImage, each source photo loaded once
        self.captions = None  # the edit suites' captions (``@source=auto``): one per photo and captioner
        self.host = socket.gethostname()

    def run_all(self, todo: list[tuple], log, done: dict, equal_factor: Optional[float],
                on_record: Callable[[], None] = lambda: None) -> None:
        """Run ``todo``, appending one JSON line per image to ``log`` and to ``done``; ``on_record()`` after each."""
        for method, item, seed in todo:
            rec = self.one(method, item, seed, equal_factor)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[(method.label, item.id, seed)] = rec
            on_record()

    def loaded(self, path: str):
        """The source photo at ``path`` as the model takes it (a ``LoadedImage``), loaded once per run."""
        from date_edit.imaging import load_image

        if path not in self.images:
            self.images[path] = load_image(path, size=self.args.size or self.backbone.native_size,
                                           multiple=self.backbone.size_multiple)
        return self.images[path]

    def scorer_spec(self, method: Method) -> Optional[str]:
        """The method's objective spec resolved for the model (offline models use their own scorers), or None."""
        return offline_scorer_spec(method.scorer, self.args.model) if method.scorer else None

    def _scorer(self, method: Method):
        from date_edit.scorers import build_scorer

        spec = self.scorer_spec(method)
        if spec is None:
            return None
        if spec not in self.scorers:
            self.scorers[spec] = build_scorer(spec, device=self.backbone.device, require_differentiable=True)
        return self.scorers[spec]

    def one(self, method: Method, item: Item, seed: int, equal_factor: Optional[float]) -> dict:
        """The record of one image: what made it, its metrics, time, memory, host and device."""
        from date_edit.imaging import save_png, to_pil

        args, backbone = self.args, self.backbone
        n_steps = self.steps
        if method.base == "fixed-equal-compute":
            n_steps = max(self.steps, round(self.steps * (equal_factor or 1.0) * method.steps_factor))
        if backbone.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(backbone.device)
        result, source, extra, n_steps = self.suite.run_item(self, method, item, seed, n_steps)
        folder = self.out / "images" / method.slug
        image_path = folder / f"{check_item_id(item.id, self.out)}_s{seed}.png"
        save_png(to_pil(result.images)[0], image_path, overwrite=True)
        rec = {"suite": args.suite, "method": method.label, "base": method.base, "item": item.id,
               "group": item.group, "prompt": item.prompt, "seed": seed, "steps": n_steps,
               "image": str(image_path.relative_to(self.out)), "seconds": result.timings["total_s"],
               "peak_memory_mb": result.peak_memory_mb, "update_steps": result.update_steps,
               "date_scores": list(result.trace.scores) if result.trace else [],
               "rho": method.date.rho if method.date else None,
               "updates": method.date.update_steps if method.date else None,
               "host": self.host, "device": str(backbone.device)}
        rec.update(extra)
        rec.update(self.suite.measure(self, method, item, seed, result, source))
        return rec


