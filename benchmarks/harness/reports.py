"""A run's reports: summary.md / .csv / .json (mean and 95% CI of every metric per method), plots/*.png,
index.html, and FID against a reference set where pytorch-fid is installed."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Optional

from benchmarks.harness.methods import Method
from date_edit.errors import ConfigError
from date_edit.stats import mean_ci95


def compute_fid(out: Path, methods: list[Method], reference: str, device) -> dict[str, Optional[float]]:
    """FID of each method's images against ``reference`` (a folder of images or pytorch-fid ``.npz``
    statistics), with pytorch-fid (InceptionV3 pool3, as the DATE paper). ``None`` with a note if unavailable."""
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths
    except ImportError:
        print("note: FID skipped: `pip install pytorch-fid` (its InceptionV3 weights download once on first use)")
        return {}
    if not Path(reference).exists():
        raise ConfigError("fid_ref", f"{reference}: no such file or folder")
    result = {}
    for method in methods:
        folder = out / "images" / method.slug
        try:
            result[method.label] = float(calculate_fid_given_paths([str(folder), reference], 50, str(device), 2048))
        except Exception as exc:  # weights not downloadable offline, too few images, ...
            print(f"note: FID for {method.label} failed: {str(exc).splitlines()[0][:200]}")
            result[method.label] = None
    return result


NON_METRICS = {"suite", "method", "base", "item", "group", "prompt", "seed", "steps", "image", "update_steps",
               "date_scores", "rho", "updates", "host", "device", "controls", "preset", "skip", "cfg_source",
               "cfg_target", "editor", "source_prompt", "reference_image", "category", "image_path", "edited_words",
               "blended_words", "p2p_words"}


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Per method: mean and 95% CI of every numeric field (metrics, seconds, peak memory)."""
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    table = {}
    for method, rs in by_method.items():
        keys = sorted({k for r in rs for k, v in r.items() if k not in NON_METRICS and isinstance(v, (int, float))})
        table[method] = {k: mean_ci95([r.get(k) for r in rs]) for k in keys}
    return table


def write_reports(out: Path, records: list[dict], meta: dict, fid: Optional[dict] = None) -> None:
    """summary.md / summary.csv / summary.json, plots/*.png and index.html."""
    table = summarize(records)
    for method, value in (fid or {}).items():
        if method in table and value is not None:
            table[method]["fid"] = {"mean": value, "ci95": None, "n": 1}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "methods": table}, indent=2) + "\n")
    metrics = sorted({k for row in table.values() for k in row})
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "n"] + [x for m in metrics for x in (m, f"{m}_ci95")])
        for method, row in table.items():
            n = max((v["n"] for v in row.values()), default=0)
            w.writerow([method, n] + [x for m in metrics for x in (row.get(m, {}).get("mean"),
                                                                     row.get(m, {}).get("ci95"))])
    lines = [f"# {meta['suite']} suite: {meta['model']}, seeds {meta['seeds'][0]}..{meta['seeds'][-1]}, "
             f"{meta['steps']} steps", "", "Mean ± 95% CI (normal approximation) over items x seeds.", "",
             "| method | n | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for method, row in table.items():
        n = max((v["n"] for v in row.values()), default=0)
        cells = []
        for m in metrics:
            v = row.get(m)
            if not v or v["mean"] is None:
                cells.append("-")
            else:
                cells.append(f"{v['mean']:.4g}" + (f" ± {v['ci95']:.2g}" if v["ci95"] is not None else ""))
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    if meta.get("equal_compute_factor"):
        lines += ["", f"fixed-equal-compute used {meta['equal_compute_factor']:.2f}x the steps (DATE/fixed time "
                      "measured in this run)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    _plots(out, records, table)
    _html(out, records)


def _plots(out: Path, records: list[dict], table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    metric_names = [k for k in next(iter(table.values()), {}) if k not in ("seconds", "peak_memory_mb")]
    for key, label in (("rho", "rho"), ("updates", "update fraction")):
        for metric in metric_names:
            points: dict[str, list[tuple[float, float, float]]] = {}
            for method, row in table.items():
                rs = [r for r in records if r["method"] == method]
                if not rs or rs[0].get(key) is None or metric not in row or row[metric]["mean"] is None:
                    continue
                x = _num(rs[0][key])
                if x is None:
                    continue
                points.setdefault(rs[0]["base"], []).append((x, row[metric]["mean"], row[metric]["ci95"] or 0.0))
            points = {b: sorted(p) for b, p in points.items() if len({x for x, _, _ in p}) > 1}
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for base, p in points.items():
                ax.errorbar([a for a, _, _ in p], [b for _, b, _ in p], yerr=[c for _, _, c in p], marker="o",
                            capsize=3, label=base)
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.legend()
            fig.tight_layout()
            fig.savefig(plots / f"{metric}_vs_{key}.png", dpi=100)
            plt.close(fig)
    curves = {}
    for r in records:
        if r.get("date_scores"):
            curves.setdefault(r["method"], []).append(r["date_scores"])
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, cs in curves.items():
            length = min(len(c) for c in cs)
            mean = [sum(c[i] for c in cs) / len(cs) for i in range(length)]
            ax.plot(range(length), mean, marker="o", label=method)
        ax.set_xlabel("update number")
        ax.set_ylabel("objective before the update")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "objective_per_update.png", dpi=100)
        plt.close(fig)


def _num(value) -> Optional[float]:
    text = str(value).strip()
    try:
        return float(text[:-1]) if text.endswith("%") else float(text)
    except ValueError:
        return None


def _html(out: Path, records: list[dict]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in records))
    items = list(dict.fromkeys((r["item"], r["prompt"]) for r in records))
    seeds = sorted({r["seed"] for r in records})
    index = {(r["method"], r["item"], r["seed"]): r for r in records}
    rows = ["<tr><th>prompt</th><th>seed</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in methods) + "</tr>"]
    for item, prompt in items:
        for seed in seeds:
            cells = []
            for m in methods:
                r = index.get((m, item, seed))
                cells.append(f"<td><img src=\"{html.escape(r['image'])}\" width=160 title=\"{html.escape(m)}\"></td>"
                             if r else "<td></td>")
            rows.append(f"<tr><td>{html.escape(prompt)}</td><td>{seed}</td>{''.join(cells)}</tr>")
    page = ("<!doctype html><meta charset=utf-8><title>date-edit benchmark</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;vertical-align:top;font-size:12px}</style>"
            f"<h1>{html.escape(records[0]['suite'] if records else '')}</h1>"
            "<p><a href=summary.md>summary.md</a> · <a href=summary.csv>summary.csv</a></p>"
            f"<table>{''.join(rows)}</table>")
    (out / "index.html").write_text(page)

