"""The PIE-Bench table: the seven metrics in the published units, per method, overall and per edit type, with the
published rows beside them (``pie_table.md``, ``pie_table.csv``).

Means are over the items that have the metric (the reference writes ``nan`` where a mask leaves nothing to
measure). A PSNR of +inf (an unedited part kept exactly, as the reference's torchmetrics PSNR returns it) cannot be
averaged: the PSNR cell is the mean over the finite items, followed by how many were infinite.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

from benchmarks.suites.pie.data import CATEGORIES

# record field, column title, published scale
COLUMNS = (
    ("structure_distance", "Structure x1e3", 1e3),
    ("psnr_unedit_part", "PSNR", 1.0),
    ("lpips_unedit_part", "LPIPS x1e3", 1e3),
    ("mse_unedit_part", "MSE x1e4", 1e4),
    ("ssim_unedit_part", "SSIM x100", 1e2),
    ("clip_similarity_target_image", "CLIP whole", 1.0),
    ("clip_similarity_target_image_edit_part", "CLIP edited", 1.0),
)

# PIE-Bench, 700 images, SD 1.4, 50 steps: PnPInversion (ICLR 2024) Table 1 for the first three rows, h-Edit
# (CVPR 2025) Table 1 for the last three (same setup); None where the source gives no number.
PUBLISHED = (
    ("DDIM inversion + P2P", (69.43, 17.87, 208.80, None, 71.14, 25.01, 22.44)),
    ("null-text inversion + P2P", (13.44, 27.03, 60.67, None, 84.11, 24.75, 21.86)),
    ("Direct Inversion + P2P", (11.65, 27.22, 54.55, None, 84.76, 25.02, 22.10)),
    ("edit-friendly DDPM alone", (12.9, 25.87, 60.9, None, 83.7, 25.4, None)),
    ("edit-friendly DDPM + P2P", (15.1, 26.30, 57.0, None, 84.0, 25.5, None)),
    ("LEDITS++", (23.4, 23.36, 88.8, None, 81.1, 25.4, None)),
)


def cell(values: list, scale: float) -> tuple[Optional[float], int, int]:
    """``(mean of the finite values x scale, finite count, infinite count)``; the mean is None without any."""
    finite, infinite = [], 0
    for v in values:
        if v is None or v == "nan":
            continue
        x = float(v)
        if math.isinf(x):
            infinite += 1
        elif not math.isnan(x):
            finite.append(x * scale)
    return (sum(finite) / len(finite) if finite else None), len(finite), infinite


def _row(records: list[dict]) -> list[tuple[Optional[float], int, int]]:
    return [cell([r.get(key) for r in records], scale) for key, _, scale in COLUMNS]


def table_cells(records: list[dict]) -> list[str]:
    """The seven metrics of ``records`` as table cells in the published units (:data:`COLUMNS`' order)."""
    return [_fmt(c) for c in _row(records)]


def _fmt(c: tuple[Optional[float], int, int]) -> str:
    mean, _, inf = c
    text = "-" if mean is None else f"{mean:.2f}"
    return text + (f" (+{inf} inf)" if inf else "")


def write_pie_table(out: Path, records: list[dict], meta: dict, labels: Optional[dict] = None) -> None:
    """Write ``pie_table.md`` and ``pie_table.csv`` from the run's records."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    cats = sorted({r.get("category") for r in records if r.get("category") is not None}, key=str)
    titles = [t for _, t, _ in COLUMNS]
    lines = [f"# PIE-Bench: {meta.get('model')}, {len(records)} edits", "",
             "The seven metrics as PnPInversion's evaluation computes them, in the published units (structure "
             "distance, LPIPS, MSE, SSIM and PSNR on the unedited part; CLIP of the whole edit and of its edited "
             "part), measured on the JPEG the reference layout holds. `exact bg`: share of unedited pixels the "
             "lossless edit keeps exactly.", ""]
    if labels:
        lines += ["Computed with: " + "; ".join(f"{k}: {v}" for k, v in labels.items()), ""]
    head = "| method | n | " + " | ".join(titles) + " | exact bg |"
    lines += ["## Overall", "", head, "|---" * (len(titles) + 3) + "|"]
    rows_csv = [["method", "category", "n"] + titles + ["exact_bg"]]
    for m in methods:
        rs = [r for r in records if r["method"] == m]
        cells = _row(rs)
        exact = cell([r.get("unedit_exact_lossless") for r in rs], 100.0)[0]
        lines.append(f"| {m} | {len(rs)} | " + " | ".join(_fmt(c) for c in cells)
                     + f" | {'-' if exact is None else f'{exact:.1f}%'} |")
        rows_csv.append([m, "all", len(rs)] + [c[0] for c in cells] + [exact])
    lines += ["", "Published (SD 1.4, 50 steps, 700 images; not measured here):", "",
              "| method | n | " + " | ".join(titles) + " |", "|---" * (len(titles) + 2) + "|"]
    for name, values in PUBLISHED:
        lines.append(f"| {name} | 700 | " + " | ".join("-" if v is None else f"{v:g}" for v in values) + " |")
    lines += ["", "## Per edit type", "", "| method | edit type | n | " + " | ".join(titles) + " |",
              "|---" * (len(titles) + 3) + "|"]
    for m in methods:
        for c in cats:
            rs = [r for r in records if r["method"] == m and r.get("category") == c]
            if not rs:
                continue
            cells = _row(rs)
            lines.append(f"| {m} | {c} {CATEGORIES.get(c, '')} | {len(rs)} | " + " | ".join(_fmt(x) for x in cells)
                         + " |")
            rows_csv.append([m, c, len(rs)] + [x[0] for x in cells] + [None])
    (out / "pie_table.md").write_text("\n".join(lines) + "\n")
    with open(out / "pie_table.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows_csv)
