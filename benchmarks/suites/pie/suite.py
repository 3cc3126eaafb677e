"""The pie suite: PIE-Bench's 700 edits (:mod:`benchmarks.suites.pie.data`), each saved in the reference
evaluation's layout and measured there with its seven metrics (:mod:`benchmarks.suites.pie.metrics`), and the
table beside the published numbers (:mod:`benchmarks.suites.pie.report`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from benchmarks.suites.base import Item
from benchmarks.suites.editing import DEFAULT_STEPS, check, run_item
from benchmarks.suites.pie.data import decode_mask, load_pie, parse_categories, reference_path
from date_edit.choices import OFFLINE_MODELS
from date_edit.errors import ConfigError

__all__ = ["DEFAULT_STEPS", "TABLES", "Metrics", "check", "items", "measure", "run_item", "write_tables"]
TABLES = ("pie_table.md", "pie_table.csv", "reference/")


def items(limit, category: str, data) -> list[Item]:
    """The entries of the PIE-Bench folder ``data`` in the edit types ``category``, the first ``limit``."""
    if not data:
        raise ConfigError("data", "--suite pie needs --data DIR: the PIE-Bench folder with mapping_file.json and "
                                  "annotation_images/ (see docs/benchmarks.md, 'PIE-Bench')")
    return [Item(id=e.key, prompt=e.target_prompt, group=e.category_name, image=str(e.image),
                 source_prompt=e.source_prompt, pie=e)
            for e in load_pie(data, parse_categories(category), limit)]


class Metrics:
    """PIE-Bench's seven metrics (random-weight networks on the offline models, the reference networks else)."""

    def __init__(self, model: str, device, eval_clip, captioner) -> None:
        from benchmarks.suites.pie.metrics import PieMetrics

        self.pie = PieMetrics("random" if model in OFFLINE_MODELS else "reference", device=device)


def write_tables(out: Path, records: list[dict], runner) -> None:
    """``pie_table.md`` and ``pie_table.csv``: the seven metrics per method, beside the published numbers."""
    from benchmarks.suites.pie.report import write_pie_table

    write_pie_table(out, records, {"model": runner.args.model}, labels=runner.metrics.pie.labels)


def _save_jpeg(image, path: Path) -> None:
    """Write ``image`` as the reference runners do (PIL's JPEG at its default quality, 75), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="JPEG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def measure(runner, method, item, seed: int, result, source) -> dict:
    """Save the edit in the reference layout and measure what the reference evaluation would read there.

    The edit is resized to the photo's size if the model worked at another, written as
    ``reference/<method>/annotation_images/<image_path>`` (JPEG, as the published runners wrote it), read back, and
    scored with the seven metrics against the photo as the reference opens it, with the border-ruled mask.
    ``unedit_exact_lossless`` is the share of unedited pixels the lossless edit keeps exactly (a mask makes it 1.0;
    the JPEG the table is measured on cannot).
    """
    from PIL import Image

    from date_edit.imaging import to_pil

    entry = item.pie
    with Image.open(entry.image) as im:
        photo = np.asarray(im.convert("RGB"))
    edited = to_pil(result.images)[0]
    if edited.size != (photo.shape[1], photo.shape[0]):
        edited = edited.resize((photo.shape[1], photo.shape[0]), Image.BICUBIC)
    slug = method.slug + ("" if seed == runner.args.seed else f"_s{seed}")
    ref = reference_path(runner.out, slug, entry.image_path)
    _save_jpeg(edited, ref)
    with Image.open(ref) as im:
        read_back = np.asarray(im.convert("RGB"))
    mask = decode_mask(entry.runs, photo.shape[:2], border=True)
    scores = runner.metrics.pie(photo, read_back, mask, item.source_prompt, item.prompt)
    keep = mask == 0
    lossless = np.asarray(edited)
    same = (lossless == photo).all(axis=-1)
    fields = {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in scores.items()}
    fields |= {"unedit_exact_lossless": float(same[keep].mean()) if keep.any() else None,
               "reference_image": str(ref.relative_to(runner.out)), "category": entry.category,
               "image_path": entry.image_path, "edited_words": list(entry.edited_words),
               "blended_words": list(entry.blended_words)}
    return fields
