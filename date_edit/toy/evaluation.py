"""The toy model's evaluation: text-to-image generation with the saved folder through diffusers'
``StableDiffusionPipeline`` on the CPU, judged per prompt (single, two and three objects; see
:mod:`date_edit.toy.judge`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from . import world
from .judge import evaluate


def load_pipeline(path: str | os.PathLike):
    """A CPU fp32 ``StableDiffusionPipeline`` over the saved toy folder (no safety checker)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path), safety_checker=None, feature_extractor=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], seed: int, steps: int = 50, guidance: float = 7.5) -> np.ndarray:
    """Images ``(len(prompts), 64, 64, 3)`` uint8; every prompt starts from the same noise, drawn from ``seed``."""
    gens = [torch.Generator("cpu").manual_seed(seed) for _ in prompts]
    out = pipe(
        prompt=prompts,
        height=world.IMAGE_SIZE,
        width=world.IMAGE_SIZE,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=gens,
        output_type="np",
    ).images
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def evaluate_model(path: str | os.PathLike, cfg, grid_path: Path | None = None) -> dict:
    """Single-object accuracy (15 prompts x single seeds); two-object both-correct rate in canonical and in swapped
    order (the same 60 scenes named both ways) and three-object all-correct rate (60 prompts), each x two seeds.
    ``cfg`` is the model's :class:`~date_edit.toy.train.ToyTrainConfig` (its ``eval_*`` fields)."""
    pipe = load_pipeline(path)
    singles = world.single_object_prompts()
    families = {"two_object": world.two_object_prompts("canonical"),
                "two_object_swapped": world.two_object_prompts("swapped"),
                "three_object": world.three_object_prompts()}
    rows, per_prompt = [], {}
    single_hits = []
    for seed in cfg.eval_single_seeds:
        imgs = generate(pipe, singles, seed, cfg.eval_steps, cfg.eval_guidance)
        rows.append(np.concatenate(list(imgs), axis=1))
        for p, im in zip(singles, imgs):
            ok = evaluate(im, p)["correct"]
            single_hits.append(ok)
            per_prompt.setdefault(p, []).append(bool(ok))
    out = {
        "sampler": f"DDIM {cfg.eval_steps} steps (eta 0), CFG {cfg.eval_guidance}, StableDiffusionPipeline, fp32 CPU",
        "noise": "torch.Generator('cpu').manual_seed(seed) per image: every prompt at a seed starts from one noise",
        "single_object_prompts": singles,
        "single_object_seeds": list(cfg.eval_single_seeds),
        "single_object_accuracy": float(np.mean(single_hits)),
        "single_object_ci95": _binomial_ci95(single_hits),
        "single_object_n": len(single_hits),
    }
    for family, prompts in families.items():
        hits, per_object = [], []
        for seed in cfg.eval_two_seeds:
            imgs = generate(pipe, prompts, seed, cfg.eval_steps, cfg.eval_guidance)
            rows.append(np.concatenate(list(imgs[:15]), axis=1))
            for p, im in zip(prompts, imgs):
                r = evaluate(im, p)
                hits.append(r["correct"])
                per_object.extend(r["per_object"])
                per_prompt.setdefault(p, []).append(bool(r["correct"]))
        out[f"{family}_prompts"] = {
            "two_object": "world.two_object_prompts('canonical') (60)",
            "two_object_swapped": "world.two_object_prompts('swapped') (the same 60 scenes, objects named the other "
                                  "way round)",
            "three_object": "world.three_object_prompts() (60)"}[family]
        out[f"{family}_seeds"] = list(cfg.eval_two_seeds)
        out[f"{family}_all_correct"] = float(np.mean(hits))
        out[f"{family}_all_correct_ci95"] = _binomial_ci95(hits)
        out[f"{family}_per_object_hit_rate"] = float(np.mean(per_object))
        out[f"{family}_n"] = len(hits)
    out["two_object_both_correct"] = out["two_object_all_correct"]  # the historical name
    if grid_path is not None:
        from PIL import Image

        Image.fromarray(np.concatenate(rows, axis=0)).save(grid_path)
    out["per_prompt"] = per_prompt
    return out


def _binomial_ci95(hits: list) -> float:
    """Half-width of the normal-approximation 95% interval of a rate."""
    p, n = float(np.mean(hits)), len(hits)
    return round(1.96 * math.sqrt(p * (1 - p) / n), 4) if n else float("nan")
