"""Toy-world editing: does an edit change the asked attribute and keep the object where it was?

    python -m benchmarks.studies.toy_edit            # ~4 min on a 2-core CPU (make toy-edit)
    python -m benchmarks.studies.toy_edit --quick    # 4 scenes x 1 seed, for a smoke run

Sources are single-object scenes rendered from numpy seed 7000 (never used in training); each gets two colour
edits and one shape edit ("a red circle" -> "a blue circle", -> "a red square"), inverted with edit-friendly DDPM
under its own caption and resampled under the target with the CLI's defaults (100 steps, skip 36%, CFG 3.5 -> 15),
with a fixed target embedding and with DATE (clip:toy, rho 0.5, every 10th step). The judge reads each output:
``right`` (it sees exactly the target object), ``iou`` (box IoU of the detected object with the source's box),
``kept`` (right and IoU >= 0.5). Means with 95% CIs, per edit kind and method.

It also records the autoencoder's latent geometry, which decides whether a recolouring can stay in place: for
each ordered pair of colours and each shape, ``|z(c1 here) - z(c2 here)|^2 / |z(c1 here) - z(c2 elsewhere)|^2``.
Above 1, "the other colour somewhere else" is closer in latent space than "the other colour here", so the
denoiser, seeing the source object through the noise, prefers to move it.

Writes benchmarks/results/toy_edit.json and toy_edit.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


import numpy as np
import torch

from date_edit.stats import mean_ci95
from date_edit.toy import world
from date_edit.toy.judge import box_iou, evaluate

RESULTS = Path(__file__).resolve().parents[1] / "results"


def edit_targets(colour: str, shape: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two colour edits and one shape edit of ``a <colour> <shape>``, drawn from ``rng``."""
    colours = [c for c in world.COLOURS if c != colour]
    shapes = [s for s in world.SHAPES if s != shape]
    picked = rng.choice(len(colours), size=2, replace=False)
    out = [("colour", world.prompt_for([(colours[i], shape)])) for i in sorted(picked)]
    out.append(("shape", world.prompt_for([(colour, shapes[int(rng.integers(len(shapes)))])])))
    return out


@torch.no_grad()
def latent_geometry(vae) -> dict:
    """The same-place / elsewhere latent distance ratio over all ordered colour pairs and shapes (see module doc)."""

    def enc(img: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        return vae.encode(x).latent_dist.mean

    ratios = []
    for shape in world.SHAPES:
        for c1 in world.COLOURS:
            here = enc(world.render(world.Scene((world.ToyObject(c1, shape, 30, 34, 22),))))
            for c2 in world.COLOURS:
                if c2 == c1:
                    continue
                same = enc(world.render(world.Scene((world.ToyObject(c2, shape, 30, 34, 22),))))
                away = enc(world.render(world.Scene((world.ToyObject(c2, shape, 14, 14, 22),))))
                ratios.append(float(((here - same) ** 2).sum() / ((here - away) ** 2).sum()))
    r = np.array(ratios)
    return {"pairs": len(r), "mean": round(float(r.mean()), 3), "max": round(float(r.max()), 3),
            "fraction_above_1": round(float((r > 1).mean()), 3)}


def main(argv=None) -> int:
    """Run the benchmark and write the results files."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--scenes", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2, help="inversion seeds per scene")
    p.add_argument("--quick", action="store_true", help="4 scenes x 1 seed")
    p.add_argument("--source-prompt", choices=["caption", "empty"], default="caption",
                   help="invert under the source's caption (the paper's setting) or the empty prompt (the CLI's "
                        "default when --source-prompt is not given)")
    p.add_argument("--out", type=Path, default=RESULTS / "toy_edit.json")
    args = p.parse_args(argv)
    if args.quick:
        args.scenes, args.seeds = 4, 1
    from date_edit.backbones import load_backbone
    from date_edit.date import DateConfig
    from date_edit.pipeline import EditConfig, edit, invert_image
    from date_edit.scorers import build_scorer

    torch.manual_seed(0)
    started = time.perf_counter()
    backbone = load_backbone(args.model, device="cpu")
    scorer = build_scorer("clip:toy")
    rng = np.random.default_rng(7000)
    methods = {"fixed": None, "date": DateConfig(rho=0.5, update_steps="every:10")}
    records = []
    for _ in range(args.scenes):
        scene = world.random_scene(rng, 1)
        obj = scene.objects[0]
        image = world.render(scene)
        caption = world.caption(scene)
        source = caption if args.source_prompt == "caption" else ""
        source_box = obj.box
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        targets = edit_targets(obj.colour, obj.shape, rng)
        for seed in range(args.seeds):
            inversion = invert_image(backbone, pixels, source_prompt=source, steps=100, cfg_source=3.5, seed=seed)
            for kind, target in targets:
                for method, date in methods.items():
                    config = EditConfig(steps=100, skip="36%", cfg_source=3.5, cfg_target=15.0, seed=seed,
                                        date=date)
                    result = edit(backbone, pixels, target, source_prompt=source, config=config,
                                  scorer=scorer if date else None, inversion=inversion)
                    out = (result.images[0].permute(1, 2, 0) * 255).round().byte().numpy()
                    verdict = evaluate(out, target)
                    iou = max([box_iou(source_box, d.box) for d in verdict["objects"]] or [0.0])
                    records.append({"source": caption, "target": target, "kind": kind, "seed": seed,
                                    "method": method, "right": bool(verdict["correct"]), "iou": round(iou, 3),
                                    "kept": bool(verdict["correct"] and iou >= 0.5)})
        print(f"{len(records)} edits, {time.perf_counter() - started:.0f} s", flush=True)
    table = {}
    for kind in ("colour", "shape"):
        for method in methods:
            rows = [r for r in records if r["kind"] == kind and r["method"] == method]
            table[f"{kind}/{method}"] = {k: mean_ci95([float(r[k]) for r in rows]) for k in ("right", "iou", "kept")}
            table[f"{kind}/{method}"]["n"] = len(rows)
    report = {
        "command": "python -m benchmarks.studies.toy_edit" + (" --quick" if args.quick else "")
        + (" --source-prompt empty" if args.source_prompt == "empty" else ""),
        "model": args.model, "settings": "edit-friendly DDPM, 100 steps, skip 36%, CFG 3.5 -> 15, source prompt "
        + ("= the source caption" if args.source_prompt == "caption" else "empty")
        + "; DATE: clip:toy, rho 0.5, every:10", "scenes_numpy_seed": 7000,
        "scenes": args.scenes, "inversion_seeds": list(range(args.seeds)), "background": list(world.BACKGROUND),
        "latent_geometry": latent_geometry(backbone.vae), "results": table,
        "wall_s": round(time.perf_counter() - started, 1), "machine": f"CPU, {torch.get_num_threads()} threads",
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.is_file():  # keep the comparison with the model this one replaced (added by hand, see its command)
        earlier = json.loads(args.out.read_text()).get("previous_model")
        if earlier:
            report["previous_model"] = earlier
    args.out.write_text(json.dumps(report, indent=1))
    lines = ["# Toy world: editing keeps the object in place?", "",
             f"`{report['command']}`: {args.scenes} single-object scenes x {args.seeds} inversion seeds; "
             f"{report['settings']}. Mean ± 95% CI.", "",
             "| edit | method | n | judge right | box IoU with source | right and IoU >= 0.5 |",
             "|---|---|---|---|---|---|"]
    for key, row in table.items():
        kind, method = key.split("/")
        cells = [f"{row[k]['mean']:.2f} ± {row[k]['ci95'] or 0:.2f}" for k in ("right", "iou", "kept")]
        lines.append(f"| {kind} | {method} | {row['n']} | " + " | ".join(cells) + " |")
    g = report["latent_geometry"]
    lines += ["", f"Latent geometry of the autoencoder ({g['pairs']} colour pairs x shapes): same-place / elsewhere "
              f"distance ratio mean {g['mean']}, max {g['max']}, above 1 for {g['fraction_above_1']:.0%}.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
