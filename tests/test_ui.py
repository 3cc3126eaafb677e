"""The web app's handlers (no browser), the sweep library function and ``date-edit sweep``, on the toy model (CPU,
offline, 64 px). The browser drives the same handlers in tests/test_ui_browser.py."""

import json
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RED_CIRCLE = ROOT / "samples" / "toy" / "red_circle.png"
FORM = {"source_prompt": "a red circle", "prompt": "a blue circle", "steps": 30}
GRID = {"skips": "0,50%", "cfgs": "7.5", "date_mode": "both"}


def cli(env: dict, *args, cwd, timeout=300):
    """``date-edit ARGS`` run with this checkout's code (``env``: the ``checkout_env`` fixture)."""
    code = "import sys; from date_edit_cli.main import run; sys.argv[0] = 'date-edit'; run()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def env(checkout_env):
    env = checkout_env
    probe = subprocess.run([sys.executable, "-c", "import date_edit_cli, date_edit; print(date_edit_cli.__file__); "
                            "print(date_edit.__file__)"], env=env, capture_output=True, text=True, timeout=60)
    cli_file, lib_file = probe.stdout.split()
    assert Path(cli_file).resolve() == ROOT / "cli" / "__init__.py"  # the subprocesses test this checkout
    assert Path(lib_file).resolve() == ROOT / "date_edit" / "__init__.py"
    return env


def _one_line_error(status: str) -> None:
    assert status.startswith("error: ") and "\n" not in status and "Traceback" not in status, status


# ------------------------------------------------------------------------------------------------ the library


def test_sweep_gives_the_same_numbers_over_a_reused_inversion(toy):
    from date_edit.date import DateConfig
    from date_edit.imaging import load_image
    from date_edit.pipeline import EditConfig
    from date_edit.scorers import build_scorer
    from date_edit.sweep import grid_image, sweep

    pixels = load_image(RED_CIRCLE, size=64, multiple=8).pixels
    base = EditConfig(steps=8, seed=0, date=DateConfig(update_steps="every:3"))
    kwargs = dict(source_prompt="a red circle", skips="0,50%", cfgs="7.5,15", dates=(False, True), base=base,
                  scorer=build_scorer("clip:toy", require_differentiable=True),
                  evaluator=build_scorer("clip:toy-heldout"), evaluator_name="clip:toy-heldout")
    first = sweep(toy, pixels, "a blue circle", **kwargs)
    reused = sweep(toy, pixels, "a blue circle", inversion=first.inversion, **kwargs)  # (the CLI test: a new one)
    assert [c.to_dict() for c in reused.cells] == [c.to_dict() for c in first.cells]
    assert not first.inversion_cached and reused.inversion_cached and reused.timings["inversion_s"] == 0.0
    assert [(c.skip_steps, c.cfg_target, c.date) for c in first.cells] == [
        (0, 7.5, False), (0, 7.5, True), (0, 15.0, False), (0, 15.0, True),
        (4, 7.5, False), (4, 7.5, True), (4, 15.0, False), (4, 15.0, True)]
    for cell in first.cells:
        assert bool(cell.update_steps) == cell.date and len(cell.date_scores) == len(cell.update_steps)
        assert 0 < cell.mean_abs_diff < 255 and cell.psnr_db > 0 and -1 <= cell.clip <= 1
    grid = grid_image(first, pixels, cell_px=64)
    assert grid.size[0] > 64 * 5 and grid.size[1] > 64 * 2


def test_sweep_refuses_bad_grids_naming_the_parameter(toy):
    from date_edit.date import DateConfig
    from date_edit.errors import ConfigError
    from date_edit.pipeline import EditConfig
    from date_edit.sweep import parse_cfgs, parse_skips, sweep

    assert parse_skips(" 20%, 36% ,20%") == ("20%", "36%") and parse_cfgs("7.5,15") == (7.5, 15.0)
    for bad, parser, param in (("", parse_skips, "skips"), ("ten", parse_skips, "skips"),
                               ("-3", parse_skips, "skips"), ("7.5,x", parse_cfgs, "cfgs"),
                               ("nan", parse_cfgs, "cfgs")):
        with pytest.raises(ConfigError) as info:
            parser(bad)
        assert info.value.param == param
    pixels = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ConfigError, match="over 48"):
        sweep(toy, pixels, "x", skips=list(range(7)), cfgs=list(range(1, 8)), evaluator=None)
    late = EditConfig(steps=10, date=DateConfig(update_steps="8"))
    with pytest.raises(ConfigError) as info:  # a cell with 5 steps to run: refused before any inversion
        sweep(toy, pixels, "x", skips="0,50%", cfgs="7.5", dates=(True,), base=late, evaluator=None)
    assert info.value.param == "update_steps"


# ------------------------------------------------------------------------------------------------ the handlers


def test_second_edit_of_a_photo_reuses_its_inversion_and_gives_the_uncached_result(app, toy, tmp_path):
    """The app's default controls (the CLI's: P2P, automatic mask, CFG 7.5, DATE) at 30 steps turn the toy red
    circle blue in place; a new target reuses the inversion (the record says so) and gives what a fresh app gives."""
    from PIL import Image

    from date_edit.toy.judge import box_iou, evaluate, judge
    from date_edit_cli.ui_app import App

    photo = app.load_photo(str(RED_CIRCLE))
    assert photo["status"] == ("photo red_circle.png: 64x64 (from 64x64); source prompt captioned by toy (edit it "
                               "if it is wrong)")
    assert photo["source_prompt"] == "a red circle"  # the box fills with the caption on upload (issue 38)
    first = app.edit(photo["photo"], photo["editor"], FORM)
    assert "inversion: computed" in first["status"], first["status"]
    verdict = evaluate(np.asarray(first["result"]), "a blue circle")
    source_box = judge(np.asarray(Image.open(RED_CIRCLE).convert("RGB")))[0].box
    assert verdict["correct"] and max(box_iou(source_box, d.box) for d in verdict["objects"]) >= 0.5
    second = app.edit(photo["photo"], photo["editor"], {**FORM, "prompt": "a green circle"})
    assert "inversion: cached" in second["status"] and second["record"]["inversion"] == "cached"
    assert second["record"]["timings"]["inversion_s"] < 0.05
    assert len(app.inversions) == 1
    fresh = App(toy, "toy", out_dir=str(tmp_path / "fresh")).edit(photo["photo"], None,
                                                                 {**FORM, "prompt": "a green circle"})
    assert "inversion: computed" in fresh["status"]
    assert np.array_equal(np.asarray(fresh["result"]), np.asarray(second["result"]))
    with Image.open(second["download"]) as png:  # the download carries the record, as the CLI's PNGs do
        record = json.loads(png.text["date-edit"])
        assert np.array_equal(np.asarray(png.convert("RGB")), np.asarray(second["result"]))
    assert record["inversion"] == "cached" and record["prompt"] == "a green circle" and record["command"] == "edit"
    assert [s for s, _ in second["plot"]] == record["update_steps"] and len(record["date_scores"]) == 2
    assert second["command"].startswith("date-edit edit red_circle.png 'a green circle' --source-prompt")


def test_the_command_line_the_app_shows_does_the_same_edit(app, env, tmp_path):
    photo = app.load_photo(str(RED_CIRCLE))
    shown = app.edit(photo["photo"], None, {**FORM, "steps": 12, "date": False})
    args = shlex.split(shown["command"])[2:]
    args[0] = str(RED_CIRCLE)
    out = cli(env, "edit", *args, "--out", tmp_path / "cli.png", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png").convert("RGB")), np.asarray(shown["result"]))


def test_bad_input_is_the_clis_one_line_error(app, env, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image\n")
    loaded = app.load_photo(str(bad))
    _one_line_error(loaded["status"])
    assert loaded["photo"] is None and str(tmp_path) not in loaded["status"]
    out = cli(env, "edit", bad, "a blue circle", "--model", "toy", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().replace(str(bad), "bad.png") == "date-edit: " + loaded["status"]
    photo = app.load_photo(str(RED_CIRCLE))["photo"]
    cases = {"prompt": ("", "target prompt is empty"), "steps": ("abc", "'--steps': 'abc' is not a valid integer"),
             "skip": ("200", "--skip 200 must leave at least one of the 30 steps"),
             "rho": (-1, "--rho must be a finite number >= 0"), "update_steps": ("every:x", "--update-steps"),
             "mask": ("painted", "nothing is painted"), "cfg_target": ("", "'--cfg-target': '' is not a valid float")}
    for field, (value, words) in cases.items():
        status = app.edit(photo, None, {**FORM, field: value})["status"]
        _one_line_error(status)
        assert words in status, (field, status)
    _one_line_error(app.edit(None, None, FORM)["status"])
    _one_line_error(app.sweep(photo, None, FORM, {"skips": "a,b"})["status"])
    assert app.inversions == {}  # nothing ran


def test_a_painted_mask_keeps_every_pixel_outside_it(app):
    from PIL import Image

    photo = app.load_photo(str(RED_CIRCLE))
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[:, :32] = (255, 0, 255, 255)  # the left half painted
    editor = {**photo["editor"], "layers": [Image.fromarray(layer, "RGBA")]}
    out = app.edit(photo["photo"], editor, {**FORM, "mask": "painted", "p2p": False, "date": False})
    assert out["record"]["controls"] == ["mask-user"], out["status"]
    source = np.asarray(Image.open(RED_CIRCLE).convert("RGB"))
    assert np.array_equal(np.asarray(out["result"])[:, 40:], source[:, 40:])


def test_the_sweep_tab_and_the_sweep_command_give_the_same_grid(app, env, tmp_path):
    photo = app.load_photo(str(RED_CIRCLE))
    form = {**FORM, "steps": 8, "update_steps": "every:3"}
    tab = app.sweep(photo["photo"], None, form, GRID)
    assert tab["status"].startswith("sweep of 4 edits: inversion: computed"), tab["status"]
    out = cli(env, "sweep", RED_CIRCLE, "a blue circle", "--source-prompt", "a red circle", "--model", "toy",
              "--steps", 8, "--update-steps", "every:3", "--skips", "0,50%", "--cfgs", 7.5,
              "--out", tmp_path / "grid.png", "--json", tmp_path / "grid.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "grid.json").read_text())
    assert record["cells"] == tab["record"]["cells"]
    same = ("prompt", "source_prompt", "evaluator", "steps", "cfg_source", "seed", "method", "date", "mask", "p2p",
            "scorer", "model", "processed_size")
    assert {k: record[k] for k in same} == {k: tab["record"][k] for k in same}
    assert record["evaluator"] == "clip:toy-heldout" and record["scorer"] == "clip:toy=1"
    assert len(tab["rows"]) == 4 and "CLIP" in out.stdout and len(out.stdout.strip().splitlines()) == 5
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as grid:
        assert json.loads(grid.text["date-edit"])["cells"] == record["cells"]
    again = app.sweep(photo["photo"], None, {**form, "prompt": "a green circle"}, GRID)
    assert "inversion: cached" in again["status"]


def test_sweep_command_refuses_bad_options_in_one_line(env, tmp_path):
    out = cli(env, "sweep", RED_CIRCLE, "a blue circle", "--model", "toy", "--skips", "x", "--out",
              tmp_path / "g.png", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == "date-edit: error: --skips 'x' is not a step count (36) " \
                                                         "or a percentage from 0% to 100% (36%)", out.stderr
    out = cli(env, "sweep", RED_CIRCLE, "a", "--json", tmp_path / "g.txt", cwd=tmp_path)
    assert out.returncode == 2 and "ending in .json" in out.stderr and not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------------------------------------ the command


def test_ui_command_binds_locally_and_warns_for_other_hosts(env, tmp_path):
    from date_edit_cli.ui_app import is_local

    assert is_local("127.0.0.1") and not is_local("0.0.0.0")
    help_text = cli(env, "ui", "--help", cwd=tmp_path).stdout
    assert "--host" in help_text and "127.0.0.1" in help_text and "--share" in help_text and "--port" in help_text
    with socket.socket() as probe:  # a port free now: the address check binds it for a moment, never 7860
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = cli(env, "ui", "--host", "0.0.0.0", "--port", port, "--model", str(tmp_path / "no-such-model"),
              cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and lines[0].startswith("date-edit: warning: --host 0.0.0.0 serves other machines")
    assert lines[-1].startswith("date-edit: error:") and "Traceback" not in out.stderr


def test_the_cli_starts_without_gradio_and_the_app_builds(app, env):
    probe = "import sys, date_edit_cli.main, date_edit_cli.ui_layout; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip() == "False", out.stderr
    pytest.importorskip("gradio")
    from date_edit_cli.ui_layout import build

    demo = build(app)
    model_events = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    assert len(model_events) == 3 and all(fn.concurrency_limit == 1 for fn in model_events)


def test_the_forms_defaults_follow_the_clis():
    """FlowEdit's published settings fill the form on a flow model; the target CFG default follows the controls;
    the toy model opens on its red circle and offers no FlowEdit."""
    from types import SimpleNamespace

    from date_edit.flowedit import FLOWEDIT_DEFAULTS
    from date_edit_cli.ui_app import App

    sd3 = App(SimpleNamespace(family="sd3", schedule=SimpleNamespace(prediction_type="flow")), "tiny-sd3",
              out_dir=None)
    assert sd3.methods() == ["auto", "ddpm", "flowedit"]
    assert sd3.method_defaults("flowedit") == {k: FLOWEDIT_DEFAULTS["sd3"][k]
                                               for k in ("steps", "skip", "cfg_source", "cfg_target")}
    assert sd3.method_defaults("ddpm") == {} and sd3.default_sample() is None
    toy = App(SimpleNamespace(family="sd", schedule=SimpleNamespace(prediction_type="epsilon")), "toy", out_dir=None)
    assert toy.methods() == ["auto", "ddpm"] and toy.default_sample() == "toy/red_circle.png"
    assert toy.samples()[0].startswith("toy/")
    assert App.default_cfg_target(True, "none") == 7.5 and App.default_cfg_target(False, "auto") == 7.5
    assert App.default_cfg_target(False, "none") == 15.0
