"""The ane suite: Attend-and-Excite's prompts (animals, animals and objects, objects), by its text-text and
captioner metrics."""

from __future__ import annotations

import torch

from benchmarks.suites.base import Item
from benchmarks.suites.generation import DEFAULT_STEPS, TABLES, check, measure, run_item, write_tables
from date_edit.choices import OFFLINE_MODELS

__all__ = ["DEFAULT_STEPS", "TABLES", "Metrics", "check", "items", "measure", "run_item", "write_tables"]


def items(limit, category: str, data) -> list[Item]:
    """The prompts of ``category`` (animals, animals_objects, objects or all)."""
    from date_edit.multiconcept import load_ane_prompts

    return [Item(id=f"{c}{i:03d}", prompt=p, group=c)
            for c, ps in load_ane_prompts(category).items() for i, p in enumerate(ps)]


class Metrics:
    """Full-prompt, min-object and text-text similarity (a CLIP and a captioner: ``captioner`` or the model's
    default, :func:`date_edit.captioning.default_captioner`; ``none`` skips text-text). A captioner whose weights
    cannot be loaded stops the run with its one-line :class:`~date_edit.errors.CaptionerError`."""

    def __init__(self, model: str, device, eval_clip, captioner) -> None:
        from date_edit.multiconcept import TemplateTextEncoder, load_captioner
        from date_edit.scorers import build_scorer

        offline = model in OFFLINE_MODELS
        clip = build_scorer("clip:tiny" if offline else (eval_clip or "clip:openai/clip-vit-base-patch16"),
                            device=device)
        self.encoder = TemplateTextEncoder(clip)
        from date_edit.captioning import default_captioner

        self.captioner = load_captioner(captioner or default_captioner(model), device=device)

    def __call__(self, images: torch.Tensor, item: Item, source) -> dict:
        """Metrics of one image."""
        from date_edit.multiconcept import ane_metrics

        with torch.no_grad():
            m = ane_metrics(images, item.prompt, self.encoder, self.captioner)[0]
            return {"full_prompt": m.full_prompt, "min_object": m.min_object, "text_text": m.text_text}
