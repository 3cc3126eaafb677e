"""The tables, grids and plots of the two-object toy edit study (:mod:`benchmarks.studies.toy_edit_controls`):
mean and CI per (control, method, kind), the acceptance checks of issue 27, the Markdown report and its PIE-Bench
table, the image grid and the trade-off plot."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.studies.toy_edit_scenes import IN_PLACE_IOU, OTHER_KEPT_IOU, SWEEP_CFGS, SWEEP_SKIPS
from date_edit.stats import mean_ci95


def summarise(records: list[dict], keys: tuple[str, ...]) -> dict:
    """Means ± 95% CI of every metric per combination of ``keys`` (in first-seen order)."""
    metrics = ("right", "correct", "in_place", "iou", "other_kept", "other_iou", "background_mad", "clip_target",
               "success", "outside_mask_exact")
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault("/".join(str(r[k]) for k in keys), []).append(r)
    table = {}
    for key, rows in groups.items():
        row = {m: mean_ci95([float(r[m]) for r in rows if r.get(m) is not None]) for m in metrics}
        row["n"] = len(rows)
        table[key] = row
    return table


def _cell(stat: dict, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95'] or 0:.{digits}f}"


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_grid(rows: list[dict], columns: list[str], path: Path, scale: int = 2) -> None:
    """A labelled grid: one row per (scene, kind) with its target prompt above it, columns input | controls; a green
    frame marks a success, a red one a failure."""
    from PIL import Image, ImageDraw

    cell, pad, label_h, head_h = 64 * scale, 4, 16, 16
    width = pad + len(columns) * (cell + pad)
    height = head_h + len(rows) * (label_h + cell + pad) + pad
    canvas = Image.new("RGB", (max(width, 360), height), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for j, name in enumerate(columns):
        draw.text((pad + j * (cell + pad), 2), name, fill=(0, 0, 0), font=font)
    y = head_h
    for row in rows:
        draw.text((pad, y + 2), row["label"], fill=(0, 0, 0), font=font)
        y += label_h
        for j, name in enumerate(columns):
            img, ok = row["cells"].get(name, (None, None))
            x = pad + j * (cell + pad)
            if img is None:
                draw.text((x + 4, y + cell // 2), "n/a", fill=(120, 120, 120), font=font)
                continue
            canvas.paste(Image.fromarray(img).resize((cell, cell), Image.NEAREST), (x, y))
            if ok is not None:
                draw.rectangle((x - 2, y - 2, x + cell + 1, y + cell + 1), outline=(0, 160, 0) if ok else (210, 0, 0),
                               width=2)
        y += cell + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


ACCEPTANCE = [  # (control, kind, metric, at least) from issue 27, on the test split
    ("mask-user", "colour", "success", 0.95), ("mask-user", "shape", "success", 0.85),
    ("mask-user", "colour", "outside_mask_exact", 1.0), ("mask-user", "shape", "outside_mask_exact", 1.0),
    ("mask-auto", "colour", "success", 0.85), ("mask-auto", "shape", "success", 0.70),
]


def acceptance(table: dict, methods: list[str]) -> list[dict]:
    """Issue 27's targets beside what this run measured (per method; only controls that ran)."""
    rows = []
    for control, kind, metric, target in ACCEPTANCE:
        for method in methods:
            row = table.get(f"{kind}/{control}/{method}")
            if row and row[metric]["mean"] is not None:
                mean = row[metric]["mean"]
                rows.append({"control": control, "kind": kind, "method": method, "metric": metric,
                             "target": target, "measured": round(mean, 4), "met": mean >= target - 1e-9})
    return rows


def markdown(report: dict) -> str:
    """The Markdown report of a benchmark run."""
    s = report["settings"]
    lines = [f"# Toy world, two objects: edits under structure-preserving controls ({report['split']} split)", "",
             f"`{report['command']}`: {report['scenes']} two-object scenes (numpy seed {report['scenes_numpy_seed']})"
             f" x {len(report['inversion_seeds'])} inversion seeds x 2 edits; {s['edit']}; DATE: {s['date']}. "
             f"Wall time {report['wall_s']:.0f} s on {report['machine']}. Mean ± 95% CI.", "",
             f"Success = exactly the two target objects, the edited one in place (IoU >= {IN_PLACE_IOU}), the other "
             f"kept (IoU >= {OTHER_KEPT_IOU}), background MAD <= {s['thresholds']['background_mad_max']} (0-255). "
             f"The autoencoder's round trip alone moves the background by "
             f"{_cell(report['roundtrip_background_mad'], 2)} (MAD over the same pixels, no edit).", "",
             "| kind | control | method | n | right | in place | other kept | bg MAD | clip | success | "
             "outside mask exact |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in report["results"].items():
        kind, control, method = key.split("/")
        cells = [_cell(row["right"]), _cell(row["in_place"]), _cell(row["other_kept"]),
                 _cell(row["background_mad"], 1), _cell(row["clip_target"], 3), _cell(row["success"]),
                 _cell(row["outside_mask_exact"], 3)]
        lines.append(f"| {kind} | {control} | {method} | {row['n']} | " + " | ".join(cells) + " |")
    if report["acceptance"]:
        lines += ["", "Issue 27's targets (they apply to the test split):", "",
                  "| control | kind | method | metric | target | measured | met |", "|---|---|---|---|---|---|---|"]
        for a in report["acceptance"]:
            lines.append(f"| {a['control']} | {a['kind']} | {a['method']} | {a['metric']} | >= {a['target']} | "
                         f"{a['measured']:.3f} | {'yes' if a['met'] else 'no'} |")
    if report["skipped_controls"]:
        lines += ["", "Skipped (this checkout's API cannot run them): "
                  + "; ".join(f"{k}: {v}" for k, v in report["skipped_controls"].items()) + "."]
    lines += pie_markdown(report)
    lines += ["", "Metrics:", ""] + [f"- `{k}`: {v}" for k, v in report["metrics"].items()]
    lines += ["", f"Controls: {json.dumps(s['controls'])}; user mask: {s['user_mask']}. Edits: {s['edits']}.",
              f"Grid (fixed embedding, seed 0): `{Path(report['grid']).name}`.", ""]
    return "\n".join(lines)


def pie_markdown(report: dict) -> list[str]:
    """The PIE-Bench table of the run (the harness's metric code on toy edits), or nothing without it."""
    from benchmarks.suites.pie.report import COLUMNS, table_cells

    records = [r for r in report["records"] if "pie" in r]
    if not records:
        return []
    lines = ["", "PIE-Bench's seven metrics, by the harness's code (`benchmarks/suites/pie/metrics.py`), "
             "published units; "
             "edited region = the user mask (the edited object's box dilated) with the reference's border rule. "
             "No DINO weights here: the structure distance uses the toy world's own encoder. Computed with: "
             + "; ".join(f"{k}: {v}" for k, v in (report.get("pie_labels") or {}).items()) + ".", "",
             "| kind | control | method | n | " + " | ".join(t for _, t, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 4) + "|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["kind"], r["control"], r["method"]), []).append(r["pie"])
    for (kind, control, method), rows in groups.items():
        lines.append(f"| {kind} | {control} | {method} | {len(rows)} | " + " | ".join(table_cells(rows)) + " |")
    return lines


def plot_tradeoff(table: dict, controls: list[str], path: Path) -> None:
    """One colour per control; a solid line through the skips at target CFG 15, a dashed one at 7.5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for i, control in enumerate(controls):
        colour = f"C{i}"
        for cfg, style in zip(SWEEP_CFGS, (":", "-")):
            pts = [(table[k]["background_mad"]["mean"], table[k]["clip_target"]["mean"], skip)
                   for skip in SWEEP_SKIPS if (k := f"{control}/{skip}/{cfg}") in table]
            if not pts:
                continue
            xs, ys, labels = zip(*pts)
            ax.plot(xs, ys, style, marker="o" if cfg == SWEEP_CFGS[-1] else "s", color=colour,
                    label=f"{control}, CFG {cfg:g}")
            for x, y, lab in zip(xs, ys, labels):
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
    ax.set_xlabel("background MAD to the input (0-255, lower keeps more)")
    ax.set_ylabel("held-out toy CLIP to the target (higher is better)")
    ax.set_title("Toy two-object edits: skip (labels) x target CFG, per control")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
