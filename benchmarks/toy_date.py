"""The toy-world DATE benchmark: fixed embedding vs DATE (clip:toy) vs a random direction of the same norm.

    python benchmarks/toy_date.py          # ~45 min on a 2-core CPU; resumes from benchmarks/runs/toy_*

All 60 two-object prompts x 8 seeds (5000-5007, never used in training or in tuning the judge) per method
(fixed, DATE, DATE with a random direction, DATE at rho 0.25),
plus a small sweep of rho and of the update fraction (first 10 prompts x 4 seeds). Writes
benchmarks/results/toy_date.json and toy_date.md (mean and 95% CI of the judge's both-correct rate and
the toy-CLIP score).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import _load_records, run, summarize  # noqa: E402
from date_edit.multiconcept import mean_ci95  # noqa: E402


def paired(records: list[dict], method: str, baseline: str, metric: str) -> dict:
    """Mean and 95% CI of ``metric(method) - metric(baseline)`` over the same (prompt, seed) pairs."""
    by_key = {(r["method"], r["item"], r["seed"]): r[metric] for r in records}
    diffs = [v - by_key[(baseline, i, s)] for (m, i, s), v in by_key.items()
             if m == method and (baseline, i, s) in by_key]
    return mean_ci95(diffs)

def flips(records: list[dict], run_dir: Path, method: str = "date-clip") -> dict:
    """Pairs where ``method`` and ``fixed`` disagree on both-correct, and what the judge saw where ``method`` broke
    an image ``fixed`` got right: an extra or a missing object, a wrong colour or shape, or swapped attributes."""
    import numpy as np
    from PIL import Image

    from date_edit.toy import world
    from date_edit.toy.judge import evaluate

    by = {(r["method"], r["item"], r["seed"]): r for r in records}
    kinds: dict[str, int] = {}
    broke = fixed = 0
    for (m, item, seed), r in by.items():
        base = by.get(("fixed", item, seed))
        if m != method or base is None:
            continue
        if base["both_correct"] == 1 and r["both_correct"] == 0:
            broke += 1
            image = np.asarray(Image.open(run_dir / r["image"]).convert("RGB"))
            want = sorted(world.parse_prompt(r["prompt"]))
            got = sorted((d.colour, d.shape) for d in evaluate(image, r["prompt"])["objects"])
            if len(got) != len(want):
                kind = "extra object" if len(got) > len(want) else "missing object"
            elif sorted(c for c, _ in got) != sorted(c for c, _ in want):
                kind = "wrong colour"
            elif sorted(s for _, s in got) != sorted(s for _, s in want):
                kind = "wrong shape"
            else:
                kind = "attributes swapped"
            kinds[kind] = kinds.get(kind, 0) + 1
        elif base["both_correct"] == 0 and r["both_correct"] == 1:
            fixed += 1
    return {"method": method, "broke_what_fixed_got_right": broke, "repaired_what_fixed_got_wrong": fixed,
            "broken_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def scorer_probe() -> dict:
    """What the DATE objective sees: clip:toy on rendered variants of one two-object scene (right, an extra
    object, a wrong shape, an object missing), and the Frobenius norm of the toy text embedding rho moves."""
    import torch

    from date_edit.backbones import load_backbone
    from date_edit.scorers import build_scorer
    from date_edit.toy import world

    scorer = build_scorer("clip:toy")
    prompt = "a red circle and a yellow square"
    red, square = world.ToyObject("red", "circle", 16, 16, 18), world.ToyObject("yellow", "square", 46, 20, 18)
    variants = {
        "right": (red, square),
        "extra object": (red, square, world.ToyObject("yellow", "triangle", 30, 46, 18)),
        "wrong shape": (red, world.ToyObject("yellow", "triangle", 46, 20, 18)),
        "missing object": (red,),
    }
    scores = {}
    with torch.no_grad():
        for name, objects in variants.items():
            pixels = torch.from_numpy(world.render(world.Scene(objects))).permute(2, 0, 1)[None].float() / 255.0
            scores[name] = round(float(scorer(pixels, [prompt])[0]), 3)
        norm = float(load_backbone("toy", device="cpu").encode_prompt([prompt]).norm())
    return {"prompt": prompt, "clip_toy_on_rendered": scores, "embedding_frobenius_norm": round(norm, 1)}


RUNS = {
    # rho 0.25 at full size: the small sweep said smaller moves hurt less (the toy embedding's norm is 50)
    "main": dict(methods="fixed,date-clip,date-random,date-clip@rho=0.25", sweep=None, limit=None, seeds=8),
    "sweep_rho": dict(methods="date-clip", sweep="rho=0.25,1", limit=10, seeds=4),
    "sweep_updates": dict(methods="date-clip", sweep="updates=20%,50%", limit=10, seeds=4),
}


def main() -> int:
    """Run (or resume) the three runs and write the results files."""
    root = Path(__file__).resolve().parent
    report = {"command": "python benchmarks/toy_date.py", "model": "toy", "seeds_from": 5000,
              "prompts": "date_edit.toy.world.two_object_prompts()", "steps": 50, "guidance": 7.5,
              "updates_default": "10%", "rho_default": 0.5, "runs": {}}
    lines = ["# Toy world: DATE vs fixed embedding vs random direction", "",
             "DDIM 50 steps, CFG 7.5, DATE rho 0.5 at 10% of steps (0, 10, 20, 30, 40) with clip:toy, seeds from "
             "5000. Mean ± 95% CI.", ""]
    for name, spec in RUNS.items():
        out = root / "runs" / f"toy_{name}"
        args = SimpleNamespace(suite="toy", methods=spec["methods"], sweep=spec["sweep"], updates="10%",
                               limit=spec["limit"], category="all", seeds=spec["seeds"], seed=5000, steps=50,
                               guidance=7.5, size=None, model="toy", dtype="fp32", device="cpu", eval_clip=None,
                               captioner=None, out=str(out), fid_ref=None)
        run(args)
        records = list(_load_records(out / "records.jsonl").values())
        table = summarize(records)
        report["runs"][name] = {"items": spec["limit"] or 60, "seeds": spec["seeds"], "methods": table}
        if name == "main":
            diffs = {f"{m} - fixed": {k: paired(records, m, "fixed", k) for k in ("both_correct", "clip_toy")}
                     for m in ("date-clip", "date-random", "date-clip@rho=0.25")}
            report["runs"][name]["paired_differences"] = diffs
            report["runs"][name]["flips"] = flips(records, out)
            report["runs"][name]["flips_rho_0.25"] = flips(records, out, "date-clip@rho=0.25")
        lines += [f"## {name} ({spec['limit'] or 60} prompts x {spec['seeds']} seeds)", "",
                  "| method | n | both objects right | toy-CLIP score | s/image |", "|---|---|---|---|---|"]
        for method, row in table.items():
            bc, cs, sec = row["both_correct"], row["clip_toy"], row["seconds"]
            lines.append(f"| {method} | {bc['n']} | {bc['mean']:.3f} ± {bc['ci95']:.3f} | "
                         f"{cs['mean']:.4f} ± {cs['ci95']:.4f} | {sec['mean']:.2f} |")
        lines.append("")
        if name == "main":
            lines += ["Paired differences over the same (prompt, seed) pairs:", ""]
            for label, d in report["runs"][name]["paired_differences"].items():
                bc, cs = d["both_correct"], d["clip_toy"]
                lines.append(f"- {label}: both objects right {bc['mean']:+.3f} ± {bc['ci95']:.3f}, "
                             f"toy-CLIP {cs['mean']:+.4f} ± {cs['ci95']:.4f} (n = {bc['n']})")
            lines.append("")
            for f in (report["runs"][name]["flips"], report["runs"][name]["flips_rho_0.25"]):
                kinds = ", ".join(f"{k} {v}" for k, v in f["broken_kinds"].items())
                lines.append(f"- where they disagree: {f['method']} broke {f['broke_what_fixed_got_right']} images "
                             f"the fixed embedding got right ({kinds}) and repaired "
                             f"{f['repaired_what_fixed_got_wrong']}.")
            lines.append("")
    probe = report["scorer_probe"] = scorer_probe()
    lines += ["## What the objective sees", "",
              f"clip:toy on rendered variants of \"{probe['prompt']}\": "
              + ", ".join(f"{k} {v}" for k, v in probe["clip_toy_on_rendered"].items())
              + f". The toy text embedding's Frobenius norm is {probe['embedding_frobenius_norm']}.", ""]
    results = root / "results"
    (results / "toy_date.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / "toy_date.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
