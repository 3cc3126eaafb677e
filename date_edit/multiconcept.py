"""Multi-concept prompts: the Attend-and-Excite (AnE) prompt set, its metrics and its runs (the min-concept
objective itself is a scorer: :mod:`date_edit.scorers.minconcept`, re-exported here).

Metrics follow the A&E protocol (Chefer et al., SIGGRAPH 2023): CLIP image-text similarity of the full
prompt and the minimum over its concepts (prompt split on " and " / " with "), each text embedding the
average over the 80 ImageNet prompt templates; and text-text CLIP similarity between the prompt and a
BLIP caption of the image.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .choices import ANE_CATEGORIES
from .errors import ConfigError
from .scorers.minconcept import MinConceptScorer, split_concepts  # noqa: F401 - MinConceptScorer: re-exported
from .stats import mean_ci95

ANE_PATH = Path(__file__).parent / "assets" / "data" / "ane_prompts.json"

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
assert len(IMAGENET_TEMPLATES) == 80


def load_ane_prompts(category: str = "all") -> dict[str, list[str]]:
    """The 276 AnE prompts by category (``animals``, ``animals_objects``, ``objects`` or ``all``)."""
    data = json.loads(ANE_PATH.read_text())
    if category == "all":
        return {c: list(data[c]) for c in ANE_CATEGORIES}
    if category not in ANE_CATEGORIES:
        raise ConfigError("category", f"{category!r} is unknown: use {', '.join(ANE_CATEGORIES)} or all")
    return {category: list(data[category])}


def _strip_article(text: str) -> str:
    return re.sub(r"^(a|an|the)\s+", "", text.strip(), flags=re.I)


def template_texts(text: str) -> list[str]:
    """The 80 template sentences for ``text``; its leading article is dropped so "a {}" reads "a cat"."""
    core = _strip_article(text)
    return [t.format(core) for t in IMAGENET_TEMPLATES]


class TemplateTextEncoder:
    """CLIP text features averaged over the ImageNet templates (cached per text)."""

    def __init__(self, clip_scorer) -> None:
        self.clip = clip_scorer
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, text: str) -> torch.Tensor:
        """Normalised mean template embedding ``(P,)``."""
        if text not in self._cache:
            feats = self.clip.text_features(template_texts(text))
            mean = feats.mean(dim=0)
            self._cache[text] = mean / mean.norm()
        return self._cache[text]


@dataclass
class ConceptMetrics:
    """Per-image AnE metrics."""

    full_prompt: float  # cos(image, templates(prompt))
    min_object: float  # min over concepts of cos(image, templates(concept))
    per_concept: list[float]
    text_text: Optional[float] = None  # cos(text(prompt), text(caption)) when a captioner ran
    caption: Optional[str] = None


def ane_metrics(
    images: torch.Tensor, prompt: str, encoder: TemplateTextEncoder, captioner=None
) -> list[ConceptMetrics]:
    """AnE metrics for ``(B, 3, H, W)`` images in [0, 1] of one prompt."""
    with torch.no_grad():
        img = encoder.clip.image_features(images)  # (B, P) normalised
        full = img @ encoder(prompt).to(img)
        concepts = split_concepts(prompt)
        per = torch.stack([img @ encoder(c).to(img) for c in concepts], dim=1)  # (B, K)
        captions = captioner(images) if captioner is not None else [None] * images.shape[0]
        out = []
        for i in range(images.shape[0]):
            tt = None
            if captions[i] is not None:
                a = encoder.clip.text_features([prompt])[0]
                b = encoder.clip.text_features([captions[i]])[0]
                tt = float((a * b).sum())
            out.append(ConceptMetrics(float(full[i]), float(per[i].min()), [float(v) for v in per[i]], tt,
                                      captions[i]))
    return out


def load_captioner(spec: Optional[str], device=torch.device("cpu")):
    """The captioner of the text-text metric (:func:`date_edit.captioning.build_captioner`: ``blip``, ``blip:base``,
    ``blip:tiny``, ``toy``, a folder, a plugin), or None for ``none`` (the metric is then skipped).

    Raises:
        CaptionerError: its weights cannot be loaded (one line: how to get them).
        ConfigError: an unknown captioner name.
    """
    if spec in (None, "none", ""):
        return None
    from .captioning import build_captioner

    return build_captioner(spec, device=device)


def run_ane(
    backbone,
    prompts: dict[str, list[str]],
    seeds: Sequence[int],
    *,
    config,
    scorer,
    encoder: TemplateTextEncoder,
    captioner=None,
    out_dir: Path,
    judge=None,
    progress=None,
) -> dict:
    """Generate every prompt x seed (fixed embedding or DATE per ``config``), save images, score them.

    Writes ``out_dir/<category>/<prompt slug>/s<seed>.png``, one JSON line per image to
    ``out_dir/records.jsonl`` and returns the summary (per category and overall: mean and 95% CI of each
    metric). ``judge(image_uint8_hwc, prompt) -> dict`` adds a ``both_correct`` metric (the toy world).
    """
    from dataclasses import replace

    import numpy as np

    from .imaging import save_png, to_pil
    from .pipeline import generate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    total = sum(len(v) for v in prompts.values()) * len(seeds)
    done = 0
    with open(out_dir / "records.jsonl", "w") as log:
        for category, plist in prompts.items():
            for prompt in plist:
                slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60]
                for seed in seeds:
                    result = generate(backbone, prompt, config=replace(config, seed=int(seed)), scorer=scorer)
                    metrics = ane_metrics(result.images, prompt, encoder, captioner)[0]
                    path = out_dir / category / slug / f"s{seed}.png"
                    image = to_pil(result.images)[0]
                    save_png(image, path, overwrite=True)
                    rec = {"category": category, "prompt": prompt, "seed": int(seed), "image": str(path),
                           "full_prompt": metrics.full_prompt, "min_object": metrics.min_object,
                           "per_concept": metrics.per_concept, "text_text": metrics.text_text,
                           "caption": metrics.caption, "update_steps": result.update_steps,
                           "seconds": result.timings["total_s"]}
                    if judge is not None:
                        verdict = judge(np.asarray(image), prompt)
                        rec["both_correct"] = float(bool(verdict.get("correct")))
                    records.append(rec)
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                    done += 1
                    if progress:
                        progress("ane", done, total)
    return summarize(records)


def summarize(records: Sequence[dict]) -> dict:
    """Mean and 95% CI of each metric, per category and overall."""
    metrics = ("full_prompt", "min_object", "text_text", "both_correct", "seconds")
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["category"], []).append(r)
    groups["overall"] = list(records)
    return {g: {m: mean_ci95([r.get(m) for r in rs]) for m in metrics if any(r.get(m) is not None for r in rs)}
            for g, rs in groups.items()}
