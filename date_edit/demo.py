"""``make demo``: edit a toy-world sample as the bare command does (no source prompt: the photo is captioned, and
the default controls, Prompt-to-Prompt and the automatic mask, keep the rest of it), with and without DATE; write a
labelled grid and a summary; then edit one object of a two-object scene with and without the structure controls.

Runs offline on the CPU in about a minute with the shipped toy model (``--model toy``); without it (not yet
trained) it falls back to the random-weight tiny model and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
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


TWO_OBJECTS = (("red", "circle", 18.0, 20.0, 22.0), ("blue", "square", 44.0, 42.0, 20.0))


def _two_object_edit(backbone, out: Path, steps: int) -> dict:
    """Recolour the circle of a red circle and a blue square, with no control, an automatic mask, a user mask (the
    circle's box, dilated 3 px) and Prompt-to-Prompt; the judge reads each result; writes grid_two_objects.png."""
    import torch
    from PIL import Image

    from .imaging import save_png, to_pil
    from .masks import MaskConfig, coverage
    from .p2p import P2PConfig
    from .pipeline import EditConfig, edit, invert_image
    from .toy.world import Scene, ToyObject, phrase, render

    objects = [ToyObject(*o) for o in TWO_OBJECTS]
    pixels = torch.from_numpy(render(Scene(tuple(objects)))).permute(2, 0, 1)[None].float() / 255.0
    source = phrase([(o.colour, o.shape) for o in objects])
    target = phrase([("green", "circle"), ("blue", "square")])
    x0, y0, x1, y1 = (int(round(v)) for v in objects[0].box)
    user_mask = torch.zeros(1, 1, *pixels.shape[-2:])
    user_mask[..., max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = 1.0
    inversion = invert_image(backbone, pixels, source_prompt=source, steps=steps, cfg_source=3.5, seed=0)
    controls = {"none": (None, None), "mask auto": (MaskConfig("auto"), None),
                "mask user": (MaskConfig("user"), None), "p2p": (None, P2PConfig())}
    source_image = to_pil(pixels)[0]
    images, labels = [source_image], [f"source\n{source}"]
    report = {"source_prompt": source, "target": target, "edits": []}
    for name, (mask_config, p2p) in controls.items():
        config = EditConfig(steps=steps, skip="36%", cfg_source=3.5, cfg_target=15.0, seed=0, date=None,
                            mask=mask_config, p2p=p2p)
        result = edit(backbone, pixels, target, source_prompt=source, config=config, inversion=inversion,
                      mask=user_mask if name == "mask user" else None)
        image = to_pil(result.images)[0]
        file = f"two_objects_{name.replace(' ', '_')}.png"
        save_png(image, out / file, overwrite=True)
        verdict = _judge(image, target)
        report["edits"].append({"control": name, "image": file, "judge": verdict,
                                "mask_coverage": coverage(result.mask)})
        images.append(image)
        labels.append(f"{name}\n{'right' if verdict['correct'] else 'wrong'}")
    canvas = grid(images, labels)
    title = Image.new("RGB", (canvas.width, 16), "white")
    from PIL import ImageDraw

    ImageDraw.Draw(title).text((4, 2), f"{source} -> {target} (fixed embedding)", fill="black")
    both = Image.new("RGB", (canvas.width, canvas.height + 16), "white")
    both.paste(title, (0, 0))
    both.paste(canvas, (0, 16))
    both.save(out / "grid_two_objects.png")
    return report


def outside_mask_exact(result, pixels):
    """The share of the pixels outside the edit's mask whose 8-bit RGB equals the input's (None without a mask)."""
    if result.mask is None:
        return None
    outside = (result.mask[0, 0] < 0.5)
    if not bool(outside.any()):
        return 1.0
    a = (result.images[0].clamp(0, 1) * 255).round()
    b = (pixels[0].cpu().clamp(0, 1) * 255).round()
    same = (a == b).all(dim=0)
    return round(float(same[outside].float().mean()), 6)


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
    from .controls import ran_controls
    from .date import DateConfig
    from .imaging import load_image, save_png, to_pil
    from .pipeline import EditConfig, caption_sources, edit, invert_image
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
    # the bare command: no source prompt given, so the photo is captioned (once: the inversion is shared)
    t0 = time.perf_counter()
    (source_prompt,), caption_s = caption_sources(backbone, sample.pixels, ["auto"])
    # the model's defaults (the CLI's): skip 36%, CFG 3.5 -> 7.5 under the default controls
    config = EditConfig(steps=args.steps, seed=0, date=DateConfig(rho=0.5, update_steps="every:5"))
    inversion = invert_image(backbone, sample.pixels, source_prompt=source_prompt, steps=config.steps,
                             cfg_source=3.5, seed=config.seed)
    inversion_s = time.perf_counter() - t0 - caption_s
    source_image = to_pil(sample.pixels)[0]
    source_judge = _judge(source_image, source_prompt)
    source_box = tuple(source_judge["objects"][0]["box"]) if source_judge["objects"] else None
    images, labels = [source_image], [f"source, captioned\n{source_prompt}"]
    summary = {"model": model, "source": str(SAMPLE), "source_prompt": source_prompt,
               "source_prompt_from": "caption", "caption_s": caption_s, "steps": config.steps,
               "inversion_s": inversion_s, "source_judge": source_judge, "edits": []}
    save_png(source_image, out / "source.png", overwrite=True)
    for target in EDITS:
        for use_date in (False, True):
            cfg = config if use_date else replace(config, date=None)
            result = edit(backbone, sample.pixels, target, source_prompt=source_prompt, config=cfg,
                          scorer=scorer if use_date else None, inversion=inversion)
            image = to_pil(result.images)[0]
            name = f"{target.replace(' ', '_')}_{'date' if use_date else 'fixed'}.png"
            save_png(image, out / name, overwrite=True)
            verdict = _judge(image, target, source_box)
            with_score = float(scorer(result.images, [target])[0])
            summary.update(skip=result.config["skip"], cfg_target=result.config["cfg_target"])
            summary["edits"].append({"target": target, "date": use_date, "image": name, "judge": verdict,
                                     "controls": ran_controls(result.config),
                                     "outside_mask_exact": outside_mask_exact(result, sample.pixels),
                                     "clip_toy": with_score, "update_steps": result.update_steps,
                                     "date_scores": result.trace.scores if result.trace else [],
                                     "embedding_drift": result.embedding_drift,
                                     "sampling_s": result.timings["sampling_s"], "date_s": result.timings["date_s"]})
            ok = "right" if verdict["correct"] else "wrong"
            images.append(image)
            labels.append(f"{target}\n{'DATE' if use_date else 'fixed'}: {ok}")
    grid(images, labels).save(out / "grid.png")
    summary["two_objects"] = _two_object_edit(backbone, out, args.steps)
    summary["total_s"] = time.perf_counter() - started
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"source prompt (captioned): {source_prompt!r}")
    for e in summary["edits"]:
        verdict = "right" if e["judge"]["correct"] else "wrong"
        print(f"{e['target']:>14} {'DATE ' if e['date'] else 'fixed'}  judge {verdict}"
              f"  IoU {e['judge'].get('box_iou_with_source', '-')}  toy-CLIP {e['clip_toy']:.3f}"
              f"  outside the mask exact {e['outside_mask_exact']}")
    for e in summary["two_objects"]["edits"]:
        print(f"{e['control']:>14} fixed  judge {'right' if e['judge']['correct'] else 'wrong'}"
              f"  mask coverage {e['mask_coverage']}")
    print(f"done in {summary['total_s']:.0f} s: look at {out / 'grid.png'}, {out / 'grid_two_objects.png'} and "
          f"{out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
