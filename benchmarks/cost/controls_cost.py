"""What the structure controls cost: time and peak memory of one edit per control, as ratios to the plain edit.

    python -m benchmarks.cost.controls_cost            # toy (64 px) and tiny (128 px) on this CPU, ~3 min

Each (model, control) runs in a fresh process (so its peak resident memory is its own): load the model, invert once
(not timed), then time the edit (best of ``--repeats``) with the fixed embedding, 100 steps, skip 36%, target CFG
7.5. Peak memory is the process's peak RSS after the edits minus its RSS before the first edit (on the CPU the
activations live in the process; on CUDA read ``peak_memory_mb`` of a record instead). Writes
benchmarks/results/controls_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
CONTROLS = ("none", "p2p", "mask-auto", "p2p+mask-auto")


def _child(model: str, control: str, size: int, repeats: int) -> dict:
    """One process's measurement (run with ``--child``)."""
    import torch

    from date_edit.backbones import load_backbone
    from date_edit.masks import MaskConfig
    from date_edit.p2p import P2PConfig
    from date_edit.pipeline import EditConfig, edit, invert_image

    torch.manual_seed(0)
    backbone = load_backbone(model, device="cpu")
    pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    source, target = "a red circle and a blue square", "a green circle and a blue square"
    inversion = invert_image(backbone, pixels, source_prompt=source, steps=100, cfg_source=3.5, seed=0)
    kw = {}
    if "p2p" in control:
        kw["p2p"] = P2PConfig()
    if "mask-auto" in control:
        kw["mask"] = MaskConfig("auto")
    config = EditConfig(steps=100, skip="36%", cfg_target=7.5, date=None, **kw)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        edit(backbone, pixels, target, source_prompt=source, config=config, inversion=inversion)
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"model": model, "control": control, "size": size, "seconds": min(times),
            "peak_rss_mb": round(peak, 1), "edit_rss_mb": round(peak - rss_before, 1)}


def main(argv=None) -> int:
    """Measure every (model, control) in its own process and write the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="toy:64,tiny:128", help="model:size pairs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", nargs=3, metavar=("MODEL", "CONTROL", "SIZE"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS / "controls_cost.json")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], int(args.child[2]), args.repeats)))
        return 0
    rows = []
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for pair in args.models.split(","):
        model, size = pair.split(":")
        for control in CONTROLS:
            child = ["-m", "benchmarks.cost.controls_cost", "--child", model, control, size]
            out = subprocess.run([sys.executable, *child, "--repeats", str(args.repeats)], capture_output=True,
                                 text=True, env=env, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["control"] == "none")
        row["time_ratio"] = round(row["seconds"] / base["seconds"], 2)
        row["edit_rss_ratio"] = round(row["edit_rss_mb"] / base["edit_rss_mb"], 2) if base["edit_rss_mb"] > 0 else None
    machine = f"CPU ({platform.machine()}), {os.cpu_count()} cores"
    report = {"command": "python -m benchmarks.cost.controls_cost", "machine": machine, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    lines = ["# What the structure controls cost", "", f"`{report['command']}` on {machine}: one edit (100 steps, "
             "skip 36%, 64 run, CFG 7.5, fixed embedding), best of the repeats, each control in its own process.",
             "", "| model | size | control | s / edit | x plain | edit RSS MB | x plain |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['size']} | {r['control']} | {r['seconds']:.2f} | {r['time_ratio']} | "
                     f"{r['edit_rss_mb']} | {r['edit_rss_ratio']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
