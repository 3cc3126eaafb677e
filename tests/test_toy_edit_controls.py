"""The two-object toy edit benchmark (issue 27): its scenes and targets, its metrics on rendered images, and a smoke
run end to end on the toy model."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.studies import toy_edit_controls as tec  # noqa: E402
from date_edit.toy import world  # noqa: E402
from date_edit.toy.judge import box_iou  # noqa: E402


def test_targets_change_the_edited_object_and_name_the_other_unchanged():
    cases = tec.make_cases("val", 12)
    assert [c.edited for c in cases] == [i % 2 for i in range(12)]
    for case in cases:
        source = world.parse_prompt(case.caption)
        assert source == [(o.colour, o.shape) for o in case.order]  # the caption's order
        assert case.caption == world.caption(case.scene)
        used_colours, used_shapes = {c for c, _ in source}, {s for _, s in source}
        for kind in tec.KINDS:
            target = world.parse_prompt(case.prompt(kind))
            assert len(target) == 2
            assert target[1 - case.edited] == source[1 - case.edited]  # the other object, same place in the prompt
            (colour, shape), (old_colour, old_shape) = target[case.edited], source[case.edited]
            if kind == "colour":
                assert shape == old_shape and colour not in used_colours
            else:
                assert colour == old_colour and shape not in used_shapes
            assert (colour, shape) == case.target(kind)


def test_splits_are_deterministic_prefixes_and_differ():
    val = tec.make_cases("val", 6)
    assert val == tec.make_cases("val", 6)
    assert val[:3] == tec.make_cases("val", 3)  # scene i does not depend on how many are drawn
    test = tec.make_cases("test", 6)
    assert {c.scene for c in val}.isdisjoint({c.scene for c in test})
    assert [c.caption for c in val] != [c.caption for c in test]
    # the colour edit is not always the same colour: the rng draws it
    assert len({c.colour_target[0] for c in tec.make_cases("val", 20)}) > 1


def _target_image(case, kind):
    colour, shape = case.target(kind)
    edited = replace(case.edited_obj, colour=colour, shape=shape)
    return world.render(world.Scene((edited, case.other_obj)))


def test_the_target_scene_rendered_is_a_success():
    for case in tec.make_cases("val", 4):
        source = world.render(case.scene)
        for kind in tec.KINDS:
            m = tec.measure(_target_image(case, kind), source, case, kind)
            assert m["right"] and m["correct"] and m["in_place"] and m["other_kept"], (case.prompt(kind), m)
            assert m["iou"] > 0.9 and m["other_iou"] > 0.9
            assert m["background_mad"] == 0.0  # only pixels inside the (excluded) edited box changed
            assert m["success"]


def _moved(obj, away_from, min_shift=6):
    """``obj`` shifted so its box IoU with where it was is below 0.7, inside the image and clear of ``away_from``."""
    for dx in range(-40, 41, 2):
        for dy in range(-40, 41, 2):
            if abs(dx) + abs(dy) < min_shift:
                continue
            moved = replace(obj, cx=obj.cx + dx, cy=obj.cy + dy)
            x0, y0, x1, y1 = moved.box
            if x0 < 1 or y0 < 1 or x1 > 63 or y1 > 63 or box_iou(moved.box, obj.box) >= 0.5:
                continue
            if world._boxes_apart(moved, away_from, world.GAP):
                return moved
    raise AssertionError("no free place to move the object to")


def test_a_moved_other_object_or_a_moved_edit_is_not_a_success():
    case = tec.make_cases("val", 1)[0]
    source = world.render(case.scene)
    colour, shape = case.target("colour")
    edited = replace(case.edited_obj, colour=colour, shape=shape)
    other_moved = world.render(world.Scene((edited, _moved(case.other_obj, edited))))
    m = tec.measure(other_moved, source, case, "colour")
    assert m["right"] and m["correct"] and m["in_place"]
    assert not m["other_kept"] and m["other_iou"] < tec.OTHER_KEPT_IOU and not m["success"]
    edit_moved = world.render(world.Scene((_moved(edited, case.other_obj), case.other_obj)))
    m = tec.measure(edit_moved, source, case, "colour")
    assert m["right"] and m["other_kept"] and not m["in_place"] and not m["success"]
    # the edited object's new place is left out of the background, its old place is inside an excluded box
    assert m["background_mad"] == 0.0


def test_a_tinted_background_fails_on_background_only():
    case = tec.make_cases("val", 2)[1]
    source = world.render(case.scene)
    out = _target_image(case, "shape").copy()
    white = (out == 255).all(axis=-1)
    out[white] = 225  # grey, unsaturated: the judge still sees the same objects
    m = tec.measure(out, source, case, "shape")
    assert m["correct"] and m["in_place"] and m["other_kept"]
    assert m["background_mad"] == pytest.approx(30.0) and m["background_mad"] > tec.BG_THRESHOLD
    assert not m["success"]
    assert tec.measure(out, source, case, "shape", bg_threshold=31.0)["success"]


def test_user_mask_is_the_source_box_dilated():
    case = tec.make_cases("val", 1)[0]
    mask = tec.user_mask(case)
    x0, y0, x1, y1 = case.edited_obj.box
    ys, xs = np.nonzero(mask)
    assert xs.min() == max(0, int(np.floor(x0)) - 3) and xs.max() == min(63, int(np.ceil(x1)) + 2)
    assert ys.min() == max(0, int(np.floor(y0)) - 3) and ys.max() == min(63, int(np.ceil(y1)) + 2)
    assert mask.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)  # a rectangle


def test_control_names():
    assert tec.control_parts("none") == set()
    assert tec.control_parts("p2p+mask-user") == {"p2p", "mask-user"}
    for bad in ("mask", "mask-auto+mask-user", "p2p+blend"):
        with pytest.raises(ValueError):
            tec.control_parts(bad)


@pytest.mark.slow
def test_quick_run_writes_json_md_and_grid(tmp_path, capsys):
    out = tmp_path / "quick.json"
    assert tec.main(["--quick", "--steps", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ran = report["controls"]
    assert "none" in ran and set(ran) | set(report["skipped_controls"]) == {"none", "mask-user"}
    if "mask-user" in report["skipped_controls"]:
        assert "skipped" in capsys.readouterr().out
    assert len(report["records"]) == 2 * 2 * len(ran)  # 2 scenes x 2 kinds x controls, fixed only
    assert report["methods"] == ["fixed"] and report["split"] == "val" and report["scenes_numpy_seed"] == 9100
    assert "--quick" in report["command"] and report["wall_s"] > 0 and report["machine"]
    for rec in report["records"]:
        assert 0 <= rec["background_mad"] <= 255 and -1 <= rec["clip_target"] <= 1
        assert rec["success"] == (rec["correct"] and rec["in_place"] and rec["other_kept"]
                                  and rec["background_mad"] <= tec.BG_THRESHOLD)
        if rec["control"] == "mask-user":
            assert 0 <= rec["outside_mask_exact"] <= 1
    assert {k.split("/")[1] for k in report["results"]} == set(ran)
    md = out.with_suffix(".md").read_text()
    assert "| kind | control | method | n | right | in place | other kept | bg MAD | clip | success |" in md
    assert "| colour | none | fixed | 2 |" in md
    assert Path(report["grid"]).is_file() and report["grid"].endswith("quick_grid.png")


@pytest.mark.slow
def test_sweep_writes_the_tradeoff_plot(tmp_path):
    out = tmp_path / "tradeoff.json"
    assert tec.main(["--sweep", "--scenes", "1", "--seeds", "1", "--sweep-controls", "none,mask-user", "--steps", "4",
                     "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    n_points = len(tec.SWEEP_SKIPS) * len(tec.SWEEP_CFGS) * len(report["controls"])
    assert len(report["results"]) == n_points
    assert all(row["n"] == 2 for row in report["results"].values())  # 1 scene x 2 kinds per point
    assert out.with_suffix(".png").stat().st_size > 0 and "| control | skip |" in out.with_suffix(".md").read_text()


def test_mask_sources_measures_each_map_and_restores_the_processors(tmp_path):
    """benchmarks/studies/toy_mask_sources.py on one scene: every map's means lie in [0, 1], the difference map is
    higher on the edited object than on the other, the files are written, and the toy UNet's processors are its own
    again."""
    from benchmarks.studies import toy_mask_sources as tms
    from date_edit.backbones import load_backbone

    assert tms.main(["--scenes", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "toy_mask_sources.json").read_text())
    assert report["scenes"] == 1 and len(report["records"]) == 2
    for rows in report["table"].values():
        for name in tms.MAPS:
            assert 0 <= rows[name]["edited"] <= 1 and 0 <= rows[name]["other"] <= 1
    assert report["table"]["colour"]["difference"]["edited"] > report["table"]["colour"]["difference"]["other"]
    assert "| colour | noise difference" in (tmp_path / "toy_mask_sources.md").read_text()
    unet = load_backbone("toy", device="cpu").unet
    assert not any(isinstance(getattr(m, "processor", None), tms.CrossAttentionRecorder) for m in unet.modules())
