"""How often the toy captioner (``--captioner toy``, :mod:`date_edit.toy.captioner`) names a toy photo exactly.

    python -m benchmarks.studies.toy_captioner            # val and test, the design's ablation beside it

Exact = the caption equals ``world.caption(scene)`` (canonical order). Photos, per split (val, test):

* ``source``: the two-object scenes of the toy edit study (:mod:`benchmarks.studies.toy_edit_scenes`, its
  ``SPLIT_SEEDS`` and ``make_cases``): the study's first 20 scenes (the split it edits), and the first 100 (the
  same stream, for a tighter interval);
* ``target``: each case's two edited target scenes (the edited object recoloured or reshaped in place);
* ``single``: 60 single-object scenes (``world.random_scene(rng, 1)``, seed: the split's + 1);
* ``mixed``: 150 scenes of 1, 2 and 3 objects in turn, any colours and shapes, repeats allowed (seed: the split's
  + 2): not a set the brief names, it shows what the prior for fewer objects costs on scenes that repeat an object.

Designs, all with the toy model's own CLIP (``clip:toy``) over the same 815 canonical captions: ``plain`` (the caption
nearest the photo), ``prior`` (plain, less the prior for fewer and unrepeated objects), ``views`` (mean over the ten
shifted and mirrored views), ``views+prior`` (the captioner's). The design was chosen on val; test is reported.
Seconds per image: one 64-px photo per call, after the one-time text embeddings (reported apart).

Writes benchmarks/results/toy_captioner.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.studies.toy_edit_scenes import SPLIT_SEEDS, make_cases
from date_edit.toy import world

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPLITS = ("val", "test")
STUDY_SCENES = 20  # the toy edit study's split size
MORE_SCENES = 100
N_SINGLE, N_MIXED = 60, 150
DESIGNS = ("plain", "prior", "views", "views+prior")
CHOSEN = "views+prior"


def target_scenes(case) -> list[world.Scene]:
    """The case's two edited scenes (colour, then shape): the edited object changed in place, the other kept."""
    out = []
    for kind in ("colour", "shape"):
        objects = list(case.order)
        old = objects[case.edited]
        colour, shape = case.target(kind)
        objects[case.edited] = world.ToyObject(colour, shape, old.cx, old.cy, old.size)
        out.append(world.Scene(tuple(objects)))
    return out


def photo_sets(split: str) -> dict[str, list[world.Scene]]:
    """The scenes of each set of ``split`` (module docstring)."""
    cases = make_cases(split, MORE_SCENES)
    seed = SPLIT_SEEDS[split]
    rng_single, rng_mixed = np.random.default_rng(seed + 1), np.random.default_rng(seed + 2)
    return {
        f"source_{STUDY_SCENES}": [c.scene for c in cases[:STUDY_SCENES]],
        f"target_{STUDY_SCENES}": [s for c in cases[:STUDY_SCENES] for s in target_scenes(c)],
        f"source_{MORE_SCENES}": [c.scene for c in cases],
        f"target_{MORE_SCENES}": [s for c in cases for s in target_scenes(c)],
        "single": [world.random_scene(rng_single, 1) for _ in range(N_SINGLE)],
        "mixed": [world.random_scene(rng_mixed, 1 + i % 3) for i in range(N_MIXED)],
    }


def to_tensor(scenes: list[world.Scene]) -> torch.Tensor:
    """Rendered scenes as ``(B, 3, 64, 64)`` in [0, 1]."""
    arr = np.stack([world.render(s) for s in scenes])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def design_scores(captioner, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(B, N)`` caption scores of every design (module docstring); ``views+prior`` is the captioner's own."""
    from date_edit.scorers.preprocess import center_crop, resize_shorter
    from date_edit.toy.captioner import SHIFT, views

    size = int(captioner.clip.image_size)
    x = center_crop(resize_shorter(images, size), size)
    text = captioner.text_features()
    stack = views(x, SHIFT)
    n_views, batch = stack.shape[:2]
    sims = (captioner.clip.image_features(stack.reshape(n_views * batch, *stack.shape[2:])) @ text.T)
    sims = sims.reshape(n_views, batch, -1)
    prior = captioner.prior
    out = {"plain": sims[0], "views": sims.mean(dim=0)}
    out["prior"], out["views+prior"] = out["plain"] + prior, out["views"] + prior
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a proportion ``k / n``."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3))


def seconds_per_image(captioner, scenes: list[world.Scene], repeats: int = 3) -> dict:
    """Median and max seconds of ``captioner`` on one 64-px photo per call (text embeddings already made)."""
    captioner(to_tensor(scenes[:1]))  # warm-up: the first call pays for lazy set-up
    times = []
    for _ in range(repeats):
        for scene in scenes:
            x = to_tensor([scene])
            started = time.perf_counter()
            captioner(x)
            times.append(time.perf_counter() - started)
    return {"median_s": round(float(np.median(times)), 4), "max_s": round(float(np.max(times)), 4),
            "calls": len(times)}


def run(splits=SPLITS) -> dict:
    """Every split's exact-caption rates by design and set, the chosen design's misses, and the timings."""
    from date_edit.toy.captioner import EXTRA_OBJECT_PENALTY, REPEAT_PENALTY, SHIFT, ToyCaptioner

    started = time.perf_counter()
    captioner = ToyCaptioner()
    text_started = time.perf_counter()
    captioner.text_features()
    text_s = time.perf_counter() - text_started
    report = {
        "command": "python -m benchmarks.studies.toy_captioner " + " ".join(sys.argv[1:]),
        "machine": {"machine": platform.machine(), "processor": platform.processor() or None,
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "captioner": {"clip": captioner.clip.name, "candidates": len(captioner.captions), "shift_px": SHIFT,
                      "views": 10, "extra_object_penalty": EXTRA_OBJECT_PENALTY, "repeat_penalty": REPEAT_PENALTY},
        "chosen": CHOSEN, "chosen_on": "val",
        "text_embeddings_s": round(text_s, 2),
        "splits": {},
    }
    for split in splits:
        sets = photo_sets(split)
        rows, misses = {}, {}
        for name, scenes in sets.items():
            truth = [world.caption(s) for s in scenes]
            scores = {}
            for i in range(0, len(scenes), 50):
                for design, s in design_scores(captioner, to_tensor(scenes[i:i + 50])).items():
                    scores.setdefault(design, []).append(s)
            rows[name] = {}
            for design in DESIGNS:
                best = torch.cat(scores[design]).argmax(dim=-1)
                said = [captioner.captions[int(b)] for b in best]
                k = sum(a == b for a, b in zip(said, truth))
                rows[name][design] = {"exact": k, "n": len(scenes), "rate": round(k / len(scenes), 4),
                                      "wilson95": wilson(k, len(scenes))}
                if design == CHOSEN:
                    misses[name] = [{"truth": t, "caption": c} for t, c in zip(truth, said) if t != c]
        # the captioner itself (not design_scores) must agree with the chosen design
        check = sets["single"][:5] + sets[f"source_{STUDY_SCENES}"][:5]
        agree = captioner(to_tensor(check)) == [
            captioner.captions[int(i)] for i in design_scores(captioner, to_tensor(check))[CHOSEN].argmax(-1)]
        report["splits"][split] = {"seed": SPLIT_SEEDS[split], "rates": rows, "chosen_misses": misses,
                                   "captioner_matches_chosen_design": bool(agree)}
    timing_scenes = photo_sets("val")["source_20"][:20]
    threads = torch.get_num_threads()
    report["load_average_before_timing"] = [round(v, 2) for v in os.getloadavg()]
    report["seconds_per_image"] = seconds_per_image(captioner, timing_scenes)
    if threads > 1:  # one thread as well: on a busy machine torch's threads wait on each other
        torch.set_num_threads(1)
        try:
            report["seconds_per_image_1_thread"] = seconds_per_image(captioner, timing_scenes)
        finally:
            torch.set_num_threads(threads)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def markdown(report: dict) -> str:
    """The report as a page."""
    m, c = report["machine"], report["captioner"]
    lines = ["# The toy captioner: exact captions", "",
             f"`{report['command'].strip()}`. The toy captioner (`--captioner toy`, the toy model's default for "
             f"`--source-prompt auto`) with the toy model's own CLIP (`{c['clip']}`; never the held-out CLIP or "
             f"the judge), over the {c['candidates']} canonical captions of 1-3 objects. Exact = the caption equals "
             "`world.caption(scene)` (canonical order). Rate with its Wilson 95% interval.", "",
             "Designs: `plain` = the caption nearest the photo; `prior` = plain less "
             f"{c['extra_object_penalty']} per object past the first and {c['repeat_penalty']} for a repeated object; "
             f"`views` = mean cosine over {c['views']} views (as is, shifted {c['shift_px']} px left/right/up/down, "
             "each mirrored); `views+prior` = the captioner's (chosen on val, then test run once).", "",
             "Sets: `source_20` / `target_20` = the toy edit study's split (its 20 two-object scenes and their 40 "
             "edited targets), `source_100` / `target_100` = the first 100 scenes of the same stream, `single` = 60 "
             "one-object scenes, `mixed` = 150 scenes of 1-3 objects with repeats allowed (not an edit-study set: "
             "it shows what the prior costs where objects repeat).", ""]
    for split, data in report["splits"].items():
        lines += [f"## {split} (seed {data['seed']})", "", "| set | n | " + " | ".join(DESIGNS) + " |",
                  "|---|---|" + "---|" * len(DESIGNS)]
        for name, row in data["rates"].items():
            cells = [f"{r['rate']:.3f} [{r['wilson95'][0]:.2f}, {r['wilson95'][1]:.2f}]" for r in row.values()]
            lines.append(f"| {name} | {row[CHOSEN]['n']} | " + " | ".join(cells) + " |")
        lines += ["", f"Misses of `{CHOSEN}`:", ""]
        shown = False
        for name, misses in data["chosen_misses"].items():
            if name.endswith(f"_{STUDY_SCENES}"):
                continue  # a prefix of the 100-scene sets: listed there
            for miss in misses:
                lines.append(f"- {name}: \"{miss['truth']}\" read as \"{miss['caption']}\"")
                shown = True
        if not shown:
            lines.append("- none")
        lines.append("")
    t = report["seconds_per_image"]
    one = report.get("seconds_per_image_1_thread")
    lines += [f"Seconds per 64-px photo (one per call, {t['calls']} calls, {m['torch_threads']} torch threads): "
              f"median {t['median_s']:.4f}, max {t['max_s']:.4f}"
              + (f"; with 1 thread: median {one['median_s']:.4f}, max {one['max_s']:.4f}" if one else "")
              + f". The candidates' text embeddings, once per process: {report['text_embeddings_s']:.1f} s. "
              f"Machine: {m['machine']}, {m['cpu_count']} cores, torch {m['torch']}; load average before timing "
              f"{', '.join(map(str, report['load_average_before_timing']))} (a shared machine). "
              f"Wall time {report['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    """Run the study and write benchmarks/results/toy_captioner.{json,md}."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", choices=[*SPLITS, "both"], default="both", help="Which split(s) to run.")
    p.add_argument("--out", type=Path, default=RESULTS / "toy_captioner", help="Output path stem.")
    args = p.parse_args(argv)
    report = run(SPLITS if args.split == "both" else (args.split,))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
