"""The toy-world DATE benchmark: settings chosen on a validation split, the test split run once, the paper's findings.

    python -m benchmarks.studies.toy_date # validation sweep, then the test split and the findings
    python -m benchmarks.studies.toy_date --stage val # only choose the settings (writes them into toy_date.json)
    python -m benchmarks.studies.toy_date --stage test # test + findings with the settings toy_date.json holds
    python -m benchmarks.studies.toy_date --stage report # rewrite the reports (after make toy-edit), running nothing

Prompts: the 60 two-object prompts (canonical order) and the 60 three-object prompts of the toy world. Every
third prompt of each family (index % 3 == 0) is validation, the rest test; validation seeds 6000-6003, test seeds
7000-7003 (never used in training or in tuning the judge). Every image is generated in batches (many prompts and
seeds per forward pass, each image with its own noise seed, so an image does not depend on its batch), DDIM 50
steps, CFG 7.5, fp32 CPU.

DATE's objective is ``clip:toy``. Each image is judged by the OpenCV judge (all objects right, nothing extra) and
scored by ``clip:toy-heldout``, a second toy CLIP (other seed, data order and widths) that is never an objective.
Validation picks, among a grid of relative radii and update schedules, the setting with the highest all-correct
rate (ties: higher held-out score). The test split then runs fixed, DATE at that setting, and the ablations of the
paper's findings once. Writes benchmarks/results/toy_date.{json,md} and toy_findings.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import os
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch


from date_edit.date import DateConfig
from date_edit.pipeline import GenerateConfig, generate
from date_edit.stats import mean_ci95
from date_edit.toy import world
from date_edit.toy.judge import evaluate

RESULTS = Path(__file__).resolve().parents[1] / "results"
VAL_SEEDS = (6000, 6001, 6002, 6003)
TEST_SEEDS = (7000, 7001, 7002, 7003)
STEPS, GUIDANCE, CHUNK = 50, 7.5, 60
# the validation grid: relative radius (the toy prompt embedding's Frobenius norm is ~50, so 0.01 ~ the paper's
# rho 0.5 there) x which of the 50 steps update (the paper's 10%, and the same count from the middle on)
GRID_RHO = (0.0025, 0.005, 0.01, 0.02)
GRID_UPDATES = ("every:10", "20,25,30,35,40")


def split(family: str, part: str, quick: bool = False) -> list[str]:
    """The prompts of ``family`` (two_object / three_object) in ``part`` (val: index % 3 == 0, test: the rest)."""
    prompts = world.two_object_prompts() if family == "two_object" else world.three_object_prompts()
    chosen = [p for i, p in enumerate(prompts) if (i % 3 == 0) == (part == "val")]
    return chosen[:2] if quick else chosen


class Bench:
    """The toy backbone, the objective and the held-out scorer, and a batched runner of (prompt, seed) pairs."""

    def __init__(self, heldout: str = "clip:toy-heldout", quick: bool = False) -> None:
        from date_edit.backbones import load_backbone
        from date_edit.scorers import build_scorer

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # both cores unless told otherwise
        self.backbone = load_backbone("toy", device="cpu")
        self.objective = build_scorer("clip:toy")
        try:
            self.heldout = build_scorer(heldout)
        except Exception as e:  # noqa: BLE001 - one clear line for a model trained before the held-out CLIP
            raise SystemExit(f"toy_date: cannot load the held-out scorer {heldout}: {e}") from None
        self.quick = quick  # a smoke test: 2 prompts per family and split, one seed, two grid points

    def run(self, pairs: list[tuple[str, int]], date: DateConfig | None, steps: int = STEPS,
            keep_directions: bool = False) -> tuple[list[dict], list[torch.Tensor], float]:
        """Generate every pair; per-image records, per-chunk DATE moves ``(n_updates, B, L, D)``, and seconds."""
        records, moves, start = [], [], time.perf_counter()
        for i in range(0, len(pairs), CHUNK):
            chunk = pairs[i:i + CHUNK]
            prompts, seeds = [p for p, _ in chunk], [s for _, s in chunk]
            cfg = GenerateConfig(steps=steps, guidance_scale=GUIDANCE, date=date)
            result = generate(self.backbone, prompts, config=cfg, scorer=self.objective if date else None,
                              seeds=seeds, keep_directions=keep_directions)
            images = result.images
            with torch.no_grad():
                objective = self.objective(images, prompts).tolist()
                heldout = self.heldout(images, prompts).tolist()
            arrays = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            for k, (prompt, seed) in enumerate(chunk):
                verdict = evaluate(arrays[k], prompt)
                records.append({"prompt": prompt, "seed": seed, "correct": int(verdict["correct"]),
                                "n_extra": verdict["n_extra"], "objective": objective[k], "heldout": heldout[k]})
            if keep_directions and result.trace is not None and result.trace.directions:
                moves.append(torch.stack(result.trace.directions))
        return records, moves, time.perf_counter() - start


def pairs_of(prompts: list[str], seeds: tuple[int, ...]) -> list[tuple[str, int]]:
    """Every (prompt, seed), prompt-major."""
    return [(p, s) for p in prompts for s in seeds]


def summary(records: list[dict]) -> dict:
    """Mean and 95% CI of the all-correct rate and both scores, overall and per family."""
    out = {}
    for name, keep in (("all", lambda r: True), ("two_object", lambda r: len(world.parse_prompt(r["prompt"])) == 2),
                       ("three_object", lambda r: len(world.parse_prompt(r["prompt"])) == 3)):
        rs = [r for r in records if keep(r)]
        if rs:
            out[name] = {m: _round(mean_ci95([r[m] for r in rs])) for m in ("correct", "objective", "heldout")}
    return out


def paired(a: list[dict], b: list[dict], metric: str, family: str = "all") -> dict:
    """Mean and 95% CI of ``metric(a) - metric(b)`` over the same (prompt, seed) pairs."""
    want = {"all": (2, 3), "two_object": (2,), "three_object": (3,)}[family]
    base = {(r["prompt"], r["seed"]): r[metric] for r in b}
    diffs = [r[metric] - base[(r["prompt"], r["seed"])] for r in a
             if (r["prompt"], r["seed"]) in base and len(world.parse_prompt(r["prompt"])) in want]
    return _round(mean_ci95(diffs))


def _round(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def validation(bench: Bench) -> dict:
    """Run fixed and every grid setting on the validation split; pick the best by all-correct rate."""
    q = bench.quick
    prompts = split("two_object", "val", q) + split("three_object", "val", q)
    pairs = pairs_of(prompts, VAL_SEEDS[:1] if q else VAL_SEEDS)
    fixed, _, fixed_s = bench.run(pairs, None)
    rows = {"fixed": {"summary": summary(fixed), "seconds": round(fixed_s, 1)}}
    best = None
    grid = list(itertools.product(GRID_RHO, GRID_UPDATES))
    for rho, updates in grid[:2] if q else grid:
        name = f"rho_relative={rho} updates={updates}"
        recs, _, secs = bench.run(pairs, DateConfig(rho_relative=rho, update_steps=updates))
        row = {"rho_relative": rho, "update_steps": updates, "summary": summary(recs), "seconds": round(secs, 1),
               "minus_fixed_correct": paired(recs, fixed, "correct"),
               "minus_fixed_heldout": paired(recs, fixed, "heldout")}
        rows[name] = row
        key = (row["summary"]["all"]["correct"]["mean"], row["summary"]["all"]["heldout"]["mean"])
        if best is None or key > best[0]:
            best = (key, name)
        print(f"val {name}: correct {key[0]:.3f} (fixed {rows['fixed']['summary']['all']['correct']['mean']:.3f}),"
              f" heldout {key[1]:.4f}, {secs:.0f} s", flush=True)
    chosen = rows[best[1]]
    return {"pairs": len(pairs), "seeds": sorted({s for _, s in pairs}), "rows": rows,
            "chosen": {"rho_relative": chosen["rho_relative"], "update_steps": chosen["update_steps"],
                       "rule": "highest all-correct rate on validation, ties broken by the held-out score"}}


def cosine_stats(moves: list[torch.Tensor], seeds_per_prompt: int) -> dict:
    """Cosines between update directions: different steps of one run, and one step across seeds of one prompt."""
    within, across = [], []
    for m in moves:  # (U, B, L, D), B = prompts x seeds, prompt-major
        u, b = m.shape[:2]
        flat = torch.nn.functional.normalize(m.flatten(2), dim=-1)  # (U, B, L*D)
        for i, j in itertools.combinations(range(u), 2):
            within.extend((flat[i] * flat[j]).sum(-1).tolist())
        for start in range(0, b, seeds_per_prompt):
            group = flat[:, start:start + seeds_per_prompt]  # (U, S, L*D)
            for i, j in itertools.combinations(range(group.shape[1]), 2):
                across.extend((group[:, i] * group[:, j]).sum(-1).tolist())
    def stats(values: list[float]) -> dict:
        arr = np.abs(np.asarray(values))
        return {"n_pairs": len(values), "mean_abs_cos": round(float(arr.mean()), 4),
                "share_abs_cos_below_0.1": round(float((arr < 0.1).mean()), 4),
                "median_cos": round(float(np.median(values)), 4)}
    return {"steps_within_a_run": stats(within), "seeds_of_a_prompt": stats(across)}


def test(bench: Bench, chosen: dict) -> dict:
    """The test split, once: fixed, DATE at the chosen setting, and the ablations behind the findings."""
    q = bench.quick
    seeds = TEST_SEEDS[:2] if q else TEST_SEEDS
    pairs = pairs_of(split("two_object", "test", q) + split("three_object", "test", q), seeds)
    date = DateConfig(rho_relative=chosen["rho_relative"], update_steps=chosen["update_steps"])
    n_updates = len(chosen_indices(chosen["update_steps"]))
    early = ",".join(str(5 * k) for k in range(n_updates))  # the same number of updates, from step 0 on
    late = ",".join(str(45 - 5 * (n_updates - 1 - k)) for k in range(n_updates))  # ... ending at step 45
    runs: dict[str, dict] = {}
    fixed, _, fixed_s = bench.run(pairs, None)
    runs["fixed"] = {"records": fixed, "seconds": fixed_s}
    recs, moves, secs = bench.run(pairs, date, keep_directions=True)
    runs["date"] = {"records": recs, "seconds": secs}
    variants = {
        "date-random": replace(date, direction="random"),
        "date-noisy-objective": replace(date, objective="xt"),
        "date-unnormalized": replace(date, normalize=False),
        "date-restart": replace(date, mode="restart"),
        "date-early": replace(date, update_steps=early),
        "date-late": replace(date, update_steps=late),
        "date-clamped-decode": replace(date, clamp_decoded=True),
        "date-pil-preprocess": replace(date, grad_preprocess="pil"),
    }
    for name, cfg in variants.items():
        r, _, s = bench.run(pairs, cfg)
        runs[name] = {"records": r, "seconds": s}
        print(f"test {name}: {s:.0f} s", flush=True)
    # the fixed embedding given DATE's extra compute as extra DDIM steps (measured in this run)
    equal_steps = max(STEPS + 1, round(STEPS * runs["date"]["seconds"] / fixed_s))
    r, _, s = bench.run(pairs, None, steps=equal_steps)
    runs[f"fixed-{equal_steps}-steps"] = {"records": r, "seconds": s}
    table = {}
    for name, run in runs.items():
        table[name] = {"summary": summary(run["records"]), "seconds": round(run["seconds"], 1),
                       "s_per_image": round(run["seconds"] / len(pairs), 3)}
        if name != "fixed":
            for fam in ("all", "two_object", "three_object"):
                table[name][f"minus_fixed_correct_{fam}"] = paired(run["records"], fixed, "correct", fam)
            table[name]["minus_fixed_heldout"] = paired(run["records"], fixed, "heldout")
            table[name]["minus_fixed_objective"] = paired(run["records"], fixed, "objective")
    return {"pairs": len(pairs), "seeds": list(seeds), "chosen": chosen, "early_updates": early,
            "late_updates": late, "equal_compute_steps": equal_steps, "methods": table,
            "directions": cosine_stats(moves, len(seeds)), "records": {k: v["records"] for k, v in runs.items()}}


def chosen_indices(spec: str) -> list[int]:
    """The step indices of an update spec in a 50-step run."""
    from date_edit.date import parse_update_steps

    return parse_update_steps(spec, STEPS)


def fmt_diff(d: dict | None) -> str:
    """A signed mean ± 95% CI (``mean_ci95``'s dict), or ``n/a``."""
    if not d or d.get("mean") is None:
        return "n/a"
    ci = d.get("ci95")
    return f"{d['mean']:+.3f} ± {ci:.3f}" if ci is not None else f"{d['mean']:+.3f}"


def fmt_rate(d: dict) -> str:
    """A rate ± 95% CI (no CI for a single value)."""
    return f"{d['mean']:.3f} ± {d['ci95']:.3f}" if d.get("ci95") is not None else f"{d['mean']:.3f}"


def write_reports(data: dict) -> None:
    """toy_date.{json,md} and toy_findings.{json,md} from ``data`` (validation and test)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "toy_date.json").write_text(json.dumps(data, indent=1))
    lines = ["# Toy world: DATE vs the fixed embedding, settings chosen on validation", "",
             f"Command: `python -m benchmarks.studies.toy_date` (or `make toy-date`). {data['setup']}", ""]
    val = data.get("validation")
    if val:
        lines += ["## Validation split (choose the settings)", "",
                  f"{val['pairs']} (prompt, seed) pairs: every third two- and three-object prompt, seeds "
                  f"{val['seeds'][0]}-{val['seeds'][-1]}.", "",
                  "| setting | all correct | two objects | three objects | held-out CLIP | s |",
                  "|---|---|---|---|---|---|"]
        for name, row in val["rows"].items():
            s = row["summary"]
            lines.append(f"| {name} | {fmt_rate(s['all']['correct'])} | {fmt_rate(s['two_object']['correct'])} | "
                         f"{fmt_rate(s['three_object']['correct'])} | {s['all']['heldout']['mean']:.4f} | "
                         f"{row['seconds']} |")
        c = val["chosen"]
        lines += ["", f"Chosen: rho_relative {c['rho_relative']}, update steps {c['update_steps']} ({c['rule']}).", ""]
    tst = data.get("test")
    if tst:
        lines += ["## Test split (run once, with the chosen settings)", "",
                  f"{tst['pairs']} (prompt, seed) pairs: the other two thirds of the prompts, seeds "
                  f"{tst['seeds'][0]}-{tst['seeds'][-1]}. Differences are paired over the same (prompt, seed).", "",
                  "| method | all correct | two objects | three objects | held-out CLIP | objective (clip:toy) "
                  "| minus fixed: correct (all / two / three objects) | minus fixed: held-out | s/image |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in tst["methods"].items():
            s = row["summary"]
            diff = (f"{fmt_diff(row.get('minus_fixed_correct_all'))} / "
                    f"{fmt_diff(row.get('minus_fixed_correct_two_object'))} / "
                    f"{fmt_diff(row.get('minus_fixed_correct_three_object'))}" if name != "fixed" else "")
            lines.append(f"| {name} | {fmt_rate(s['all']['correct'])} | {fmt_rate(s['two_object']['correct'])} | "
                         f"{fmt_rate(s['three_object']['correct'])} | {s['all']['heldout']['mean']:.4f} | "
                         f"{s['all']['objective']['mean']:.4f} | {diff} | "
                         f"{fmt_diff(row.get('minus_fixed_heldout')) if name != 'fixed' else ''} | "
                         f"{row['s_per_image']} |")
    (RESULTS / "toy_date.md").write_text("\n".join(lines) + "\n")
    if tst:
        findings = make_findings(tst, data.get("edit"))
        (RESULTS / "toy_findings.json").write_text(json.dumps(findings, indent=1))
        rows = ["# The paper's findings on the toy world (test split, 95% CIs)", "",
                f"Command: `python -m benchmarks.studies.toy_date`. {data['setup']} DATE: rho_relative "
                f"{tst['chosen']['rho_relative']}, updates {tst['chosen']['update_steps']} (chosen on validation).",
                "",
                "| # | finding | the paper | measured here | reproduced |", "|---|---|---|---|---|"]
        for i, f in enumerate(findings["findings"], 1):
            rows.append(f"| {i} | {f['finding']} | {f['paper']} | {f['measured']} | {f['reproduced']} |")
        (RESULTS / "toy_findings.md").write_text("\n".join(rows) + "\n")


def _verdict(diff: dict, expect: str) -> str:
    """'yes' / 'no' / 'inconclusive' for a paired difference expected positive, negative or zero."""
    m, ci = diff.get("mean"), diff.get("ci95") or 0.0
    if m is None:
        return "n/a"
    if expect == "zero":
        return "yes" if abs(m) <= ci else "no"
    sign = 1 if expect == "positive" else -1
    if sign * m > ci:
        return "yes"
    return "no" if sign * m < -ci else "inconclusive"


def make_findings(tst: dict, edit: dict | None) -> dict:
    """The nine findings as rows: claim, the paper's statement, our measurement, and whether it reproduces."""
    m = tst["methods"]
    date = m["date"]

    def vs(a: str, b: str, metric: str = "correct") -> dict:
        ra, rb = tst["records"][a], tst["records"][b]
        return paired(ra, rb, metric)

    eq = f"fixed-{tst['equal_compute_steps']}-steps"
    d = tst["directions"]
    rows = [
        {"finding": "a random direction of the same norm equals the fixed embedding",
         "paper": "random ~ fixed",
         "measured": f"random - fixed: correct {fmt_diff(m['date-random']['minus_fixed_correct_all'])}",
         "reproduced": _verdict(m["date-random"]["minus_fixed_correct_all"], "zero")},
        {"finding": "h on the noisy latent is worse than on x0_hat",
         "paper": "x0_hat better",
         "measured": f"x0_hat - noisy: correct {fmt_diff(vs('date', 'date-noisy-objective'))}",
         "reproduced": _verdict(vs("date", "date-noisy-objective"), "positive")},
        {"finding": "the unnormalised gradient is worse than the normalised one",
         "paper": "normalised better",
         "measured": f"normalised - raw: correct {fmt_diff(vs('date', 'date-unnormalized'))}",
         "reproduced": _verdict(vs("date", "date-unnormalized"), "positive")},
        {"finding": "accumulate vs restart",
         "paper": "accumulate: better CLIP score", "measured":
             f"accumulate - restart: correct {fmt_diff(vs('date', 'date-restart'))}, objective "
             f"{fmt_diff(vs('date', 'date-restart', 'objective'))}",
         "reproduced": _verdict(vs("date", "date-restart", "objective"), "positive")},
        {"finding": "middle-to-late updates help more than early ones",
         "paper": "late > early", "measured":
             f"late ({tst['late_updates']}) - early ({tst['early_updates']}): correct "
             f"{fmt_diff(vs('date-late', 'date-early'))}",
         "reproduced": _verdict(vs("date-late", "date-early"), "positive")},
        {"finding": "update directions of different steps of one run are nearly orthogonal (abs(cos) < 0.1 for most)",
         "paper": "cos < 0.1 for most pairs", "measured":
             f"abs(cos) < 0.1 for {d['steps_within_a_run']['share_abs_cos_below_0.1']:.0%} of "
             f"{d['steps_within_a_run']['n_pairs']} pairs (mean abs(cos) {d['steps_within_a_run']['mean_abs_cos']})",
         "reproduced": "yes" if d["steps_within_a_run"]["share_abs_cos_below_0.1"] > 0.5 else "no"},
        {"finding": "update directions of different seeds of one prompt are nearly orthogonal",
         "paper": "near-orthogonal", "measured":
             f"abs(cos) < 0.1 for {d['seeds_of_a_prompt']['share_abs_cos_below_0.1']:.0%} of "
             f"{d['seeds_of_a_prompt']['n_pairs']} pairs (mean abs(cos) {d['seeds_of_a_prompt']['mean_abs_cos']})",
         "reproduced": "yes" if d["seeds_of_a_prompt"]["share_abs_cos_below_0.1"] > 0.5 else "no"},
        {"finding": "the fixed embedding given DATE's extra compute as extra steps does not close the gap",
         "paper": "DATE > equal-compute fixed", "measured":
             f"DATE - fixed at {tst['equal_compute_steps']} steps: correct {fmt_diff(vs('date', eq))}",
         "reproduced": _verdict(vs("date", eq), "positive")},
    ]
    if edit:
        rows.append({"finding": "DATE in editing (toy edit benchmark): right-and-in-place rate",
                     "paper": "DATE improves edits", "measured": edit["measured"], "reproduced": edit["reproduced"]})
    else:
        rows.append({"finding": "DATE in editing (toy edit benchmark)", "paper": "DATE improves edits",
                     "measured": "see benchmarks/results/toy_edit.md (make toy-edit)", "reproduced": "see there"})
    gradient_pass = {
        "clamped decode - reference (unclamped)": vs("date-clamped-decode", "date"),
        "PIL preprocessing - reference (bilinear)": vs("date-pil-preprocess", "date"),
    }
    return {"findings": rows, "gradient_pass_departures_correct": gradient_pass,
            "date_minus_fixed_correct": {f: date[f"minus_fixed_correct_{f}"] for f in ("all", "two_object",
                                                                                     "three_object")},
            "date_minus_fixed_heldout": date["minus_fixed_heldout"]}


def main(argv: list[str] | None = None) -> int:
    """Run the validation and/or test stage and write the reports."""
    global RESULTS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("all", "val", "test", "report"), default="all",
                   help="report: rewrite the reports from toy_date.json and the current toy_edit.json (no runs)")
    p.add_argument("--heldout-scorer", default="clip:toy-heldout", help="the evaluator beside the judge")
    p.add_argument("--quick", action="store_true", help="a smoke test into --results-dir (few prompts and seeds)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    RESULTS = args.results_dir
    path = RESULTS / "toy_date.json"
    data = json.loads(path.read_text()) if path.is_file() and args.stage in ("test", "report") else {}
    if args.stage == "report":
        if "test" not in data:
            print(f"toy_date: no test results in {path}; run the benchmark first", file=sys.stderr)
            return 2
        _attach_edit(data)
        write_reports(data)
        print(f"toy_date: reports rewritten from {path}")
        return 0
    data["setup"] = (f"Toy model (date_edit/assets/toy), DDIM {STEPS} steps, CFG {GUIDANCE}, fp32 CPU, batches of "
                     f"{CHUNK}; objective clip:toy, held-out scorer clip:toy-heldout, judge: all objects right and "
                     "nothing extra.")
    bench = Bench(args.heldout_scorer, args.quick)
    t0 = time.perf_counter()
    if args.stage in ("all", "val"):
        data["validation"] = validation(bench)
        data["validation_s"] = round(time.perf_counter() - t0, 1)
        write_reports(data)
    if args.stage in ("all", "test"):
        if "validation" not in data:
            print("toy_date: no validation results in benchmarks/results/toy_date.json; run --stage val first",
                  file=sys.stderr)
            return 2
        t1 = time.perf_counter()
        data["test"] = test(bench, data["validation"]["chosen"])
        data["test_s"] = round(time.perf_counter() - t1, 1)
        _attach_edit(data)
        write_reports(data)
    print(f"toy_date: done in {time.perf_counter() - t0:.0f} s; see {RESULTS / 'toy_date.md'}")
    return 0


def _attach_edit(data: dict) -> None:
    """Finding 9's input: the edit benchmark's results as they are now, if ``make toy-edit`` has run."""
    edit = RESULTS / "toy_edit.json"
    if edit.is_file():
        data["edit"] = summarise_edit(json.loads(edit.read_text()))


def summarise_edit(edit: dict) -> dict | None:
    """Finding 9 from benchmarks/results/toy_edit.json (``make toy-edit``): DATE minus fixed, right and in place
    (judge right and box IoU with the source >= 0.5), paired over the same (scene, target, inversion seed)."""
    recs = edit.get("records") if isinstance(edit, dict) else None
    if not recs:
        return None
    fixed = {(r["source"], r["target"], r["seed"]): float(r["kept"]) for r in recs if r["method"] == "fixed"}
    diffs = [float(r["kept"]) - fixed[(r["source"], r["target"], r["seed"])] for r in recs
             if r["method"] == "date" and (r["source"], r["target"], r["seed"]) in fixed]
    diff = _round(mean_ci95(diffs))
    return {"measured": f"DATE (rho {edit.get('settings', '').split('rho ')[-1]}) - fixed: right and in place "
                        f"{fmt_diff(diff)} (n = {diff['n']})",
            "reproduced": _verdict(diff, "positive"), "paired": diff}


if __name__ == "__main__":
    sys.exit(main())
