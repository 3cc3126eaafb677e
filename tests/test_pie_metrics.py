"""PIE-Bench metrics (benchmarks/suites/pie/metrics.py): the reference evaluation's computations, checked on
random-weight and toy networks, offline, CPU, small images."""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.suites.pie.metrics import UNITS, PieMetrics

SIZE = 64
# candidate prompts: the random tiny CLIP's cosines are mostly negative (then the score clamps to 0), so tests that
# need a positive score take the first candidate that gives one
CANDIDATES = [f"a {c} {s}" for c in ("red", "green", "blue", "small", "large", "striped", "bright", "dark")
              for s in ("circle", "square", "cat", "dog", "house", "tree", "car", "flower")]


@pytest.fixture(scope="module")
def pm():
    return PieMetrics("random")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 201, (SIZE, SIZE, 3), dtype=np.uint8)  # <= 200: +26 never clips
    mask = np.zeros((SIZE, SIZE), np.float64)
    mask[16:40, 20:48] = 1
    edited = source.copy()
    noise = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    edited[mask == 1] = noise[mask == 1]
    return source, edited, mask


def positive_prompt(pm, image, keep=None):
    for prompt in CANDIDATES:
        if pm.clip_score(image, prompt, keep=keep) > 0:
            return prompt
    raise AssertionError("no candidate prompt gives a positive CLIP score")


def test_identical_images_score_perfectly(pm, images):
    from PIL import Image

    source, _, mask = images
    out = pm(Image.fromarray(source), source.copy(), mask, "a cat", "a dog")
    assert set(out) == set(UNITS)
    assert out["structure_distance"] == 0
    assert out["psnr_unedit_part"] == math.inf
    assert abs(out["lpips_unedit_part"]) < 1e-6
    assert out["mse_unedit_part"] == 0
    assert abs(out["ssim_unedit_part"] - 1) < 1e-6


def test_change_inside_the_mask_leaves_the_unedited_part_perfect(pm, images):
    source, edited, mask = images
    prompt = positive_prompt(pm, source, keep=mask)
    out = pm(source, edited, mask, prompt, prompt)
    assert out["psnr_unedit_part"] == math.inf
    assert out["mse_unedit_part"] == 0
    assert abs(out["lpips_unedit_part"]) < 1e-6
    assert abs(out["ssim_unedit_part"] - 1) < 1e-6
    assert out["structure_distance"] > 0
    assert out["clip_similarity_target_image_edit_part"] != pytest.approx(pm.clip_score(source, prompt, keep=mask))


def test_known_shift_of_the_unedited_part(pm, images):
    from torchmetrics.functional.image import peak_signal_noise_ratio
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    source, edited, mask = images
    shifted = edited.copy()
    shifted[mask == 0] += 26
    out = pm(source, shifted, mask, "a cat", "a dog")
    unedited = float((1 - mask).mean())
    mse = unedited * (26 / 255) ** 2
    assert out["mse_unedit_part"] == pytest.approx(mse, abs=1e-6)
    assert out["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)

    keep = torch.from_numpy(1 - mask).float()[None, None]
    a, b = (torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255 * keep for x in (source, shifted))
    assert out["psnr_unedit_part"] == pytest.approx(float(peak_signal_noise_ratio(a, b, data_range=1.0)), abs=1e-5)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
    ssim.update(a, b)
    assert out["ssim_unedit_part"] == pytest.approx(float(ssim.compute()), abs=1e-6)
    assert 0 < out["ssim_unedit_part"] < 1
    assert out["lpips_unedit_part"] != 0


def test_empty_and_full_masks(pm, images):
    source, edited, _ = images
    empty = pm(source, edited, np.zeros((SIZE, SIZE)), "a cat", "a dog")
    assert empty["clip_similarity_target_image_edit_part"] is None
    assert empty["psnr_unedit_part"] is not None
    full = pm(source, edited, np.ones((SIZE, SIZE)), "a cat", "a dog")
    for name in ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part"):
        assert full[name] is None
    assert full["clip_similarity_target_image_edit_part"] is not None


def hand_structure(pm, a, b, scale=1.0):
    """The reference's structure distance by hand: keys of the last block's key projection, cosine, MSE."""
    from torchvision.transforms import Normalize, Resize

    vit = pm.structure_model
    key = vit.layers[-1].attention.k_proj if hasattr(vit, "layers") else vit.encoder.layer[-1].attention.attention.key
    assert pm.structure_keys is key
    keys = []
    handle = key.register_forward_hook(lambda _m, _i, out: keys.append(out[0]))
    try:
        for img in (a, b):
            x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None] * scale
            x = Resize(224, max_size=480, antialias=False)(x)
            with torch.no_grad():
                vit(pixel_values=Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x))
    finally:
        handle.remove()
    sims = []
    for k in keys:
        assert k.shape == (1 + (224 // 8) ** 2, vit.config.hidden_size)
        unit = k / k.norm(dim=1, keepdim=True)
        sims.append(unit @ unit.T)
    return float(F.mse_loss(sims[0], sims[1]))


def test_structure_distance_by_hand(pm):
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(2))
    value = pm.structure_distance(a, b)
    assert value > 0
    assert value == pytest.approx(hand_structure(pm, a, b), rel=1e-4)
    assert pm.structure_distance(b, a) == pytest.approx(value, rel=1e-6)
    # the reference's quirk: images in 0..255 go into the ImageNet Normalize; images /255 would give another value
    assert not math.isclose(hand_structure(pm, a, b, scale=1 / 255), value, rel_tol=1e-3)


def test_clip_score_by_hand(pm, images):
    source, edited, mask = images
    for image, keep in ((edited, None), (edited, mask)):
        prompt = positive_prompt(pm, image, keep=keep)
        shown = image if keep is None else np.uint8(image * mask[..., None])
        px = pm.clip_processor(images=shown, return_tensors="pt")["pixel_values"]
        assert px.shape == (1, 3, 32, 32)
        tok = pm.tokenizer([prompt], padding=True, return_tensors="pt")
        with torch.no_grad():
            img_f = pm.clip_model.get_image_features(pixel_values=px)
            txt_f = pm.clip_model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        img_f = img_f if isinstance(img_f, torch.Tensor) else img_f.pooler_output
        txt_f = txt_f if isinstance(txt_f, torch.Tensor) else txt_f.pooler_output
        cos = float(F.cosine_similarity(img_f, txt_f))
        score = pm.clip_score(image, prompt, keep=keep)
        assert score == pytest.approx(100 * max(cos, 0), abs=1e-4)
        assert score > 0
        if keep is not None:
            assert score == pytest.approx(pm.clip_score(shown, prompt), abs=1e-6)
            assert score != pytest.approx(pm.clip_score(image, prompt), abs=1e-4)


def test_reference_offline_fails_fast_in_one_line(monkeypatch):
    from benchmarks.suites.pie.metrics import _uncached_reference_weights

    if not _uncached_reference_weights():
        pytest.skip("the reference weights are cached here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as err:
        PieMetrics("reference")
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value)
    assert "hf download" in str(err.value)


def test_toy_variant(images):
    toy = PieMetrics("toy")
    rng = np.random.default_rng(2)
    source, _, mask = images
    edited = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = toy(source, edited, mask, "a red circle", "a blue square")
    assert set(out) == set(UNITS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values()), out
    assert "toy" in toy.labels["structure_distance"] and "toy" in toy.labels["clip_similarity_target_image"]
    assert set(toy.labels) == set(UNITS)


def test_shape_mismatch(pm, images):
    source, edited, mask = images
    with pytest.raises(ValueError, match="one shape"):
        pm(source, edited[:32], mask, "a cat", "a dog")
    with pytest.raises(ValueError):
        pm.psnr(source, edited[:, :32], None)
    with pytest.raises(ValueError):
        PieMetrics("nope")
