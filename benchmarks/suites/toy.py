"""The toy suite: the toy world's two-object prompts, judged by the toy world's own judge and its CLIP."""

from __future__ import annotations

import torch

from benchmarks.suites.base import Item
from benchmarks.suites.generation import DEFAULT_STEPS, TABLES, check, measure, run_item, write_tables

__all__ = ["DEFAULT_STEPS", "TABLES", "Metrics", "check", "items", "measure", "run_item", "write_tables"]


def items(limit, category, data) -> list[Item]:
    """Every two-object prompt of the toy world."""
    from date_edit.toy.world import two_object_prompts

    return [Item(id=f"toy{i:03d}", prompt=p, group="two_objects") for i, p in enumerate(two_object_prompts())]


class Metrics:
    """Both objects right (the judge) and the toy CLIP score."""

    def __init__(self, model: str, device, eval_clip, captioner) -> None:
        from date_edit.scorers import build_scorer
        from date_edit.toy.judge import evaluate

        self.judge = evaluate
        self.clip = build_scorer("clip:toy" if model == "toy" else "clip:tiny", device=device)

    def __call__(self, images: torch.Tensor, item: Item, source) -> dict:
        """Metrics of one image."""
        import numpy as np

        from date_edit.imaging import to_pil

        with torch.no_grad():
            verdict = self.judge(np.asarray(to_pil(images)[0]), item.prompt)
            return {"both_correct": float(bool(verdict["correct"])),
                    "clip_toy": float(self.clip(images, [item.prompt])[0])}
