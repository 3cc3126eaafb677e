"""Issue 27: edits confined by masks (user files and automatic), on every family, through the library and the CLI.

The invariants first: outside a user mask the latent ends exactly on the source's and every pixel is the input's;
with the target = the source, an edit under every control reconstructs the inversion exactly.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from date_edit.backbones import load_backbone
from date_edit.errors import ConfigError, ImageError
from date_edit.masks import MaskConfig, auto_mask, composite, feathered, load_mask, regions_reaching, to_latent
from date_edit.pipeline import EditConfig, edit, invert_image

EXE = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def _pixels(size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((1, 3, size, size), generator=g) * 255).round() / 255  # 8-bit values, like a real file


def _box_mask(size=64, box=(8, 8, 40, 32)):
    m = torch.zeros(1, 1, size, size)
    x0, y0, x1, y1 = box
    m[..., y0:y1, x0:x1] = 1
    return m


@pytest.fixture(scope="module")
def backbones():
    return {name: load_backbone(name, device="cpu") for name in ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux")}


def _to8(images):
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_user_mask_keeps_every_pixel_outside_it_on_every_family(backbones, name):
    """DDPM editing (SD, SDXL, SD3) and FlowEdit (FLUX): outside the mask the latent is the source's bit for bit
    (cells the mask does not touch), and after the composite every 8-bit pixel outside the mask is the input's."""
    bb = backbones[name]
    size = 64 if name in ("tiny", "tiny-sdxl") else 64
    pixels, mask = _pixels(size), _box_mask(size)
    config = EditConfig(steps=6, skip=2, cfg_source=3.5, cfg_target=7.0, date=None, mask=MaskConfig("user"))
    result = edit(bb, pixels, "a cat wearing a hat", source_prompt="a photo", config=config, mask=mask)
    outside = mask[0, 0] == 0
    assert torch.equal(_to8(result.images)[0][:, outside], _to8(pixels)[0][:, outside])
    latent_out = to_latent(mask, tuple(result.latents.shape[-2:]))[0, 0] == 0
    src = result.source_latents
    assert float((result.latents - src)[..., latent_out].abs().max()) <= 1e-5
    # the edit did change the inside: the mask confines it, it does not cancel it
    assert float((result.latents - src)[..., ~latent_out].abs().max()) > 1e-3
    assert result.mask is not None and result.config["mask"]["source"] == "user"


def test_flowedit_mask_keeps_the_source_latent_outside(backbones):
    bb = backbones["tiny-flux"]
    config = EditConfig(steps=6, skip=1, cfg_source=1.5, cfg_target=5.5, date=None, mask=MaskConfig("user"),
                        method="flowedit")
    mask = _box_mask()
    result = edit(bb, _pixels(), "a dog", source_prompt="a cat", config=config, mask=mask)
    assert result.config["method"] == "flowedit"
    out = to_latent(mask, tuple(result.latents.shape[-2:]))[0, 0] == 0
    assert torch.equal(result.latents[..., out], result.source_latents[..., out])


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_every_control_with_target_equal_to_source_reconstructs_exactly(backbones, name):
    """Target = source, same CFG: the plain edit reconstructs the inversion; so does every control on top of it
    (user mask, automatic mask, Prompt-to-Prompt with local blend and a reweight of 1)."""
    from date_edit.p2p import P2PConfig

    bb = backbones[name]
    pixels, prompt = _pixels(), "a red circle"
    inversion = invert_image(bb, pixels, source_prompt=prompt, steps=8, cfg_source=3.5, seed=0)
    p2p = P2PConfig(cross_replace=1.0, self_replace=1.0, reweight=(("red", 1.0),), local_blend=True)
    for mask_config, p2p_config, mask in [(None, None, None), (MaskConfig("user"), None, _box_mask()),
                                          (MaskConfig("auto"), None, None), (None, p2p, None),
                                          (MaskConfig("auto"), p2p, None)]:
        config = EditConfig(steps=8, skip=2, cfg_source=3.5, cfg_target=3.5, date=None, mask=mask_config,
                            p2p=p2p_config)
        result = edit(bb, pixels, prompt, source_prompt=prompt, config=config, inversion=inversion, mask=mask)
        err = float((result.latents - inversion.x0.cpu()).abs().max())
        assert err <= 1e-4, (mask_config, p2p_config, err)


def test_auto_mask_covers_the_changed_object_in_the_toy_world():
    """DiffEdit's difference map on the trained toy model: recolouring one of two objects masks that object (most
    of its box) and little of the other's."""
    from date_edit.toy import world

    bb = load_backbone("toy", device="cpu")
    scene = world.Scene((world.ToyObject("red", "circle", 18, 18, 22), world.ToyObject("blue", "square", 44, 44, 20)))
    pixels = torch.from_numpy(world.render(scene)).permute(2, 0, 1)[None].float() / 255
    source = world.phrase([("red", "circle"), ("blue", "square")])
    target = world.phrase([("green", "circle"), ("blue", "square")])
    config = EditConfig(steps=50, skip="36%", date=None, mask=MaskConfig("auto"))
    result = edit(bb, pixels, target, source_prompt=source, config=config)
    m = result.mask[0, 0]
    edited, other = m[7:29, 7:29].float().mean(), m[34:54, 34:54].float().mean()
    assert edited > 0.7 and other < 0.3, (float(edited), float(other))


def test_auto_mask_is_thresholded_at_the_pixels_and_keeps_only_regions_reaching_the_peak():
    """Two separate responses on an 8x8 latent map, a strong one and a weaker one (a secondary response on an
    object the prompts did not change): peak 0.9 keeps the strong region only, peak = threshold keeps both; the map
    is brought to the pixels bilinearly (a round region, not square cells) and its scale does not matter."""
    diff = torch.zeros(1, 1, 8, 8)
    diff[0, 0, 1:3, 1:3] = 1.0
    diff[0, 0, 5:7, 5:7] = 0.7
    strong = auto_mask(diff, (64, 64), threshold=0.5, peak=0.9)
    assert strong.shape == (1, 1, 64, 64) and set(strong.unique().tolist()) == {0.0, 1.0}
    assert float(strong[0, 0, 10:22, 10:22].min()) == 1.0 and float(strong[0, 0, 32:, 32:].max()) == 0.0
    assert float(strong[0, 0, 8, 8]) == 0.0  # the cells' corner lies below the threshold after bilinear upsampling
    both = auto_mask(diff, (64, 64), threshold=0.5, peak=0.5)
    assert float(both[0, 0, 44:52, 44:52].min()) == 1.0 and torch.equal(both[0, 0, :32, :32], strong[0, 0, :32, :32])
    assert torch.equal(auto_mask(diff * 7.0, (64, 64), threshold=0.5, peak=0.9), strong)
    # a region is followed along any 8-connected path, however winding
    ring = torch.zeros(1, 1, 9, 9)
    ring[0, 0, 1, 1:8] = ring[0, 0, 7, 1:8] = ring[0, 0, 1:8, 1] = ring[0, 0, 1:8, 7] = 1.0
    ring[0, 0, 4, 4] = 1.0  # a separate island
    seed = torch.zeros_like(ring)
    seed[0, 0, 7, 7] = 1.0
    kept = regions_reaching(ring, seed)
    assert torch.equal(kept[0, 0, 4, 4], torch.tensor(0.0)) and float(kept.sum()) == float(ring.sum()) - 1


def test_auto_mask_without_a_source_prompt_comes_from_the_target_and_user_mask_needs_a_tensor(backbones):
    bb = backbones["tiny"]
    # no source prompt: the mask is where the target's prediction differs from the unconditional one
    alone = edit(bb, _pixels(), "a dog", config=EditConfig(steps=4, skip=1, date=None, mask=MaskConfig("auto")))
    assert alone.mask is not None and alone.config["mask"]["source"] == "auto"
    with pytest.raises(ConfigError, match="missing"):
        edit(bb, _pixels(), "a dog", config=EditConfig(steps=4, skip=1, date=None, mask=MaskConfig("user")))
    with pytest.raises(ConfigError, match="images are"):
        edit(bb, _pixels(), "a dog", config=EditConfig(steps=4, skip=1, date=None, mask=MaskConfig("user")),
             mask=_box_mask(32))
    with pytest.raises(ConfigError):
        MaskConfig("auto", threshold=1.5)
    with pytest.raises(ConfigError, match="mask_peak"):
        MaskConfig("auto", threshold=0.6, peak=0.5)
    assert MaskConfig("auto", threshold=0.6, peak=0.6).peak == 0.6


def test_feathered_composite_is_exact_outside_and_soft_inside():
    mask = _box_mask()
    soft = feathered(mask, 3)
    assert float(soft[mask == 0].abs().max()) == 0.0
    assert 0 < float(soft[0, 0, 20, 8]) < 1 and float(soft[0, 0, 20, 24]) == 1.0
    a, b = torch.ones(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    out = composite(a, b, mask, 3)
    assert float(out[..., mask[0, 0] == 0].abs().max()) == 0.0


def test_mask_files_any_mode_and_size_are_resized_with_the_image(tmp_path):
    """A half-size RGBA mask (transparent = keep) over a 200x100 image, crop-resized to 64x64 like the image."""
    rgba = np.zeros((50, 100, 4), np.uint8)
    rgba[:, 50:, :3] = 255
    rgba[:, 50:, 3] = 255  # right half opaque white
    rgba[:, :50, :3] = 255  # left half white but transparent: may not change
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", original_size=(200, 100), processed_size=(64, 64), resize="crop")
    assert m.shape == (1, 1, 64, 64)
    assert float(m[..., :, :30].max()) == 0.0 and float(m[..., :, 34:].min()) == 1.0
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    with pytest.raises(ImageError, match="no white pixel"):
        load_mask(tmp_path / "black.png", original_size=(64, 64), processed_size=(64, 64))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_mask(tmp_path / "junk.png", original_size=(64, 64), processed_size=(64, 64))


def _cli(*args, cwd):
    return subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV,
                          check=False)


@pytest.fixture
def photo(tmp_path):
    Image.fromarray((_pixels()[0].permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / "in.png")
    Image.fromarray((_box_mask()[0, 0] * 255).byte().numpy()).save(tmp_path / "mask.png")
    return tmp_path / "in.png"


def test_cli_mask_file_save_mask_and_json_record(photo, tmp_path):
    before = photo.read_bytes()
    proc = _cli("edit", photo, "a dog", "--model", "tiny", "--steps", 4, "-q", "--mask", "mask.png", "--save-mask",
                "--json", "--no-date", "-o", "out.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    # Prompt-to-Prompt is on by default on SD-family models (the tiny one is SD-shaped)
    assert record["controls"] == ["mask-user", "p2p"] and record["mask_coverage"] == pytest.approx(32 * 24 / 64 ** 2)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    src = np.asarray(Image.open(photo))
    outside = np.asarray(Image.open(tmp_path / "mask.png")) == 0
    assert (out[outside] == src[outside]).all()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.mask.png")) > 0, ~outside)
    meta = json.loads(Image.open(tmp_path / "out.png").text["date-edit"])
    assert meta["controls"] == ["mask-user", "p2p"] and meta["config"]["mask"]["source"] == "user"
    assert photo.read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (("--mask", "missing.png"), "no such file"),
    (("--mask", "junk.png"), "not an image"),
    (("--mask", "black.png"), "no white pixel"),
    (("--save-mask", "--source-prompt", "none"), "--save-mask needs a mask"),
    (("--no-p2p", "--reweight", "red=2"), "drop --no-p2p"),
    (("--mask", "none", "--save-mask", "--source-prompt", "a cat"), "--save-mask needs a mask"),
    (("--p2p", "--reweight", "red"), "WORD=FACTOR"),
    (("--p2p", "--model", "tiny-sd3"), "joint attention"),
    (("--mask", "auto", "--source-prompt", "a cat", "--mask-threshold", "0.6", "--mask-peak", "0.5"),
     "--mask-peak must be"),
])
def test_cli_bad_controls_are_one_line_and_write_nothing(photo, tmp_path, args, words):
    (tmp_path / "junk.png").write_bytes(b"junk")
    Image.new("L", (64, 64), 0).save(tmp_path / "black.png")
    model = () if "--model" in args else ("--model", "tiny")
    proc = _cli("edit", photo, "a dog", *model, "--steps", 4, "-q", "-o", "out.png", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and words in errors[0], proc.stderr
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.mask.png").exists()


def test_batch_manifest_mask_column_and_resume_key(photo, tmp_path):
    """A manifest row's mask (relative to the manifest) confines its edit; a changed mask file redoes the item,
    an unchanged one is skipped; a missing mask fails its row alone."""
    (tmp_path / "m.csv").write_text("image,prompt,source_prompt,mask\nin.png,a dog,a photo,mask.png\n"
                                    "in.png,a cat,a photo,nope.png\n")
    args = ("batch", "--manifest", "m.csv", "--out", "out", "--model", "tiny", "--steps", 4, "--no-date", "-q")
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "failed"] and "nope.png" in rows[1]["error"]
    out = np.asarray(Image.open(rows[0]["output"] if os.path.isabs(rows[0]["output"])
                                else tmp_path / rows[0]["output"]))
    outside = np.asarray(Image.open(tmp_path / "mask.png")) == 0
    assert (out[outside] == np.asarray(Image.open(photo))[outside]).all()
    again = _cli(*args, cwd=tmp_path)
    assert "1 skipped" in again.stderr, again.stderr
    Image.fromarray((_box_mask(box=(0, 0, 20, 20))[0, 0] * 255).byte().numpy()).save(tmp_path / "mask.png")
    redo = _cli(*args, cwd=tmp_path)
    assert "1 done, 0 skipped" in redo.stderr, redo.stderr


def test_benchmark_harness_edit_suite_runs_the_controls(tmp_path):
    """``python -m benchmarks run --suite edit --mask auto --p2p``: every record names the controls that ran."""
    from benchmarks.harness import main

    assert main(["run", "--suite", "edit", "--model", "tiny", "--limit", "1", "--steps", "4", "--methods", "fixed",
                 "--mask", "auto", "--p2p", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert rows and all(r["controls"] == ["mask-auto", "p2p"] and 0 < r["mask_coverage"] <= 1 for r in rows)


@pytest.mark.parametrize("model, controls", [("tiny", ["mask-auto", "p2p"]), ("tiny-sd3", ["mask-auto"])])
def test_cli_defaults_are_p2p_where_supported_and_auto_mask_with_a_source_prompt(photo, tmp_path, model, controls):
    """No control flag: Prompt-to-Prompt where the model has cross-attention (left out, not refused, on SD3), an
    automatic mask because a source prompt is given; the record says what ran."""
    proc = _cli("edit", photo, "a dog", "--source-prompt", "a cat", "--model", model, "--steps", 4, "-q", "--json",
                "--no-date", "-o", "out.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["controls"] == controls and record["mask"] == "auto"
    # no source prompt: the photo is captioned (blip:tiny here), and the same defaults run with the caption
    bare = _cli("edit", photo, "a dog", "--model", model, "--steps", 4, "-q", "--json", "--no-date", "-o", "b.png",
                cwd=tmp_path)
    record = json.loads(bare.stdout)
    assert record["controls"] == controls and record["source_prompt_from"] == "auto", bare.stderr
    # --source-prompt none: no automatic mask by default (P2P aligns to the empty source where it runs)
    empty = _cli("edit", photo, "a dog", "--model", model, "--steps", 4, "-q", "--json", "--no-date",
                 "--source-prompt", "none", "-o", "c.png", cwd=tmp_path)
    assert json.loads(empty.stdout)["controls"] == controls[1:], empty.stderr


def test_manifest_mask_cells_name_files_relative_to_the_manifest_or_keywords(tmp_path):
    """A file is made relative to the manifest; ``auto`` and ``none`` stay keywords (``none`` was once taken for a
    file named 'none'); an empty cell falls back to the command line's --mask."""
    from date_edit.batch import plan_manifest
    from date_edit.choices import mask_file

    (tmp_path / "m.csv").write_text("image,prompt,mask\na.png,x,m.png\na.png,y,auto\na.png,z,none\na.png,w,\n")
    items = plan_manifest(tmp_path / "m.csv", tmp_path / "out")
    masks = [it.options.get("mask") for it in items]
    assert masks == [str(tmp_path / "m.png"), "auto", "none", None]
    assert [mask_file(m) for m in masks] == [str(tmp_path / "m.png"), None, None, None]
