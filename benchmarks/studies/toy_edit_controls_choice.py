"""How the control defaults were chosen: a sweep of settings on the two-object toy validation split (fixed
embedding, one inversion seed, 20 scenes of numpy seed 9100; the test split is never used here).

    python -m benchmarks.studies.toy_edit_controls_choice GROUP      # one group of settings, ~5-15 min on 2 cores
    python -m benchmarks.studies.toy_edit_controls_choice --report   # the table of every group run so far

Groups, in the order they were run: ``auto`` (automatic-mask threshold x dilation under P2P 0.4/0.6, CFG 15),
``user`` (P2P windows, CFG and skip under a user mask), ``auto3`` and ``user2`` (CFG 7.5 and 10, larger dilation),
``r3a`` and ``r3b`` (P2P 0.8/0.8 under the automatic mask, P2P alone and the automatic mask alone at CFG 7.5). Each
writes benchmarks/results/toy_edit_controls_choice/<group>_val.json; the scenes, edits, user mask and metrics are
benchmarks/studies/toy_edit_controls.py's.

The groups up to ``r3b`` ran with the first automatic-mask rule (latent cells at or above ``threshold`` of the
map's maximum, then dilated; commit 4ce2135 and before); their ``auto thX dY`` settings mean that rule. ``pixels``
(run on 40 validation scenes: ``python -m benchmarks.studies.toy_edit_controls_choice pixels 40``) compares it, rebuilt
from :func:`date_edit.masks.difference_map` and passed as a mask, with today's rule (the map brought to the
pixels bilinearly, thresholded, only the regions reaching ``peak`` kept, dilated one cell), with and without P2P.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


import numpy as np
import torch

from benchmarks.studies import toy_edit_controls as T
from date_edit.masks import MaskConfig
from date_edit.p2p import P2PConfig

OUT = Path(__file__).resolve().parents[1] / "results" / "toy_edit_controls_choice"


def _p2p(cross: float = 0.4, self_: float = 0.6) -> P2PConfig:
    return P2PConfig(cross_replace=cross, self_replace=self_)


def _auto(threshold: float, dilate: int) -> MaskConfig:
    return MaskConfig("auto", threshold=threshold, dilate=dilate)


def configs(group: str) -> dict:
    """The settings of one group: name -> EditConfig keywords (skip and cfg_target too). "p2p" alone is 0.4/0.6."""
    out = {}
    user = MaskConfig("user")
    if group == "auto":
        for th in (0.3, 0.45, 0.6, 0.75):
            for dil in (0, 8):
                out[f"p2p+auto th{th} d{dil}"] = dict(p2p=_p2p(), mask=_auto(th, dil))
    elif group == "user":
        for c, s in [(0.4, 0.6), (0.8, 0.8), (0.4, 1.0), (1.0, 1.0), (0.2, 0.6)]:
            out[f"p2p{c}/{s}+user"] = dict(p2p=_p2p(c, s), mask=user)
        out["p2p0.4/0.6+user cfg7.5"] = dict(p2p=_p2p(), mask=user, cfg_target=7.5)
        out["p2p0.4/0.6+user skip50"] = dict(p2p=_p2p(), mask=user, skip="50%")
    elif group == "auto3":
        for th, d, cfg in [(0.6, 8, 7.5), (0.75, 8, 7.5), (0.6, 8, 10.0), (0.6, 16, 7.5), (0.75, 16, 7.5)]:
            out[f"p2p+auto th{th} d{d} cfg{cfg}"] = dict(p2p=_p2p(), mask=_auto(th, d), cfg_target=cfg)
    elif group == "user2":
        for cfg in (5.0, 10.0):
            out[f"p2p+user cfg{cfg}"] = dict(p2p=_p2p(), mask=user, cfg_target=cfg)
        out["p2p0.8/0.8+user cfg7.5"] = dict(p2p=_p2p(0.8, 0.8), mask=user, cfg_target=7.5)
        out["user cfg7.5"] = dict(mask=user, cfg_target=7.5)
        out["p2p cfg7.5"] = dict(p2p=_p2p(), cfg_target=7.5)
    elif group == "r3a":
        for th in (0.75, 0.6):
            out[f"p2p0.8/0.8+auto th{th} d16 cfg7.5"] = dict(p2p=_p2p(0.8, 0.8), mask=_auto(th, 16), cfg_target=7.5)
    elif group == "r3b":
        out["p2p0.8/0.8 cfg7.5"] = dict(p2p=_p2p(0.8, 0.8), cfg_target=7.5)
        out["auto th0.75 d16 cfg7.5"] = dict(mask=_auto(0.75, 16), cfg_target=7.5)
    elif group == "pixels":
        for p2p in (True, False):
            pre, extra = ("p2p+", dict(p2p=_p2p(0.8, 0.8))) if p2p else ("", {})
            out[f"{pre}cells th0.75 d16 (first rule)"] = dict(mask=user, cells_rule=(0.75, 16), cfg_target=7.5,
                                                              **extra)
            for peak in (1.0, 0.9, 0.5):
                out[f"{pre}pixels th0.5 peak{peak} d8"] = dict(
                    mask=MaskConfig("auto", threshold=0.5, peak=peak, dilate=8), cfg_target=7.5, **extra)
    else:
        raise SystemExit(f"unknown group {group!r}: auto, user, auto3, user2, r3a, r3b or pixels")
    return out


def first_rule_mask(bb, inv, source: str, target: str, threshold: float, dilate: int,
                    skip: int = 36) -> torch.Tensor:
    """The first automatic-mask rule, as a pixel mask: the same difference map (8 of the run's noise levels over its
    first half) with its latent cells at or above ``threshold`` of the maximum, upsampled as squares, dilated."""
    import torch.nn.functional as F

    from date_edit.controls import mask_levels
    from date_edit.masks import difference_map
    from date_edit.masks import dilate as grow

    trajectory, timesteps = inv.x_ts[skip:], inv.timesteps[skip:]
    ks = mask_levels(len(timesteps), 8)
    diff = difference_map(bb, [(trajectory[k], timesteps[k]) for k in ks], source=bb.encode_condition([source]),
                          target=bb.encode_condition([target]))
    cells = (diff >= threshold).float().cpu()
    return grow(F.interpolate(cells, size=(T.world.IMAGE_SIZE,) * 2, mode="nearest"), dilate)


def run(group: str, n: int = 20, split: str = "val") -> None:
    """Every setting of ``group`` on the first ``n`` scenes of ``split``; writes ``<group>_<split>.json``."""
    from date_edit.backbones import load_backbone
    from date_edit.pipeline import EditConfig, edit, invert_image

    bb = load_backbone("toy", device="cpu")
    cfgs = configs(group)
    res = {k: [] for k in cfgs}
    t0 = time.time()
    for case in T.make_cases(split, n):
        image = T.world.render(case.scene)
        pixels = T._pixels(image)
        inv = invert_image(bb, pixels, source_prompt=case.caption, steps=100, cfg_source=3.5, seed=0)
        for kind in T.KINDS:
            for name, kw in cfgs.items():
                kw = dict(kw)
                extra = {}
                cells_rule = kw.pop("cells_rule", None)
                if cells_rule is not None:
                    extra["mask"] = first_rule_mask(bb, inv, case.caption, case.prompt(kind), *cells_rule)
                elif "mask" in kw and kw["mask"].source == "user":
                    extra["mask"] = torch.from_numpy(T.user_mask(case).astype(np.float32))[None, None]
                cfg = EditConfig(steps=100, skip=kw.pop("skip", "36%"), cfg_source=3.5,
                                 cfg_target=kw.pop("cfg_target", 15.0), seed=0, date=None, **kw)
                r = edit(bb, pixels, case.prompt(kind), source_prompt=case.caption, config=cfg, inversion=inv,
                         **extra)
                m = T.measure(T._to_uint8(r.images), image, case, kind)
                m["area"] = None if r.mask is None else float(r.mask.mean())
                res[name].append({"kind": kind, "scene": case.index, **{k: m[k] for k in (
                    "success", "right", "in_place", "other_kept", "background_mad", "area")}})
        print(case.index, round(time.time() - t0), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    json.dump({"rows": summary(res), "records": res}, open(OUT / f"{group}_{split}.json", "w"))


def summary(res: dict) -> list[dict]:
    """Per setting: success, other kept and right-and-in-place per kind, and the mean mask area."""
    rows = []
    for name, recs in res.items():
        row = {"config": name}
        for kind in T.KINDS:
            rr = [x for x in recs if x["kind"] == kind]
            row[kind] = round(float(np.mean([x["success"] for x in rr])), 3)
            row[kind + "_other"] = round(float(np.mean([x["other_kept"] for x in rr])), 3)
            row[kind + "_right_inplace"] = round(float(np.mean([x["right"] and x["in_place"] for x in rr])), 3)
        areas = [x["area"] for x in recs if x["area"] is not None]
        row["area"] = round(float(np.mean(areas)), 3) if areas else None
        rows.append(row)
    return rows


def report() -> str:
    """The markdown table of every group's JSON in OUT."""
    lines = ["# How the control defaults were chosen (validation split only)", "",
             "`python -m benchmarks.studies.toy_edit_controls_choice GROUP` for each group below; 20 "
             "two-object scenes "
             "(numpy seed 9100) x colour and shape edits, fixed embedding, 100 steps, skip 36% unless named, CFG 3.5 "
             "-> 15 unless named. n = 20 per cell (40 in pixels).", "",
             "| group | setting | colour success | shape success | colour other kept | mask area |",
             "|---|---|---|---|---|---|"]
    for group in ("auto", "user", "auto3", "user2", "r3a", "r3b", "pixels"):
        path = OUT / f"{group}_val.json"
        if path.is_file():
            for r in json.loads(path.read_text())["rows"]:
                lines.append(f"| {group} | {r['config']} | {r['colour']:.2f} | {r['shape']:.2f} | "
                             f"{r['colour_other']:.2f} | {r['area'] if r['area'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        text = report()
        (OUT.parent / "toy_edit_controls_choice.md").write_text(text)
        print(text)
    else:
        torch.set_num_threads(1)
        run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20, sys.argv[3] if len(sys.argv) > 3 else "val")
