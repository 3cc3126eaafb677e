"""Two-object toy edits under structure-preserving controls: is the edited object right and in place, is the other
object kept, does the background stay (issue 27)?

    python -m benchmarks.studies.toy_edit_controls --split val   # choose settings here (20 scenes x 1 seed)
    python -m benchmarks.studies.toy_edit_controls --split test  # run once, with the settings chosen on val
    python -m benchmarks.studies.toy_edit_controls --sweep       # trade-off curve: skip x target CFG per control
    python -m benchmarks.studies.toy_edit_controls --quick       # 2 scenes, none and mask-user, fixed: smoke run

Scenes: two objects of different colours and shapes (``world.random_scene(rng, 2, distinct=True)``), numpy seed
9100 (validation) or 9300 (test), neither used in training. Scene i edits the object its caption names first when
i is even, second when i is odd; it gets one colour edit (a colour neither object has, drawn from the same rng
right after the scene) and one shape edit (the one shape neither object has, so the target scene still has two
different shapes). The target prompt is the source caption with that object changed, in the caption's order, the
other object named unchanged ("a yellow circle and a green square" -> "a purple circle and a green square").

Each scene is inverted once per seed under its caption (edit-friendly DDPM, 100 steps, CFG 3.5) and the inversion
is reused by every control and method; edits resample from skip 36% with the CLI's default target CFG (15 for the
plain edit, 7.5 under any control: chosen on the validation split, like the control settings), with the fixed target
embedding and with DATE (clip:toy objective, rho_relative 0.0025 at every 10th step: the toy setting validated in
benchmarks/results/toy_date_why.md). Controls: none, P2P (cross 0.8, self 0.8), mask auto (threshold 0.75, two
latent cells of dilation), mask user (the edited object's source box dilated 3 px), and their combinations: the
library's and the CLI's defaults. Metrics per output: see METRICS below.

Writes benchmarks/results/toy_edit_controls_<split>.{json,md} and <same stem>_grid.png (inputs and outputs, fixed
embedding, first inversion seed); --sweep writes toy_edit_controls_tradeoff.{json,md,png}.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import sys
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path


import numpy as np
import torch

from benchmarks.studies.toy_edit_controls_report import (_cell, acceptance, draw_grid, markdown, plot_tradeoff,
                                                          summarise)
from benchmarks.studies.toy_edit_scenes import (BG_MARGIN, BG_THRESHOLD, DEFAULT_CONTROLS, IN_PLACE_IOU, KINDS,
                                                METRICS, OTHER_KEPT_IOU, SPLIT_SEEDS, SWEEP_CFGS, SWEEP_CONTROLS,
                                                SWEEP_SKIPS, USER_MASK_DILATE, Case, _box_mask, make_cases, measure,
                                                user_mask)
from date_edit.stats import mean_ci95
from date_edit.toy import world

RESULTS = Path(__file__).resolve().parents[1] / "results"


# ---- controls ----------------------------------------------------------------------------------------------------

def control_parts(name: str) -> set[str]:
    """``"p2p+mask-user"`` -> {"p2p", "mask-user"}; ``"none"`` -> set()."""
    parts = set(name.split("+")) - {"none"}
    unknown = parts - {"p2p", "mask-auto", "mask-user"}
    if unknown or ("mask-auto" in parts and "mask-user" in parts):
        raise ValueError(f"unknown control {name!r}: use none, p2p, mask-auto, mask-user or a '+' combination "
                         f"of p2p with one mask")
    return parts


class Controls:
    """Builds each control's EditConfig keywords, and says which controls this checkout's API cannot run."""

    def __init__(self, p2p_cross: float, p2p_self: float) -> None:
        from date_edit.pipeline import EditConfig, edit

        fields = getattr(EditConfig, "__dataclass_fields__", {})
        params = inspect.signature(edit).parameters
        self.missing: dict[str, str] = {}
        self.P2PConfig = self.MaskConfig = None
        try:
            from date_edit.p2p import P2PConfig

            self.P2PConfig = P2PConfig
        except ImportError as e:
            self.missing["p2p"] = f"date_edit.p2p is not importable ({e})"
        try:
            from date_edit.masks import MaskConfig

            self.MaskConfig = MaskConfig
        except ImportError as e:
            self.missing["mask-auto"] = self.missing["mask-user"] = f"date_edit.masks is not importable ({e})"
        if "p2p" not in fields:
            self.missing.setdefault("p2p", "EditConfig has no p2p field")
        if "mask" not in fields:
            self.missing.setdefault("mask-auto", "EditConfig has no mask field")
            self.missing.setdefault("mask-user", "EditConfig has no mask field")
        if "mask" not in params:
            self.missing.setdefault("mask-user", "edit() takes no mask argument")
        self.p2p_cross, self.p2p_self = p2p_cross, p2p_self

    def unavailable(self, name: str) -> str | None:
        """Why ``name`` cannot run here, or None."""
        reasons = [self.missing[p] for p in sorted(control_parts(name)) if p in self.missing]
        return "; ".join(reasons) or None

    def kwargs(self, name: str) -> dict:
        """EditConfig keywords of control ``name``."""
        parts = control_parts(name)
        kw = {}
        if "p2p" in parts:
            kw["p2p"] = self.P2PConfig(cross_replace=self.p2p_cross, self_replace=self.p2p_self)
        if "mask-auto" in parts:
            kw["mask"] = self.MaskConfig(source="auto")
        if "mask-user" in parts:
            kw["mask"] = self.MaskConfig(source="user")
        return kw

    def describe(self, name: str) -> dict:
        """JSON-ready settings of control ``name``."""
        return {k: (asdict(v) if is_dataclass(v) else repr(v)) for k, v in self.kwargs(name).items()}


def cfg_for(args, control: str) -> float:
    """The target CFG of ``control``: ``--cfg-target``, or the CLI's default (15 plain, 7.5 under a control)."""
    if args.cfg_target is not None:
        return args.cfg_target
    return 15.0 if control == "none" else 7.5


# ---- running -----------------------------------------------------------------------------------------------------

def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


class Runner:
    """The toy model, scorers and controls, and one edit -> one record."""

    def __init__(self, args, controls: Controls) -> None:
        from date_edit.backbones import load_backbone
        from date_edit.date import DateConfig
        from date_edit.scorers import build_scorer

        self.args, self.controls = args, controls
        self.backbone = load_backbone(args.model, device="cpu")
        self.objective = build_scorer("clip:toy")
        self.heldout = build_scorer("clip:toy-heldout")
        self.pie = None
        if args.pie_metrics:
            from benchmarks.suites.pie.metrics import PieMetrics

            self.pie = PieMetrics("toy")
        self.date = DateConfig(rho_relative=args.rho_relative, update_steps=args.date_updates)

    @torch.no_grad()
    def roundtrip_mad(self, image: np.ndarray, case: Case) -> float:
        """Background MAD of the autoencoder's round trip alone (the floor no latent edit goes below without a pixel
        composite), over the pixels outside both source boxes dilated BG_MARGIN px."""
        pixels = _pixels(image)
        out = _to_uint8(self.backbone.decode(self.backbone.encode_image(pixels)).cpu())
        keep = ~(_box_mask(case.edited_obj.box, BG_MARGIN) | _box_mask(case.other_obj.box, BG_MARGIN))
        return float(np.abs(out.astype(np.int16) - image.astype(np.int16))[keep].mean())

    def invert(self, pixels: torch.Tensor, caption: str, seed: int):
        from date_edit.pipeline import invert_image

        return invert_image(self.backbone, pixels, source_prompt=caption, steps=self.args.steps,
                            cfg_source=self.args.cfg_source, seed=seed)

    def run(self, case: Case, image: np.ndarray, pixels: torch.Tensor, inversion, seed: int, kind: str,
            control: str, method: str, skip: str, cfg_target: float) -> tuple[dict, np.ndarray]:
        """Edit, judge and score one output; (record, output image)."""
        from date_edit.pipeline import EditConfig, edit

        date = self.date if method == "date" else None
        config = EditConfig(steps=self.args.steps, skip=skip, cfg_source=self.args.cfg_source,
                            cfg_target=cfg_target, seed=seed, date=date, **self.controls.kwargs(control))
        target = case.prompt(kind)
        extra, umask = {}, None
        if "mask-user" in control_parts(control):
            umask = user_mask(case, self.args.user_mask_dilate)
            extra["mask"] = torch.from_numpy(umask.astype(np.float32))[None, None]
        started = time.perf_counter()
        result = edit(self.backbone, pixels, target, source_prompt=case.caption, config=config,
                      scorer=self.objective if date else None, inversion=inversion, **extra)
        seconds = time.perf_counter() - started
        out = _to_uint8(result.images)
        rec = {"scene": case.index, "seed": seed, "kind": kind, "control": control, "method": method,
               "skip": skip, "cfg_target": cfg_target, "source": case.caption, "target": target,
               "edited": [case.edited_obj.colour, case.edited_obj.shape],
               "edited_to": list(case.target(kind)), **measure(out, image, case, kind, self.args.bg_threshold)}
        with torch.no_grad():
            rec["clip_target"] = round(float(self.heldout(result.images, [target])[0]), 4)
        used = getattr(result, "mask", None)
        outside = None
        if umask is not None:
            outside = ~umask
        elif "mask-auto" in control_parts(control) and used is not None:
            outside = (used[0, 0] == 0).cpu().numpy()
        if outside is not None:
            same = (out == image).all(axis=-1)[outside]
            rec["outside_mask_exact"] = round(float(same.mean()), 4) if same.size else None
        if used is not None:
            rec["mask_area"] = round(float((used[0, 0] > 0).float().mean()), 4)
        if self.pie is not None:
            rec["pie"] = pie_scores(self.pie, image, out, case, source=case.caption, target=target)
        rec["seconds"] = round(seconds, 3)
        return rec, out


def pie_scores(metrics, image: np.ndarray, out: np.ndarray, case: Case, *, source: str, target: str) -> dict:
    """PIE-Bench's metrics of one toy edit, by the harness's code (benchmarks.suites.pie.metrics): the edited region is
    the user mask (the edited object's source box dilated USER_MASK_DILATE px) with the reference's border rule;
    a PSNR of +inf (unedited part kept exactly) is written "inf"."""
    import math

    region = user_mask(case).astype(np.uint8)
    region[0, :] = region[-1, :] = 1
    region[:, 0] = region[:, -1] = 1
    scores = metrics(image, out, region, source, target)
    return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in scores.items()}


def _pixels(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0




def _command(argv: list[str]) -> str:
    return " ".join(["python -m benchmarks.studies.toy_edit_controls", *argv])


def _machine() -> str:
    return f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"


def _plan(args, controls: Controls, wanted: list[str]) -> tuple[list[str], dict]:
    runnable, skipped = [], {}
    for name in wanted:
        why = controls.unavailable(name)
        if why:
            skipped[name] = why
            print(f"note: control {name!r} skipped: {why}", flush=True)
        else:
            runnable.append(name)
    return runnable, skipped


def _setup(args, wanted: str):
    """``(controls, runnable, skipped, runner, cases, started)`` of a run, or None when no control can run."""
    controls = Controls(args.p2p_cross, args.p2p_self)
    runnable, skipped = _plan(args, controls, wanted)
    if not runnable:
        print("no control can run with this checkout's API", file=sys.stderr)
        return None
    torch.manual_seed(0)
    runner = Runner(args, controls)
    return controls, runnable, skipped, runner, make_cases(args.split, args.scenes), time.perf_counter()


def run_benchmark(args, argv: list[str]) -> int:
    """The per-kind x control x method table on one split, and the grid."""
    setup = _setup(args, args.controls)
    if setup is None:
        return 2
    controls, runnable, skipped, runner, cases, started = setup
    records, grid_rows, roundtrip = [], [], []
    for case in cases:
        image = world.render(case.scene)
        pixels = _pixels(image)
        roundtrip.append(runner.roundtrip_mad(image, case))
        for seed in range(args.seeds):
            inversion = runner.invert(pixels, case.caption, seed)
            for kind in KINDS:
                cells = {"input": (image, None)}
                for control in runnable:
                    for method in args.methods:
                        rec, out = runner.run(case, image, pixels, inversion, seed, kind, control, method,
                                              args.skip, cfg_for(args, control))
                        records.append(rec)
                        if method == args.methods[0]:
                            cells[control] = (out, rec["success"])
                if seed == 0 and case.index < args.grid_scenes:
                    grid_rows.append({"label": f"scene {case.index}, {kind}: {case.prompt(kind)}",
                                      "cells": cells})
        done = [r for r in records if r["scene"] == case.index]
        print(f"scene {case.index + 1}/{len(cases)}: {len(records)} edits, success "
              f"{np.mean([r['success'] for r in done]):.2f}, {time.perf_counter() - started:.0f} s", flush=True)
    table = summarise(records, ("kind", "control", "method"))
    out = args.out
    grid_path = out.with_name(out.stem + "_grid.png")
    draw_grid(grid_rows, ["input", *runnable], grid_path)
    settings = {
        "edit": f"edit-friendly DDPM, {args.steps} steps, skip {args.skip}, CFG {args.cfg_source} -> "
                f"{args.cfg_target or '15 (none) / 7.5 (controls)'}, source prompt = the source caption, one "
                f"inversion per scene and seed reused by "
                f"every control and method",
        "date": f"clip:toy objective, rho_relative {args.rho_relative}, update steps {args.date_updates} (the toy "
                f"setting validated in benchmarks/results/toy_date_why.md)",
        "controls": {name: controls.describe(name) for name in runnable},
        "user_mask": f"the edited object's source box dilated {args.user_mask_dilate} px (a rectangle), "
                     f"passed as edit(..., mask=(1, 1, 64, 64) float)",
        "edits": "scene i edits the object its caption names first (i even) or second (i odd); colour edit: a colour "
                 "neither object has (rng); shape edit: the one shape neither object has; target = the caption with "
                 "that object changed, same order",
        "thresholds": {"in_place_iou": IN_PLACE_IOU, "other_kept_iou": OTHER_KEPT_IOU,
                       "background_margin_px": BG_MARGIN, "background_mad_max": args.bg_threshold},
    }
    report = {
        "command": _command(argv), "model": args.model, "split": args.split,
        "scenes_numpy_seed": SPLIT_SEEDS[args.split], "scenes": args.scenes,
        "inversion_seeds": list(range(args.seeds)), "controls": runnable,
        "skipped_controls": skipped, "methods": args.methods, "settings": settings,
        "metrics": METRICS, "roundtrip_background_mad": mean_ci95(roundtrip),
        "results": table, "acceptance": acceptance(table, args.methods),
        "grid": str(grid_path), "wall_s": round(time.perf_counter() - started, 1), "machine": _machine(),
        "pie_labels": runner.pie.labels if runner.pie is not None else None,
        "records": records,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0




def run_sweep(args, argv: list[str]) -> int:
    """Mean held-out CLIP-to-target against mean background MAD over skip x target CFG, per control (fixed)."""
    setup = _setup(args, args.sweep_controls)
    if setup is None:
        return 2
    controls, runnable, skipped, runner, cases, started = setup
    records = []
    for case in cases:
        image = world.render(case.scene)
        pixels = _pixels(image)
        for seed in range(args.seeds):
            inversion = runner.invert(pixels, case.caption, seed)
            for kind in KINDS:
                for control in runnable:
                    for skip in SWEEP_SKIPS:
                        for cfg in SWEEP_CFGS:
                            rec, _ = runner.run(case, image, pixels, inversion, seed, kind, control, "fixed",
                                                skip, cfg)
                            records.append(rec)
        print(f"scene {case.index + 1}/{len(cases)}: {len(records)} edits, {time.perf_counter() - started:.0f} s",
              flush=True)
    table = summarise(records, ("control", "skip", "cfg_target"))
    per_kind = summarise(records, ("kind", "control", "skip", "cfg_target"))
    out = args.out
    plot_path = out.with_suffix(".png")
    plot_tradeoff(table, runnable, plot_path)
    report = {"command": _command(argv), "model": args.model, "split": args.split,
              "scenes_numpy_seed": SPLIT_SEEDS[args.split], "scenes": args.scenes,
              "inversion_seeds": list(range(args.seeds)), "controls": runnable, "skipped_controls": skipped,
              "skips": list(SWEEP_SKIPS), "cfg_targets": list(SWEEP_CFGS), "method": "fixed",
              "settings": {"controls": {name: controls.describe(name) for name in runnable},
                           "steps": args.steps, "cfg_source": args.cfg_source,
                           "background_mad_max": args.bg_threshold},
              "metrics": METRICS, "results": table, "results_per_kind": per_kind, "plot": str(plot_path),
              "wall_s": round(time.perf_counter() - started, 1), "machine": _machine(), "records": records}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    lines = [f"# Toy world, two objects: CLIP-to-target against background change ({args.split} split)", "",
             f"`{report['command']}`: {args.scenes} scenes x {args.seeds} seeds x 2 edits, fixed embedding, "
             f"{args.steps} steps, CFG source {args.cfg_source}. Wall time {report['wall_s']:.0f} s on "
             f"{report['machine']}. Plot: `{plot_path.name}`.", "",
             "| control | skip | target CFG | n | clip | bg MAD | success |", "|---|---|---|---|---|---|---|"]
    for key, row in table.items():
        control, skip, cfg = key.split("/")
        lines.append(f"| {control} | {skip} | {cfg} | {row['n']} | {_cell(row['clip_target'], 3)} | "
                     f"{_cell(row['background_mad'], 1)} | {_cell(row['success'])} |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0




def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark (or the sweep)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="val",
                   help="val: numpy seed 9100, for choosing settings; test: seed 9300, run once")
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--seeds", type=int, default=1, help="inversion seeds per scene (0..K-1)")
    p.add_argument("--controls", default=",".join(DEFAULT_CONTROLS),
                   help="comma list of none, p2p, mask-auto, mask-user and '+' combinations")
    p.add_argument("--methods", default="fixed,date", help="comma list of fixed, date")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--skip", default="36%")
    p.add_argument("--cfg-source", type=float, default=3.5)
    p.add_argument("--cfg-target", type=float, default=None,
                   help="target CFG of every control (default: the CLI's, 15 for none and 7.5 under a control)")
    p.add_argument("--rho-relative", type=float, default=0.0025, help="DATE radius (validated toy setting)")
    p.add_argument("--date-updates", default="every:10")
    p.add_argument("--p2p-cross", type=float, default=0.8)
    p.add_argument("--p2p-self", type=float, default=0.8)
    p.add_argument("--user-mask-dilate", type=int, default=USER_MASK_DILATE)
    p.add_argument("--bg-threshold", type=float, default=BG_THRESHOLD, help="background MAD (0-255) for success")
    p.add_argument("--grid-scenes", type=int, default=3, help="scenes shown in the grid (two rows each)")
    p.add_argument("--pie-metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="also score each edit with PIE-Bench's seven metrics (toy encoder; "
                        "benchmarks/suites/pie/metrics.py)")
    p.add_argument("--sweep", action="store_true", help="the trade-off sweep (fixed embedding) instead of the table")
    p.add_argument("--sweep-controls", default=",".join(SWEEP_CONTROLS))
    p.add_argument("--quick", action="store_true", help="2 scenes x 1 seed, controls none and mask-user, fixed")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/toy_edit_controls_<split>.json, or "
                        "toy_edit_controls_tradeoff.json with --sweep); the .md and .png go beside it")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.seeds, args.controls, args.methods = 2, 1, "none,mask-user", "fixed"
        args.sweep_controls = "none,mask-user"
    args.controls = [c.strip() for c in args.controls.split(",") if c.strip()]
    args.sweep_controls = [c.strip() for c in args.sweep_controls.split(",") if c.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in args.controls + args.sweep_controls:
        try:
            control_parts(name)
        except ValueError as e:
            p.error(str(e))
    if not args.methods or set(args.methods) - {"fixed", "date"}:
        p.error(f"--methods: use fixed and/or date, got {args.methods}")
    if args.out is None:
        args.out = RESULTS / ("toy_edit_controls_tradeoff.json" if args.sweep
                              else f"toy_edit_controls_{args.split}.json")
    return run_sweep(args, argv) if args.sweep else run_benchmark(args, argv)


if __name__ == "__main__":
    sys.exit(main())
