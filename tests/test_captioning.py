"""The captioners (:mod:`date_edit.captioning`, :mod:`date_edit.toy.captioner`): the protocol, BLIP (the real tiny
random-weight model; the real default weights fail offline in one line), the toy world's captioner with the shipped
toy CLIP, the caption cache, specs and plugins. Offline, CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from date_edit import captioning
from date_edit.captioning import (
    CaptionCache,
    Captioner,
    available_captioners,
    build_captioner,
    default_captioner,
    image_key,
)
from date_edit.errors import CaptionerError, ConfigError
from date_edit.toy import world

# Five fixed scenes of one to three objects the toy captioner reads right (two-object ones as the edit study's).
SCENES = [
    [("red", "circle", 20, 20, 20)],
    [("blue", "square", 40, 32, 24)],
    [("yellow", "triangle", 16, 18, 18), ("purple", "circle", 44, 44, 20)],
    [("green", "square", 48, 16, 18), ("red", "triangle", 18, 46, 22)],
    [("red", "square", 14, 14, 16), ("green", "circle", 48, 18, 16), ("blue", "triangle", 30, 46, 18)],
]


def scene(objects) -> world.Scene:
    """A scene from ``(colour, shape, cx, cy, size)`` tuples."""
    return world.Scene(tuple(world.ToyObject(c, s, float(x), float(y), float(z)) for c, s, x, y, z in objects))


def pixels(sc: world.Scene, size: int = world.IMAGE_SIZE) -> torch.Tensor:
    """A rendered scene as ``(1, 3, size, size)`` in [0, 1]."""
    return torch.from_numpy(world.render(sc, size)).permute(2, 0, 1).float()[None] / 255.0


@pytest.fixture(scope="module")
def tiny_blip():
    """The real tiny BLIP (random weights, built in-process)."""
    return build_captioner("blip:tiny")


@pytest.fixture(scope="module")
def toy_captioner():
    """The toy world's captioner with the shipped toy CLIP."""
    return build_captioner("toy")


class Counting:
    """Wraps a captioner and counts its calls."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def __call__(self, images: torch.Tensor) -> list[str]:
        self.calls += 1
        return self.inner(images)


# ------------------------------------------------------------------------------------------------ BLIP


def test_tiny_blip_builds_offline_and_gives_one_string_per_image(tiny_blip):
    assert isinstance(tiny_blip, Captioner) and tiny_blip.name == "blip:tiny"
    images = torch.rand(3, 3, 48, 40)  # any size: resized to the model's input
    captions = tiny_blip(images)
    assert isinstance(captions, list) and len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert all(c == c.strip() and "\n" not in c for c in captions)
    assert tiny_blip(images[:1]) == captions[:1]  # greedy: the same image, the same caption


def test_default_blip_offline_with_an_empty_cache_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    import date_edit.hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # transformers and huggingface_hub read these once, at import: an earlier test may have imported them
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(date_edit.hub, "hub_reachable", lambda *a, **k: False)
    for spec, weights in (("blip", captioning.BLIP_LARGE), ("blip:base", captioning.BLIP_BASE)):
        with pytest.raises(CaptionerError) as info:
            build_captioner(spec)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"captioner {spec}:"), message
        assert f"hf download {weights}" in message and "--source-prompt TEXT" in message, message
        assert "--source-prompt none" in message, message
    assert not info.value.usage  # a weights error: the CLI exits 1, as a model that cannot load


def test_a_blip_folder_loads_with_its_own_preprocessing(tiny_blip, tmp_path):
    """``blip:FOLDER``: the saved tiny model and a BLIP processor load offline through the files path, with the
    processor's size, mean and std."""
    from transformers import BlipImageProcessor, BlipProcessor

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32}, image_mean=mean, image_std=std)
    BlipProcessor(image_processor=image_processor, tokenizer=tiny_blip.tokenizer).save_pretrained(tmp_path)
    tiny_blip.model.save_pretrained(tmp_path)
    loaded = build_captioner(f"blip:{tmp_path}")
    assert loaded.name == f"blip:{tmp_path}" and loaded.size == 32
    assert np.allclose(loaded.mean, mean) and np.allclose(loaded.std, std)
    captions = loaded(torch.rand(2, 3, 32, 32))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_a_folder_that_is_not_blip_or_not_there_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CaptionerError) as info:
        build_captioner(f"blip:{tmp_path}")
    assert "\n" not in str(info.value) and "could not load BLIP" in str(info.value)
    with pytest.raises(CaptionerError) as info:
        build_captioner(f"blip:{tmp_path / 'missing'}")
    assert "\n" not in str(info.value) and "no folder" in str(info.value) and "--source-prompt" in str(info.value)


def test_ane_with_blip_offline_fails_in_one_line_with_exit_1(tmp_path):
    """``date-edit ane --captioner blip`` with no weights offline: the CaptionerError line (with ane's own way round
    it), exit 1 as a model that cannot load, nothing written."""
    exe = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([exe, "ane", "--model", "tiny", "--captioner", "blip", "--category", "animals", "--limit",
                          "1", "--seeds", "1", "--steps", "2", "-q", "--out", str(tmp_path / "ane")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert run.returncode == 1, run.stderr
    assert len(errors) == 1 and "captioner blip" in errors[0] and f"hf download {captioning.BLIP_LARGE}" in errors[0]
    assert "--captioner none" in errors[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "ane").exists()


# ------------------------------------------------------------------------------------------------ toy


def test_toy_captioner_reads_toy_photos_with_the_toy_models_own_clip(toy_captioner):
    assert toy_captioner.clip.name == "clip:toy"  # never clip:toy-heldout (the evaluator), never the judge
    scenes = [scene(s) for s in SCENES]
    batch = torch.cat([pixels(s) for s in scenes])
    said = toy_captioner(batch)
    right = sum(a == world.caption(s) for a, s in zip(said, scenes))
    assert len(said) == len(scenes) and right >= 4, list(zip(said, map(world.caption, scenes)))
    assert toy_captioner(pixels(scenes[0])) == [said[0]]  # alone as in a batch
    # another size is resized to the CLIP's input, as the scorer does
    assert toy_captioner(pixels(scenes[1], 128)) == [world.caption(scenes[1])]


def test_toy_captioner_candidates_cover_the_grammar():
    from date_edit.toy.captioner import candidate_captions, candidates

    found = candidates()
    captions = candidate_captions()
    assert len(captions) == len(set(captions)) == 15 + 120 + 680
    assert set(world.single_object_prompts()) <= set(captions)
    assert set(world.two_object_prompts()) <= set(captions) and set(world.three_object_prompts()) <= set(captions)
    assert "a red circle and a red circle" in captions and "a red circle and a red square" in captions
    rng = np.random.default_rng(0)
    assert all(world.caption(world.random_scene(rng, 1 + i % 3)) in captions for i in range(30))
    assert sum(c.repeats for c in found if c.objects == 2) == 15


# ------------------------------------------------------------------------------------------------ cache


def test_cache_hits_on_identical_pixels_and_misses_on_different_ones(toy_captioner):
    counting = Counting(toy_captioner)
    cache = CaptionCache()
    a = pixels(scene(SCENES[0]))
    first = cache.get_or_caption(counting, a)
    assert first[0] == "a red circle" and first[2] is False and first[1] >= 0 and counting.calls == 1
    again = cache.get_or_caption(counting, a.clone())
    assert again == ("a red circle", 0.0, True) and counting.calls == 1
    other = cache.get_or_caption(counting, pixels(scene(SCENES[1])))
    assert other[2] is False and counting.calls == 2
    # a change below the 8-bit grid is the same image; one 8-bit step is another
    assert image_key(a + 0.4 / 255) == image_key(a) != image_key((a + 1.0 / 255).clamp(0, 1))
    assert image_key(a) != image_key(a[..., :32, :32])  # the shape counts
    counting.name = "another"
    assert cache.get_or_caption(counting, a)[2] is False and counting.calls == 3  # keyed by captioner too


def test_cache_persists_reloads_and_ignores_a_corrupt_file(toy_captioner, tmp_path):
    path = tmp_path / "sub" / "captions.json"
    cache = CaptionCache(path)
    a = pixels(scene(SCENES[2]))
    caption, _, cached = cache.get_or_caption(toy_captioner, a)
    assert not cached and not path.exists()
    cache.save()
    assert json.loads(path.read_text()) == {CaptionCache.key("toy", a): caption}
    assert [p.name for p in path.parent.iterdir()] == ["captions.json"]  # no temporary file left
    counting = Counting(toy_captioner)
    assert CaptionCache(path).get_or_caption(counting, a) == (caption, 0.0, True) and counting.calls == 0
    path.write_text("{not json")
    with pytest.warns(UserWarning, match="ignored"):
        broken = CaptionCache(path)
    assert broken.captions == {}
    assert broken.get_or_caption(counting, a)[0] == caption and counting.calls == 1
    broken.save()
    assert json.loads(path.read_text()) == {CaptionCache.key("toy", a): caption}
    path.write_text(json.dumps(["a list"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert CaptionCache(path).captions == {}
    assert caught


# ------------------------------------------------------------------------------------------------ specs


def test_specs_names_and_defaults():
    names = available_captioners()
    assert {"blip", "toy"} <= set(names) and all(isinstance(v, str) and "\n" not in v for v in names.values())
    for spec in ("nope", "blipx", "none", ""):
        with pytest.raises(ConfigError) as info:
            build_captioner(spec)
        assert info.value.param == "captioner" and "\n" not in str(info.value) and "blip, toy" in str(info.value)
        assert info.value.message_for("--captioner").startswith("--captioner ")
    assert default_captioner("toy", "sd") == "toy"
    assert all(default_captioner(m, "sd") == "blip:tiny" for m in ("tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux"))
    assert default_captioner("CompVis/stable-diffusion-v1-4", "sd") == "blip"
    assert default_captioner("black-forest-labs/FLUX.1-dev", "flux") == "blip"


PLUGIN = '''
class Fixed:
    """A plugin captioner: one fixed caption."""

    def __init__(self, device="cpu", variant=""):
        self.name = "fixed" + (":" + variant if variant else "")
        self.device, self.variant = device, variant

    def __call__(self, images):
        return [("a photo " + self.variant).strip()] * images.shape[0]


def broken(device="cpu"):
    raise RuntimeError("no weights here\\nsecond line")


NOT_A_CAPTIONER = 3


def not_callable(device="cpu"):
    return NOT_A_CAPTIONER
'''


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """Three captioners under the ``date_edit.captioners`` entry points, from a module on sys.path."""
    (tmp_path / "fake_captioner_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_captioner_plugin", raising=False)
    ours = [metadata.EntryPoint(name=n, value=f"fake_captioner_plugin:{v}", group=captioning.ENTRY_POINT_GROUP)
            for n, v in (("fixed", "Fixed"), ("broken", "broken"), ("number", "not_callable"))]
    real = metadata.entry_points

    def entry_points(**params):
        if params.get("group") == captioning.ENTRY_POINT_GROUP:
            return metadata.EntryPoints(ours)
        return real(**params)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_a_plugin_is_listed_built_with_device_and_variant(plugins):
    names = available_captioners()
    assert list(names)[:2] == ["blip", "toy"] and names["fixed"] == "plugin fake_captioner_plugin:Fixed"
    made = build_captioner("fixed", device="cpu")
    assert made.device == "cpu" and made(torch.zeros(2, 3, 8, 8)) == ["a photo", "a photo"]
    assert build_captioner("fixed:studio")(torch.zeros(1, 3, 8, 8)) == ["a photo studio"]
    text, _, cached = CaptionCache().get_or_caption(made, torch.zeros(1, 3, 8, 8))
    assert text == "a photo" and not cached
    with pytest.raises(CaptionerError) as info:
        build_captioner("broken")
    message = str(info.value)
    assert "\n" not in message and "no weights here" in message and "--source-prompt" in message
    with pytest.raises(CaptionerError, match="cannot caption"):
        build_captioner("number")
    with pytest.raises(ConfigError, match="fixed"):  # the unknown-name message lists the plugins too
        build_captioner("unknown")
