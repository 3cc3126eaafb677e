"""Tests for date_edit.imaging: every input file is built in tmp_path with Pillow, so nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from date_edit import imaging
from date_edit.imaging import (
    ImageError,
    LoadedImage,
    OutputError,
    ResizeMode,
    default_output_name,
    load_image,
    save_png,
    target_size,
    to_pil,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _rgb_at(loaded: LoadedImage, x: int, y: int) -> tuple[int, int, int]:
    """8-bit RGB of one processed pixel."""
    return tuple(round(float(v) * 255) for v in loaded.pixels[0, :, y, x])


def _one_line_naming(err: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ---------------------------------------------------------------- target_size


@pytest.mark.parametrize(
    ("w", "h", "size", "multiple", "mode", "expected"),
    [
        (451, 300, 512, 8, "fit", (512, 344)),  # 300 * 512 / 451 = 340.6 -> 42.57 eighths -> 43 * 8
        (300, 451, 512, 8, "fit", (344, 512)),
        (451, 300, 512, 64, "fit", (512, 320)),  # 340.6 / 64 = 5.32 -> 5 * 64
        (600, 400, 512, 8, "fit", (512, 344)),  # 341.33 -> 344
        (512, 512, 512, 8, "fit", (512, 512)),
        (100, 50, 512, 8, "fit", (512, 256)),  # upscaling keeps the rule
        (1000, 10, 512, 8, "fit", (512, 8)),  # 5.12 px would round to 8 anyway; never below `multiple`
        (4000, 10, 512, 8, "fit", (512, 8)),  # 1.28 px -> 0 eighths -> clamped to 8
        (451, 300, 512, 8, "crop", (512, 512)),
        (451, 300, 500, 64, "crop", (512, 512)),  # 500 / 64 = 7.81 -> 8 * 64
        (451, 300, 500, 8, "stretch", (504, 504)),  # 62.5 eighths: halves round up
        (451, 300, 60, 8, ResizeMode.STRETCH, (64, 64)),
    ],
)
def test_target_size_rules(w, h, size, multiple, mode, expected):
    assert target_size(w, h, size, multiple, mode) == expected


def test_target_size_always_positive_multiples():
    for w, h in [(1, 1), (7, 3000), (3000, 7), (451, 300), (999, 1001)]:
        for size in (8, 100, 513, 1024):
            for multiple in (1, 8, 64):
                for mode in ResizeMode:
                    tw, th = target_size(w, h, size, multiple, mode)
                    assert tw > 0 and th > 0 and tw % multiple == 0 and th % multiple == 0


@pytest.mark.parametrize("bad", [{"size": 0}, {"multiple": -8}, {"width": 0}, {"size": 1.5}, {"mode": "zoom"}])
def test_target_size_rejects_bad_arguments(bad):
    args = {"width": 451, "height": 300, "size": 512, "multiple": 8, "mode": "fit", **bad}
    with pytest.raises(ValueError):
        target_size(**args)


# ---------------------------------------------------------------- load_image: conversions


def test_exif_orientation_6_rotates_before_resize(tmp_path):
    # stored 48 wide x 32 high with a red block in the stored top-left corner; orientation 6 means
    # "rotate 90 degrees clockwise to display", so the display is 32x48 with the block top-right
    stored = Image.new("RGB", (48, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())

    loaded = load_image(path, size=48, multiple=8)
    assert loaded.original_size == (32, 48)  # swapped vs stored (48, 32)
    assert loaded.processed_size == (32, 48)
    assert loaded.pixels.shape == (1, 3, 48, 32)
    assert "EXIF orientation 6 applied" in loaded.notes
    r, g, b = _rgb_at(loaded, 32 - 8, 8)  # centre of the block, now in the top-right corner
    assert r > 200 and g < 60 and b < 60
    r, _g, b = _rgb_at(loaded, 8, 8)  # top-left is now background
    assert b > 200 and r < 60


def test_exif_orientation_applied_before_fit_resize(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "portrait.jpg"
    Image.new("RGB", (400, 200), "gray").save(path, exif=exif.tobytes())
    loaded = load_image(path, size=64, multiple=8)
    assert loaded.original_size == (200, 400)
    assert loaded.processed_size == (32, 64)  # portrait, because orientation came first


def test_rgba_transparent_pixels_become_white(tmp_path):
    im = Image.new("RGBA", (16, 16), (255, 0, 0, 0))  # transparent red
    im.paste((0, 0, 255, 255), (0, 0, 8, 16))  # left half opaque blue
    im.paste((255, 0, 0, 128), (8, 8, 16, 16))  # bottom-right: half-transparent red
    path = tmp_path / "rgba.png"
    im.save(path)
    loaded = load_image(path, size=16, multiple=8)
    assert "RGBA composited on white" in loaded.notes
    assert _rgb_at(loaded, 12, 2) == (255, 255, 255)  # the colour under alpha 0 must not leak
    assert _rgb_at(loaded, 3, 3) == (0, 0, 255)
    r, g, b = _rgb_at(loaded, 12, 12)
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_la_greyscale_with_alpha(tmp_path):
    im = Image.new("LA", (16, 16), (0, 0))
    path = tmp_path / "la.png"
    im.save(path)
    loaded = load_image(path, size=16, multiple=8)
    assert _rgb_at(loaded, 5, 5) == (255, 255, 255)


@pytest.mark.parametrize(("value", "expected"), [(32768, 128), (65535, 255), (0, 0), (1000, 4), (257 * 77, 77)])
def test_16bit_greyscale_scaled_not_clipped(tmp_path, value, expected):
    im = Image.new("I;16", (16, 16), value)
    path = tmp_path / "grey16.png"
    im.save(path)
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I")  # really a 16-bit file
    loaded = load_image(path, size=16, multiple=8)
    assert _rgb_at(loaded, 4, 4) == (expected, expected, expected)
    assert any("converted to 8-bit RGB" in n for n in loaded.notes)


def test_32bit_float_greyscale_tiff(tmp_path):
    arr = np.full((16, 16), 0.5, dtype=np.float32)
    arr[:, 8:] = 1.0
    path = tmp_path / "float.tif"
    Image.fromarray(arr).save(path)  # float32 array -> mode "F"
    loaded = load_image(path, size=16, multiple=8)
    assert _rgb_at(loaded, 2, 2) == (128, 128, 128)
    assert _rgb_at(loaded, 12, 2) == (255, 255, 255)


def test_palette_and_palette_with_transparency(tmp_path):
    im = Image.new("P", (16, 16), 1)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    plain = tmp_path / "pal.png"
    im.save(plain)
    loaded = load_image(plain, size=16, multiple=8)
    assert "palette converted to RGB" in loaded.notes
    assert _rgb_at(loaded, 3, 3) == (0, 200, 0)

    im.paste(0, (0, 0, 8, 16))
    transparent = tmp_path / "pal_t.png"
    im.save(transparent, transparency=0)
    loaded = load_image(transparent, size=16, multiple=8)
    assert "palette with transparency composited on white" in loaded.notes
    assert _rgb_at(loaded, 2, 2) == (255, 255, 255)  # index 0 is black but transparent
    assert _rgb_at(loaded, 12, 2) == (0, 200, 0)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    loaded = load_image(path, size=16, multiple=8)
    assert "CMYK converted to RGB" in loaded.notes
    r, g, b = _rgb_at(loaded, 8, 8)
    assert r > 240 and g < 15 and b < 15


def test_greyscale_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (16, 16), 100).save(path)
    loaded = load_image(path, size=16, multiple=8)
    assert loaded.pixels.shape == (1, 3, 16, 16)
    assert "greyscale converted to RGB" in loaded.notes
    assert _rgb_at(loaded, 7, 7) == (100, 100, 100)


def test_animated_gif_uses_first_frame(tmp_path):
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue, Image.new("RGB", (16, 16), (0, 255, 0))], duration=100, loop=0)
    loaded = load_image(path, size=16, multiple=8)
    assert any("animated" in n and "3 frames" in n and "first frame" in n for n in loaded.notes)
    r, _g, b = _rgb_at(loaded, 8, 8)
    assert r > 240 and b < 15


def test_crop_mode_keeps_the_centre(tmp_path):
    im = Image.new("RGB", (60, 20), (255, 0, 0))
    im.paste((0, 255, 0), (20, 0, 40, 20))  # centre square green, sides red
    path = tmp_path / "wide.png"
    im.save(path)
    loaded = load_image(path, size=16, multiple=8, resize="crop")
    assert loaded.processed_size == (16, 16)
    assert loaded.pixels[0, 1].mean() > 0.97 and loaded.pixels[0, 0].mean() < 0.03
    assert loaded.notes[-1] == "resized 60x20 -> 16x16 (crop: centre 20x20)"

    stretched = load_image(path, size=16, multiple=8, resize=ResizeMode.STRETCH)
    assert stretched.processed_size == (16, 16)
    assert _rgb_at(stretched, 1, 8)[0] > 240  # red side kept when stretching


def test_fit_resize_note_and_value_range(tmp_path):
    path = tmp_path / "cat.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 451, 3), dtype=np.uint8)).save(path)
    loaded = load_image(path, size=64, multiple=8)
    assert loaded.processed_size == (64, 40) == target_size(451, 300, 64, 8, "fit")
    assert loaded.original_size == (451, 300)
    assert loaded.notes == ("resized 451x300 -> 64x40 (fit)",)
    assert loaded.pixels.dtype == torch.float32 and loaded.pixels.is_contiguous()
    assert 0.0 <= float(loaded.pixels.min()) and float(loaded.pixels.max()) <= 1.0
    assert loaded.source_path == str(path)


def test_rgb_at_target_size_is_exact_and_untouched(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    path = tmp_path / "exact.png"
    Image.fromarray(arr).save(path)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    loaded = load_image(path, size=24, multiple=8)
    assert loaded.notes == ()
    assert np.array_equal(np.asarray(to_pil(loaded.pixels)[0]), arr)  # load -> to_pil is lossless
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # the source is only read


# ---------------------------------------------------------------- load_image: refusals


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert _one_line_naming(err, path).startswith("no such file:")


def test_directory_named_like_an_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.mkdir()
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert "directory" in _one_line_naming(err, path)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert "empty" in _one_line_naming(err, path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\nsecond line\n")
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert "cannot be decoded" in _one_line_naming(err, path)


def test_truncated_jpeg(tmp_path):
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert "cannot be decoded" in _one_line_naming(err, path)


def test_over_max_pixels(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80), "white").save(path)
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8, max_pixels=5000)
    msg = _one_line_naming(err, path)
    assert "8,000" in msg and "5,000" in msg and "downscale" in msg
    assert load_image(path, size=64, multiple=8, max_pixels=None).original_size == (100, 80)


@pytest.mark.parametrize("wh", [(1, 1), (7, 100), (100, 7)])
def test_too_small(tmp_path, wh):
    path = tmp_path / "tiny.png"
    Image.new("RGB", wh, "white").save(path)
    with pytest.raises(ImageError) as err:
        load_image(path, size=64, multiple=8)
    assert "too small" in _one_line_naming(err, path)


def test_bad_resize_mode_is_value_error(tmp_path):
    path = tmp_path / "ok.png"
    Image.new("RGB", (16, 16)).save(path)
    with pytest.raises(ValueError, match="fit, crop, stretch"):
        load_image(path, size=64, multiple=8, resize="zoom")


def test_shipped_samples_load_and_are_licensed():
    licences = (SAMPLES / "LICENSES.md").read_text()
    total = 0
    for name in ("chelsea.png", "coffee.jpg", "astronaut.png", "camera.png"):
        path = SAMPLES / name
        total += path.stat().st_size
        assert f"`{name}`" in licences
        loaded = load_image(path, size=64, multiple=8)
        assert max(loaded.processed_size) == 64
    assert total < 1_500_000


# ---------------------------------------------------------------- to_pil


def test_to_pil_rounds_and_clamps():
    x = torch.tensor([-0.5, 0.5, 1.5, float("nan")]).view(1, 1, 1, 4).expand(2, 3, 1, 4).clone()
    images = to_pil(x)
    assert len(images) == 2 and images[0].mode == "RGB" and images[0].size == (4, 1)
    assert np.asarray(images[1])[0, :, 0].tolist() == [0, 128, 255, 0]


@pytest.mark.parametrize("shape", [(3, 4, 4), (1, 4, 4, 4), (1, 1, 4, 4)])
def test_to_pil_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match="B, 3, H, W"):
        to_pil(torch.zeros(shape))


# ---------------------------------------------------------------- save_png


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_save_png_writes_metadata_and_creates_parents(tmp_path):
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    meta = {"prompt": "a cat in a café 猫", "config": {"seed": 3, "rho": 0.5, "steps": [1, 2]}, "seed": 3}
    out = save_png(img, tmp_path / "a" / "b" / "out.png", metadata=meta)
    assert out == tmp_path / "a" / "b" / "out.png"
    with Image.open(out) as check:
        assert check.format == "PNG"
        assert check.getpixel((0, 0)) == (10, 20, 30)
        text = dict(check.text)
    assert text["prompt"] == "a cat in a café 猫"
    assert json.loads(text["config"]) == {"seed": 3, "rho": 0.5, "steps": [1, 2]}
    assert text["seed"] == "3"
    assert _leftovers(out.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a typical temp file


def test_save_png_refuses_existing_without_overwrite(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(OutputError) as err:
        save_png(Image.new("RGB", (8, 8)), target)
    assert str(err.value) == f"{target} exists (overwrite was not asked for); choose another output path"
    assert target.read_bytes() == b"old"
    save_png(Image.new("RGB", (8, 8)), target, overwrite=True)
    assert target.read_bytes().startswith(b"\x89PNG")


def test_save_png_never_overwrites_protected_input(tmp_path):
    source = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(source)
    original = source.read_bytes()
    link = tmp_path / "link.png"
    link.symlink_to(source)
    spellings = [source, tmp_path / "sub" / ".." / "photo.png", link]
    (tmp_path / "sub").mkdir()
    for target in spellings:
        with pytest.raises(OutputError) as err:
            save_png(Image.new("RGB", (8, 8), "blue"), target, overwrite=True, protect=[str(source)])
        assert "input image" in _one_line_naming(err, target)
    assert source.read_bytes() == original
    assert _leftovers(tmp_path) == []


def test_save_png_failure_leaves_no_temp_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imaging.os, "fsync", disk_full)
    with pytest.raises(OutputError) as err:
        save_png(Image.new("RGB", (8, 8)), target, overwrite=True)
    assert "No space left on device" in _one_line_naming(err, target)
    assert target.read_bytes() == b"previous result"
    assert _leftovers(tmp_path) == []


def test_save_png_interrupt_removes_temp_and_reraises(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(imaging.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_save_png_unwritable_mode_leaves_no_temp(tmp_path):
    with pytest.raises(OutputError):
        save_png(Image.new("CMYK", (8, 8)), tmp_path / "out.png")  # PNG cannot hold CMYK
    assert list(tmp_path.iterdir()) == []


def test_save_png_does_not_clobber_a_file_that_appears_while_writing(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    real_fsync = os.fsync

    def racing_fsync(fd):
        real_fsync(fd)
        if not target.exists():
            target.write_bytes(b"someone else")

    monkeypatch.setattr(imaging.os, "fsync", racing_fsync)
    with pytest.raises(OutputError, match="exists"):
        save_png(Image.new("RGB", (8, 8)), target)
    assert target.read_bytes() == b"someone else"
    assert _leftovers(tmp_path) == []


def test_save_png_bad_targets(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as err:
        save_png(Image.new("RGB", (8, 8)), blocker / "out.png")
    assert "cannot create directory" in _one_line_naming(err, blocker)
    (tmp_path / "d.png").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "d.png", overwrite=True)
    with pytest.raises(OutputError, match=r"\.png"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "out.jpg")
    with pytest.raises(ValueError, match="JSON"):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "m.png", metadata={"x": object()})
    assert not (tmp_path / "m.png").exists() and _leftovers(tmp_path) == []


# ---------------------------------------------------------------- default_output_name


@pytest.mark.parametrize(
    ("input_path", "prompt", "seed", "expected"),
    [
        ("photos/cat.jpg", "A cat wearing a HAT!", 42, "cat_a-cat-wearing-a-hat_s42.png"),
        (None, "a red circle", 0, "gen_a-red-circle_s0.png"),
        (Path("in/x.y.png"), "Café crème", 7, "x.y_cafe-creme_s7.png"),
        (
            "a.png",
            "one two three four five six seven eight nine",
            1,
            "a_one-two-three-four-five-six-seven-eight_s1.png",
        ),
        ("a.png", "!!!", 1, "a_untitled_s1.png"),
    ],
)
def test_default_output_name(input_path, prompt, seed, expected):
    assert default_output_name(input_path, prompt, seed) == expected


def test_default_output_name_slug_limits():
    name = default_output_name(None, "x" * 100 + " y", 5, suffix=".jpg")
    slug = name[len("gen_") : -len("_s5.jpg")]
    assert len(slug) == 40 and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert name.endswith("_s5.jpg")
