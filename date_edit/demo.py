"""``make demo``: invert a toy-world sample, edit it with and without DATE, write a labelled grid and a summary.

Runs offline on the CPU in about a minute with the shipped toy model (``--model toy``); without it (not yet
trained) it falls back to the random-weight tiny model and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "toy" / "red_circle.png"
EDITS = ("a blue circle", "a red square")


def render_sample(path: Path = SAMPLE) -> Path:
    """Render the toy sample (a red circle, deterministic) to ``path`` if it is missing."""
    if not path.exists():
        from PIL import Image

        from .toy.world import Scene, ToyObject, render

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(Scene((ToyObject("red", "circle", 30.0, 34.0, 24.0),)))).save(path)
    return path


def _judge(image, prompt: str, source_box=None) -> dict:
    import numpy as np

    from .toy.judge import box_iou, evaluate

    verdict = evaluate(np.asarray(image), prompt)
    objects = [{"colour": d.colour, "shape": d.shape, "box": [round(float(v), 1) for v in d.box]}
               for d in verdict["objects"]]
    out = {"correct": bool(verdict["correct"]), "objects": objects}
    if source_box is not None and verdict["objects"]:
        out["box_iou_with_source"] = round(max(box_iou(source_box, d.box) for d in verdict["objects"]), 3)
    return out


def grid(images: list, labels: list[str], scale: int = 3):
    """A labelled side-by-side grid (PIL image) of equally sized images."""
    from PIL import Image, ImageDraw

    w, h = images[0].size
    cell_w, cell_h, text_h = w * scale, h * scale, 28
    canvas = Image.new("RGB", (cell_w * len(images), cell_h + text_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (img, label) in enumerate(zip(images, labels)):
        canvas.paste(img.resize((cell_w, cell_h), Image.NEAREST), (i * cell_w, text_h))
        for j, line in enumerate(label.split("\n")[:2]):
            draw.text((i * cell_w + 4, 2 + 12 * j), line, fill="black")
    return canvas


def main(argv=None) -> int:
    """Run the demo; print where to look."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="outputs/demo")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--model", default=None, help="default: toy if shipped, else tiny")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()

    from .backbones import TOY_DIR, load_backbone
    from .date import DateConfig
    from .imaging import load_image, save_png, to_pil
    from .pipeline import EditConfig, edit, invert_image
    from .scorers import build_scorer

    model = args.model or ("toy" if (TOY_DIR / "model_index.json").is_file() else "tiny")
    if model == "tiny":
        print("note: the toy model is not in this checkout (make toy-model); using the random-weight tiny model, "
              "whose images are noise", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(model, device="cpu")
    scorer = build_scorer("clip:toy" if model == "toy" else "clip:tiny")
    sample = load_image(render_sample(), size=backbone.native_size, multiple=backbone.size_multiple)
    source_prompt = "a red circle"
    config = EditConfig(steps=args.steps, skip="36%", cfg_source=3.5, cfg_target=7.5, seed=0,
                        date=DateConfig(rho=0.5, update_steps="every:5"))
    t0 = time.perf_counter()
    inversion = invert_image(backbone, sample.pixels, source_prompt=source_prompt, steps=config.steps,
                             cfg_source=config.cfg_source, seed=config.seed)
    inversion_s = time.perf_counter() - t0
    source_image = to_pil(sample.pixels)[0]
    source_judge = _judge(source_image, source_prompt)
    source_box = tuple(source_judge["objects"][0]["box"]) if source_judge["objects"] else None
    images, labels = [source_image], [f"source\n{source_prompt}"]
    summary = {"model": model, "source": str(SAMPLE), "source_prompt": source_prompt, "steps": config.steps,
               "skip": config.resolved_skip(), "cfg_target": config.cfg_target, "inversion_s": inversion_s,
               "source_judge": source_judge, "edits": []}
    save_png(source_image, out / "source.png", overwrite=True)
    for target in EDITS:
        for use_date in (False, True):
            cfg = config if use_date else EditConfig(**{**config.__dict__, "date": None})
            result = edit(backbone, sample.pixels, target, source_prompt=source_prompt, config=cfg,
                          scorer=scorer if use_date else None, inversion=inversion)
            image = to_pil(result.images)[0]
            name = f"{target.replace(' ', '_')}_{'date' if use_date else 'fixed'}.png"
            save_png(image, out / name, overwrite=True)
            verdict = _judge(image, target, source_box)
            with_score = float(scorer(result.images, [target])[0])
            summary["edits"].append({"target": target, "date": use_date, "image": name, "judge": verdict,
                                     "clip_toy": with_score, "update_steps": result.update_steps,
                                     "date_scores": result.trace.scores if result.trace else [],
                                     "embedding_drift": result.embedding_drift,
                                     "sampling_s": result.timings["sampling_s"], "date_s": result.timings["date_s"]})
            ok = "right" if verdict["correct"] else "wrong"
            images.append(image)
            labels.append(f"{target}\n{'DATE' if use_date else 'fixed'}: {ok}")
    grid(images, labels).save(out / "grid.png")
    summary["total_s"] = time.perf_counter() - started
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for e in summary["edits"]:
        verdict = "right" if e["judge"]["correct"] else "wrong"
        print(f"{e['target']:>14} {'DATE ' if e['date'] else 'fixed'}  judge {verdict}"
              f"  IoU {e['judge'].get('box_iou_with_source', '-')}  toy-CLIP {e['clip_toy']:.3f}")
    print(f"done in {summary['total_s']:.0f} s: look at {out / 'grid.png'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
