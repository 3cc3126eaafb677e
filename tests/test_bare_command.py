"""Issue 38: the command users type, a photo and a target prompt, gets the protected edit. The photo is captioned
(``--source-prompt auto``, the default), then edited exactly as with that caption written by hand; the library's
``EditConfig()`` runs the same default controls as the CLI; ``--source-prompt none`` keeps the plain setting; a
mask can come from the target alone.

Real parts: the shipped toy model and its captioner (the toy CLIP), real CLI processes for the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability2 import EXE

ROOT = Path(__file__).resolve().parents[1]
RED_CIRCLE = ROOT / "samples" / "toy" / "red_circle.png"
FAST = ("--model", "toy", "--steps", "12", "--update-steps", "0,4")


def cli(env, cwd, *args, timeout=300):
    """The ``date-edit`` process with ``args``: the completed process (text)."""
    return subprocess.run([EXE, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_bare_command_captions_the_photo_and_keeps_the_background(checkout_env, tmp_path):
    """No source prompt: the toy captioner names the sample, the summary line and the record say so, the default
    controls (P2P and the automatic mask) run, and every pixel outside the mask is the input's."""
    photo = tmp_path / "red_circle.png"
    shutil.copy(RED_CIRCLE, photo)
    out = tmp_path / "out.png"
    run = cli(checkout_env, tmp_path, "edit", photo, "a blue circle", *FAST, "--save-mask", "--json", "-o", out)
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "out.png.json").read_text())
    assert record["source_prompt"] == "a red circle"
    assert record["source_prompt_from"] == "auto" and record["captioner"] == "toy"
    assert "caption_s" in record["timings"]
    assert set(record["controls"]) >= {"mask-auto", "p2p"}
    mask = pixels(tmp_path / "out.mask.png")[..., 0] > 127
    assert 0 < mask.mean() < 0.5
    edited, source = pixels(out), pixels(photo)
    assert (edited[~mask] == source[~mask]).all(), "a pixel outside the automatic mask changed"
    quiet = cli(checkout_env, tmp_path, "edit", photo, "a blue circle", *FAST, "-o", tmp_path / "again.png")
    assert quiet.returncode == 0, quiet.stderr
    assert "captioned by toy" in quiet.stderr and "a red circle" in quiet.stderr


def test_bare_command_equals_the_hand_written_caption(checkout_env, tmp_path):
    """The caption is the sample's own caption, so the bare command makes the very image the command with
    ``--source-prompt "a red circle"`` makes."""
    bare, given = tmp_path / "bare.png", tmp_path / "given.png"
    for args, out in (((), bare), (("--source-prompt", "a red circle"), given)):
        run = cli(checkout_env, tmp_path, "edit", RED_CIRCLE, "a blue circle", *FAST, "--no-date", *args, "-o", out)
        assert run.returncode == 0, run.stderr
    assert (pixels(bare) == pixels(given)).all()


def test_source_prompt_none_is_the_plain_setting_and_mask_auto_comes_from_the_target(checkout_env, tmp_path):
    """``--source-prompt none``: no caption, no default mask (P2P still aligns to the empty source);
    ``--mask auto`` with it: the mask from where the target's prediction differs from the unconditional one."""
    run = cli(checkout_env, tmp_path, "edit", RED_CIRCLE, "a blue circle", *FAST, "--source-prompt", "none",
              "--json", "-o", tmp_path / "none.png")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "none.png.json").read_text())
    assert record["source_prompt"] == "" and record["source_prompt_from"] == "none"
    assert "captioner" not in record and "mask-auto" not in record["controls"]
    run = cli(checkout_env, tmp_path, "edit", RED_CIRCLE, "a blue circle", *FAST, "--source-prompt", "none",
              "--mask", "auto", "--json", "-o", tmp_path / "target_mask.png")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "target_mask.png.json").read_text())
    assert "mask-auto" in record["controls"] and 0 < record["mask_coverage"] < 0.6
    saved = cli(checkout_env, tmp_path, "edit", RED_CIRCLE, "a blue circle", *FAST, "--source-prompt", "none",
                "--save-mask", "-o", tmp_path / "nomask.png")
    assert saved.returncode == 2 and "--save-mask needs a mask" in saved.stderr
    assert not (tmp_path / "nomask.png").exists()


def test_a_captioner_that_cannot_load_is_one_line_and_writes_nothing(checkout_env, tmp_path):
    """``--captioner blip`` with no weights offline: one line naming it, how to get it, and that a source prompt
    avoids it; exit 1, nothing written, no traceback."""
    env = dict(checkout_env, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    out = tmp_path / "out.png"
    run = cli(env, tmp_path, "edit", RED_CIRCLE, "a blue circle", *FAST, "--captioner", "blip", "-o", out)
    assert run.returncode == 1, run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "--source-prompt" in errors[0] and "blip" in errors[0], run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


def test_api_default_controls_make_the_cli_edit(toy, checkout_env, tmp_path):
    """``edit(config=EditConfig(...))`` with the controls left at their default makes the image ``date-edit edit``
    makes with no control flag (the same settings otherwise), and ``source_prompt="auto"`` captions through the
    library."""
    from date_edit.imaging import load_image, to_pil
    from date_edit.pipeline import EditConfig, edit

    loaded = load_image(str(RED_CIRCLE), size=toy.native_size, multiple=toy.size_multiple)
    config = EditConfig(steps=12, seed=0, date=None)
    given = edit(toy, loaded.pixels, "a blue circle", source_prompt="a red circle", config=config)
    assert given.config["p2p"] is not None and given.config["mask"]["source"] == "auto"
    assert given.config["cfg_target"] == 7.5
    run = cli(checkout_env, tmp_path, "edit", RED_CIRCLE, "a blue circle", "--model", "toy", "--steps", "12",
              "--no-date", "--source-prompt", "a red circle", "-o", tmp_path / "cli.png")
    assert run.returncode == 0, run.stderr
    api = np.asarray(to_pil(given.images)[0]).astype(int)
    assert np.abs(pixels(tmp_path / "cli.png") - api).max() <= 1  # the same edit (float sums may round apart)
    auto = edit(toy, loaded.pixels, "a blue circle", source_prompt="auto", config=config)
    assert auto.source_prompts == ["a red circle"] and auto.timings["caption_s"] >= 0
    assert torch.equal(auto.images, given.images)
    plain = edit(toy, loaded.pixels, "a blue circle", source_prompt="a red circle",
                 config=EditConfig(steps=12, seed=0, date=None, mask=None, p2p=None))
    assert plain.config["mask"] is None and plain.config["p2p"] is None
    assert not torch.equal(plain.images, given.images)


def test_edit_config_controls_take_a_config_none_or_default():
    from date_edit.errors import ConfigError
    from date_edit.pipeline import EditConfig

    assert EditConfig().mask == "default" and EditConfig().p2p == "default"
    assert EditConfig().to_dict()["mask"] == "default"
    with pytest.raises(ConfigError, match="mask"):
        EditConfig(mask="auto")
    with pytest.raises(ConfigError, match="p2p"):
        EditConfig(p2p=True)


def test_batch_captions_rows_without_a_source_and_keeps_the_captions(checkout_env, tmp_path):
    """A manifest of image, prompt and output only is captioned per photo (kept in OUT/captions.json); a row's
    ``none`` runs without a source prompt and a written one is used as written."""
    shutil.copy(RED_CIRCLE, tmp_path / "a.png")
    (tmp_path / "edits.csv").write_text("image,prompt,source_prompt,output\n"
                                        "a.png,a blue circle,,bare.png\n"
                                        "a.png,a blue circle,none,none.png\n"
                                        "a.png,a blue circle,a red circle,given.png\n")
    run = cli(checkout_env, tmp_path, "batch", "--manifest", tmp_path / "edits.csv", "-o", tmp_path / "out",
              *FAST, "--no-date")
    assert run.returncode == 0, run.stderr
    rows = {Path(r["output"]).name: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text()
                                                   .splitlines()) if r.get("status") == "ok"}
    assert rows["bare.png"]["source_prompt"] == "a red circle" and rows["bare.png"]["captioner"] == "toy"
    assert rows["none.png"]["source_prompt"] == "" and rows["given.png"]["source_prompt_from"] == "given"
    assert json.loads((tmp_path / "out" / "captions.json").read_text())
    out = tmp_path / "out"
    assert (pixels(out / "bare.png") == pixels(out / "given.png")).all()


def test_web_app_empty_source_box_is_captioned(app):
    """The web app: the source-prompt box fills with the caption on upload; an emptied box captions at edit time,
    and the command line it shows (no --source-prompt) makes the same edit."""
    photo = app.load_photo(str(RED_CIRCLE))
    assert photo["source_prompt"] == "a red circle"
    out = app.edit(photo["photo"], None, {"source_prompt": "", "prompt": "a blue circle", "steps": 12,
                                          "date": False})
    assert out["record"]["source_prompt"] == "a red circle" and out["record"]["source_prompt_from"] == "auto"
    assert "--source-prompt" not in out["command"]


def test_harness_source_auto_captions_and_records_both_captions(tmp_path):
    """``@source=auto`` on the edit suite: the photo's caption (blip:tiny on the tiny model) replaces the item's
    hand-written source prompt, which the record keeps beside it; ``@source=none`` runs without one."""
    import subprocess as sp
    import sys as _sys

    out = tmp_path / "run"
    proc = sp.run([_sys.executable, "-m", "benchmarks", "run", "--suite", "edit", "--model", "tiny", "--limit", "1",
                   "--steps", "4", "--methods", "fixed,fixed@source=auto,fixed@source=none", "--out", str(out),
                   "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    given, auto, none = rows["fixed"], rows["fixed@source=auto"], rows["fixed@source=none"]
    assert given["source_prompt_from"] == "given" and given["source_prompt"] == given["given_source_prompt"]
    assert auto["source_prompt_from"] == "auto" and auto["captioner"] == "blip:tiny"
    assert auto["given_source_prompt"] == given["source_prompt"] and auto["source_prompt"] != given["source_prompt"]
    assert none["source_prompt"] == "" and (out / "captions.json").is_file()


def test_a_captioner_that_gives_no_caption_gets_the_mask_from_the_target_alone(toy):
    """A captioner returning empty text: the edit runs without a source prompt, and its default mask is the one
    from the target alone (better than none on the toy validation split)."""
    from date_edit.imaging import load_image
    from date_edit.pipeline import EditConfig, edit

    class Silent:
        name = "silent"

        def __call__(self, images):
            return [""] * images.shape[0]

    loaded = load_image(str(RED_CIRCLE), size=toy.native_size, multiple=toy.size_multiple)
    result = edit(toy, loaded.pixels, "a blue circle", source_prompt="auto", captioner=Silent(),
                  config=EditConfig(steps=8, seed=0, date=None))
    assert result.source_prompts == [""] and result.config["mask"]["source"] == "auto"
    assert result.mask is not None and 0 < float(result.mask.mean()) < 0.6


def test_sweep_without_a_source_prompt_is_captioned(checkout_env, tmp_path):
    """``date-edit sweep`` resolves the source prompt through the same request: captioned, and its record says so."""
    run = cli(checkout_env, tmp_path, "sweep", RED_CIRCLE, "a blue circle", "--model", "toy", "--steps", "12",
              "--skips", "4", "--cfgs", "7.5", "--date", "off", "--json", tmp_path / "sweep.json", "-o",
              tmp_path / "sweep.png")
    assert run.returncode == 0, run.stderr
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["source_prompt"] == "a red circle" and record["source_prompt_from"] == "auto"
    assert record["captioner"] == "toy" and record["mask"]["source"] == "auto"
