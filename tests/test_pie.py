"""PIE-Bench in the harness: the dataset's run-length masks, its mapping file, the method options and presets, and a
PIE-format fixture run end to end through the real CLI on the tiny models (offline; random-weight metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from benchmarks.suites.pie import data as pie
from benchmarks.harness import parse_method
from date_edit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- masks


def test_decode_mask_matches_hand_computed_runs():
    got = pie.decode_mask([0, 3, 7, 2], shape=(4, 5), border=False)
    want = np.zeros((4, 5), np.uint8)
    want[0, 0:3] = 1  # flat 0..2
    want[1, 2:4] = 1  # flat 7, 8
    assert got.dtype == np.uint8 and got.tolist() == want.tolist()


def test_decode_mask_border_rule_sets_the_frame():
    got = pie.decode_mask([], shape=(4, 5), border=True)
    want = np.ones((4, 5), np.uint8)
    want[1:3, 1:4] = 0
    assert got.tolist() == want.tolist()
    inner = pie.decode_mask([6, 1], shape=(4, 5), border=True)  # flat 6 = row 1, col 1: inside the frame
    assert inner[1, 1] == 1 and inner[1:3, 1:4].sum() == 1


def test_decode_mask_clips_a_run_that_overflows_the_image():
    got = pie.decode_mask([18, 50], shape=(4, 5), border=False)  # 20 pixels: 18 and 19 only
    assert got.reshape(-1).tolist() == [0] * 18 + [1, 1]
    assert pie.decode_mask([25, 3], shape=(4, 5), border=False).sum() == 0  # a run past the end sets nothing


@pytest.mark.parametrize("runs", [[1, 2, 3], [-1, 2], [0, -2], [0.5, 2], [True, 2]])
def test_decode_mask_refuses_malformed_runs(runs):
    with pytest.raises(ValueError):
        pie.decode_mask(runs, shape=(4, 5))


def test_encode_mask_round_trips():
    rng = np.random.default_rng(0)
    mask = (rng.random((16, 16)) > 0.6).astype(np.uint8)
    assert pie.decode_mask(pie.encode_mask(mask), (16, 16), border=False).tolist() == mask.tolist()


# ------------------------------------------------------------------------------------------------ fixture


def make_pie(root: Path, size: int = 64) -> Path:
    """A PIE-format folder: three square photos (two edit types), bracketed prompts, run-length masks."""
    items = [
        ("000000000000", "0_random_140/000000000000.jpg", "0", "a [red] square on a white table",
         "a [blue] square on a white table", "square square", (8, 8, 32, 32)),
        ("611000000000", "6_change_attribute_color_40/1_artificial/1_animal/611000000000.jpg", "6",
         "a [green] circle", "a [yellow] circle", "circle circle", (30, 20, 60, 50)),
        ("111000000000", "1_change_object_80/1_artificial/1_animal/111000000000.jpg", "1",
         "a [square] on the left", "a [circle] on the left", "square circle", (4, 16, 28, 40)),
    ]
    mapping = {}
    for key, rel, cat, src, tgt, blended, box in items:
        image = Image.new("RGB", (size, size), (250, 250, 245))
        draw = ImageDraw.Draw(image)
        draw.rectangle(box, fill=(200, 40, 40))
        draw.ellipse((40, 40, 60, 60), fill=(40, 160, 60))
        path = root / pie.IMAGES / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=95)
        mask = np.zeros((size, size), np.uint8)
        mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = 1
        mapping[key] = {"image_path": rel, "original_prompt": src, "editing_prompt": tgt,
                        "editing_instruction": "make it so", "editing_type_id": cat, "blended_word": blended,
                        "mask": pie.encode_mask(mask)}
    (root / pie.MAPPING).write_text(json.dumps(mapping))
    return root


@pytest.fixture(scope="module")
def pie_dir(tmp_path_factory):
    return make_pie(tmp_path_factory.mktemp("pie"))


def test_load_pie_reads_the_mapping_as_the_reference_does(pie_dir):
    entries = pie.load_pie(pie_dir)
    assert [e.key for e in entries] == ["000000000000", "611000000000", "111000000000"]
    first = entries[0]
    assert first.source_prompt == "a red square on a white table"
    assert first.target_prompt == "a blue square on a white table"
    assert first.edited_words == ("blue",) and first.blended_words == ("square", "square")
    assert first.category_name == "random" and first.image.is_file()
    assert [e.key for e in pie.load_pie(pie_dir, pie.parse_categories("6,change_object"))] == \
        ["611000000000", "111000000000"]
    assert len(pie.load_pie(pie_dir, limit=2)) == 2


def _broken(tmp_path: Path, pie_dir: Path, change) -> Path:
    root = tmp_path / "broken"
    root.mkdir()
    os.symlink(pie_dir / pie.IMAGES, root / pie.IMAGES)
    mapping = json.loads((pie_dir / pie.MAPPING).read_text())
    (root / pie.MAPPING).write_text(change(mapping))
    return root


@pytest.mark.parametrize("change, words", [
    (lambda m: "{not json", "not JSON"),
    (lambda m: json.dumps([1, 2]), "expected an object"),
    (lambda m: json.dumps({"k": {"image_path": "x.jpg"}}), "lacks"),
    (lambda m: json.dumps({k: v | {"image_path": "../../etc/passwd"} for k, v in m.items()}), "inside"),
    (lambda m: json.dumps({k: v | {"image_path": "0_random_140/missing.jpg"} for k, v in m.items()}), "not found"),
    (lambda m: json.dumps({k: v | {"mask": [1, 2, 3]} for k, v in m.items()}), "pairs"),
])
def test_bad_pie_folders_are_one_line_errors(tmp_path, pie_dir, change, words):
    root = _broken(tmp_path, pie_dir, change)
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_and_unknown_category_are_one_line_errors(tmp_path, pie_dir):
    with pytest.raises(ConfigError, match="no such folder"):
        pie.load_pie(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not found"):
        pie.load_pie(tmp_path)
    with pytest.raises(ConfigError, match="edit type"):
        pie.parse_categories("11")
    with pytest.raises(ConfigError, match="no item"):
        pie.load_pie(pie_dir, {"9"})


def test_method_options_and_presets_parse_and_refuse():
    m = parse_method("date-clip@p2p@mask=bench@preset=pie-ef-p2p")
    assert m.option("p2p") == "on" and m.option("mask") == "bench" and m.option("preset") == "pie-ef-p2p"
    assert m.date is not None and parse_method("fixed").edit == ()
    for bad in ("fixed@mask=box", "fixed@preset=nope", "fixed@editor=ddim", "fixed@p2p=maybe"):
        with pytest.raises(ConfigError):
            parse_method(bad)


def test_settings_resolve_preset_options_and_command_line():
    from argparse import Namespace

    from benchmarks.suites.editing import settings

    args = Namespace(suite="pie", preset=None, steps=None, cross_replace=None, self_replace=None, mask="none",
                     mask_threshold=0.5, mask_peak=0.9, p2p=False)
    kw, preset = settings(args, parse_method("fixed@p2p"), "sd")
    assert preset == "pie-ef-p2p"
    assert (kw["steps"], kw["skip"], kw["cfg_source"], kw["cfg_target"]) == (50, 12, 1.0, 7.5)
    assert (kw["p2p"].cross_replace, kw["p2p"].self_replace) == (0.4, 0.6) and kw["mask"] is None
    kw, preset = settings(args, parse_method("fixed@mask=bench"), "sd3")
    assert preset == "flowedit-sd3" and kw["method"] == "flowedit" and kw["mask"].source == "user"
    args.steps, args.cross_replace = 10, 0.9
    kw, _ = settings(args, parse_method("fixed@p2p@preset=ef"), "sd")
    assert kw["steps"] == 10 and kw["skip"] == 4 and kw["p2p"].cross_replace == 0.9  # 36 of 100 -> 4 of 10
    args.suite = "edit"
    with pytest.raises(ConfigError, match="needs --suite pie"):
        settings(args, parse_method("fixed@mask=bench"), "sd")


# -------------------------------------------------------------------------------------------- end to end


def _harness(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quiet", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_pie_without_data_or_with_an_unrunnable_method_is_one_line(tmp_path, pie_dir):
    done = _harness("--suite", "pie", "--model", "tiny", "--out", str(tmp_path / "a"))
    assert done.returncode == 2 and "--data" in done.stderr and "Traceback" not in done.stdout + done.stderr
    done = _harness("--suite", "pie", "--data", str(pie_dir), "--model", "tiny-sd3", "--methods", "fixed@p2p",
                    "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "p2p" in done.stderr and "Traceback" not in done.stdout + done.stderr


def test_pie_fixture_runs_every_method_on_the_tiny_models(tmp_path, pie_dir):
    """DDPM, + P2P, + automatic and benchmark masks (fixed and DATE) on tiny SD; FlowEdit (fixed, DATE, mask) on
    tiny SD3 and FLUX: every record, the reference layout, the tables; a mask keeps the background exactly."""
    runs = {"tiny": "fixed,fixed@p2p@blend,fixed@mask=bench,date-clip@p2p@mask=auto,date-clip@mask=bench",
            "tiny-sd3": "fixed,date-clip@mask=bench", "tiny-flux": "fixed@mask=auto,date-clip"}
    for model, methods in runs.items():
        out = tmp_path / model
        done = _harness("--suite", "pie", "--data", str(pie_dir), "--model", model, "--methods", methods,
                        "--steps", "6", "--updates", "1", "--out", str(out))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        labels = methods.split(",")
        assert sorted({r["method"] for r in records}) == sorted(labels) and len(records) == 3 * len(labels)
        for r in records:
            assert (out / r["reference_image"]).is_file() and r["reference_image"].endswith(r["image_path"])
            for key in ("structure_distance", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part",
                        "clip_similarity_target_image", "clip_similarity_target_image_edit_part"):
                assert isinstance(r[key], float) and np.isfinite(r[key]), (key, r[key])
            assert r["editor"] == ("ddpm" if model == "tiny" else "flowedit")
            if "blend" in r["method"]:  # the words P2P blends are PIE's bracketed ones here
                assert r["controls"] == ["p2p", "local-blend"], r["controls"]
                assert set(r["p2p_words"]) == {"red", "blue"} or r["item"] != "000000000000"
            if "mask=bench" in r["method"]:
                assert r["unedit_exact_lossless"] == 1.0 and "mask-user" in r["controls"]
        table = (out / "pie_table.md").read_text()
        assert "random" in table.lower() and "edit-friendly DDPM + P2P" in table
        assert all(label in table for label in labels)
        with Image.open(next((out / "reference").rglob("*.jpg"))) as im:
            assert im.format == "JPEG" and im.size == (64, 64)
    rerun = _harness("--suite", "pie", "--data", str(pie_dir), "--model", "tiny", "--methods",
                     runs["tiny"], "--steps", "6", "--updates", "1", "--out", str(tmp_path / "tiny"))
    assert rerun.returncode == 0 and len((tmp_path / "tiny" / "records.jsonl").read_text().splitlines()) == 15


def test_pie_under_torchrun_shares_the_items_and_writes_one_table(tmp_path, pie_dir):
    """Two ranks (gloo, CPU) split PIE's items; rank 0 merges the records and writes the table and the layout."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "two"
    done = subprocess.run([torchrun, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                           "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "benchmarks", "run", "--quiet", "--suite",
                           "pie", "--data", str(pie_dir), "--model", "tiny", "--methods", "fixed,fixed@mask=bench",
                           "--steps", "4", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len({(r["method"], r["item"]) for r in records}) == 6 == len(records)
    assert all((out / r["reference_image"]).is_file() for r in records)
    assert not list(out.glob("records.rank*.jsonl")) and "fixed@mask=bench" in (out / "pie_table.md").read_text()
