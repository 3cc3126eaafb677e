"""The coco5k suite: 5,000 COCO 2014 validation captions, by CLIP score (open_clip ViT-g-14) and ImageReward."""

from __future__ import annotations

import csv

import torch

from benchmarks.suites.base import DATA, Item
from benchmarks.suites.generation import DEFAULT_STEPS, TABLES, check, measure, run_item, write_tables
from date_edit.choices import OFFLINE_MODELS

__all__ = ["DEFAULT_STEPS", "TABLES", "Metrics", "check", "items", "measure", "run_item", "write_tables"]


def items(limit, category, data) -> list[Item]:
    """The captions of ``data/coco2014_val_captions_5k.csv``."""
    with open(DATA / "coco2014_val_captions_5k.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [Item(id=f"coco{i:04d}", prompt=r["caption"].strip(), group="coco") for i, r in enumerate(rows)]


class Metrics:
    """CLIP score and, where it loads, ImageReward."""

    def __init__(self, model: str, device, eval_clip, captioner) -> None:
        from date_edit.scorers import build_scorer

        offline = model in OFFLINE_MODELS
        self.clip = build_scorer("clip:tiny" if offline else (eval_clip or "clip:openclip/ViT-g-14/laion2b_s12b_b42k"),
                                 device=device)
        self.imagereward = None
        try:
            self.imagereward = build_scorer("imagereward:tiny" if offline else "imagereward", device=device)
        except Exception as exc:  # reported, not fatal: CLIP score still runs
            print(f"note: ImageReward metric unavailable: {str(exc).splitlines()[0]}")

    def __call__(self, images: torch.Tensor, item: Item, source) -> dict:
        """Metrics of one image."""
        with torch.no_grad():
            out = {"clip": float(self.clip(images, [item.prompt])[0])}
            if self.imagereward is not None:
                out["imagereward"] = float(self.imagereward(images, [item.prompt])[0])
            return out
