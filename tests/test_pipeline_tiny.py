"""Integration tier: the tiny random-weight SD components (real diffusers/transformers classes) on CPU."""

import json

import pytest
import torch

from date_edit.backbones import BackboneError, load_backbone, save_components, tiny_components
from date_edit.date import DateConfig
from date_edit.pipeline import EditConfig, GenerateConfig, edit, generate, reconstruct


@pytest.fixture(scope="module")
def pixels():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 48, 64, generator=g)


@pytest.mark.parametrize("skip", [0, 8])
@pytest.mark.parametrize("source", ["", "a photo of a cat"])
def test_reconstruction_is_exact(tiny_backbone, pixels, skip, source):
    result = reconstruct(tiny_backbone, pixels, source_prompt=source, config=EditConfig(steps=20, skip=skip))
    assert float((result.latents - result.source_latents).abs().max()) <= 1e-4


def test_rho_zero_equals_fixed_embedding(tiny_backbone, tiny_scorer, pixels):
    fixed = edit(tiny_backbone, pixels, "a dog", config=EditConfig(steps=10, date=None))
    zero = edit(tiny_backbone, pixels, "a dog", config=EditConfig(steps=10, date=DateConfig(rho=0.0)),
                scorer=tiny_scorer)
    assert torch.equal(fixed.images, zero.images)
    moved = edit(tiny_backbone, pixels, "a dog", config=EditConfig(steps=10, date=DateConfig(rho=0.5,
                 update_steps="0,3")), scorer=tiny_scorer)
    assert not torch.equal(fixed.images, moved.images)


def test_date_norms_and_restart_drift(tiny_backbone, tiny_scorer, pixels):
    acc = edit(tiny_backbone, pixels, "a dog", scorer=tiny_scorer,
               config=EditConfig(steps=10, date=DateConfig(rho=0.5, update_steps="0,3,6")))
    assert acc.update_steps == [0, 3, 6]
    assert all(abs(n - 0.5) <= 1e-3 for n in acc.embedding_update_norms)
    restart = edit(tiny_backbone, pixels, "a dog", scorer=tiny_scorer,
                   config=EditConfig(steps=10, date=DateConfig(rho=0.5, update_steps="0,3,6", mode="restart")))
    assert restart.embedding_drift <= 0.5 + 1e-3
    assert all(d <= 0.5 + 1e-3 for d in restart.trace.drifts)


def test_default_skip_scales_with_steps(tiny_backbone):
    assert EditConfig(steps=100).resolved(tiny_backbone).resolved_skip() == 36
    assert EditConfig(steps=10).resolved(tiny_backbone).resolved_skip() == 3
    with pytest.raises(ValueError, match="^skip .*resolved"):  # the model's default until a model is known
        EditConfig(steps=10).resolved_skip()
    assert EditConfig(steps=10, skip=8).run_steps() == 2
    with pytest.raises(ValueError, match="skip"):
        EditConfig(steps=10, skip=10)


def test_generation_is_seeded_and_date_changes_it(tiny_backbone, tiny_scorer):
    cfg = GenerateConfig(steps=6, seed=3, date=None)
    a = generate(tiny_backbone, "a red circle", config=cfg)
    b = generate(tiny_backbone, "a red circle", config=cfg)
    assert torch.equal(a.images, b.images) and a.images.shape == (1, 3, 64, 64)
    d = generate(tiny_backbone, "a red circle", config=GenerateConfig(steps=6, seed=3,
                 date=DateConfig(update_steps="50%")), scorer=tiny_scorer)
    assert d.update_steps == [0, 2, 4]
    assert not torch.equal(a.images, d.images)


def test_batched_edit_norms_are_per_sample(tiny_backbone, tiny_scorer):
    pix = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    r = edit(tiny_backbone, pix, ["a dog", "a cat"], scorer=tiny_scorer,
             config=EditConfig(steps=6, date=DateConfig(update_steps="0,2")))
    assert r.images.shape == (2, 3, 64, 64)
    assert all(abs(n - 0.5) <= 1e-3 for n in r.embedding_update_norms)


def test_every_model_is_frozen_and_in_eval(tiny_backbone):
    for module in (tiny_backbone.unet, tiny_backbone.vae, tiny_backbone.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_long_prompt_warns_and_is_truncated(tiny_backbone):
    from date_edit.backbones import PromptTruncatedWarning

    with pytest.warns(PromptTruncatedWarning):
        embeds = tiny_backbone.encode_prompt(["a cat " * 60])
    assert embeds.shape == (1, 77, 32)


def test_local_folder_loads_through_the_same_path(tmp_path, tiny_backbone, pixels):
    save_components(tiny_components(), tmp_path / "tiny-sd")
    index = json.loads((tmp_path / "tiny-sd" / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    loaded = load_backbone(str(tmp_path / "tiny-sd"), device="cpu")
    # The weights must survive the round trip bit for bit ...
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(loaded, name).state_dict(), getattr(tiny_backbone, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    # ... but two model instances need not run the same kernels (differently allocated tensors take other
    # vectorised paths on some CPUs, e.g. AMD EPYC: ~1e-6 apart), so their outputs agree within fp32 noise.
    x = tiny_backbone.encode_image(pixels)
    e = tiny_backbone.encode_prompt(["a cat"])
    torch.testing.assert_close(loaded.encode_image(pixels), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.encode_prompt(["a cat"]), e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded(x, 500, e), tiny_backbone(x, 500, e), rtol=1e-5, atol=1e-5)


def test_v_prediction_folder_converts_to_eps(tmp_path):
    comps = tiny_components()
    comps["scheduler"] = type(comps["scheduler"]).from_config(comps["scheduler"].config,
                                                              prediction_type="v_prediction")
    save_components(comps, tmp_path / "tiny-v")
    backbone = load_backbone(str(tmp_path / "tiny-v"), device="cpu")
    assert backbone.schedule.prediction_type == "v_prediction"
    x, e = torch.randn(1, 4, 8, 8), backbone.encode_prompt(["a"])
    v = backbone.unet(x, torch.tensor([500]), encoder_hidden_states=e).sample
    abar = backbone.schedule.abar(500)
    torch.testing.assert_close(backbone(x, 500, e), abar**0.5 * v + (1 - abar) ** 0.5 * x)


@pytest.mark.parametrize(
    "model,needle",
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "hf download"),
        ("nobody/no-such-model", "hf download"),
        ("/nonexistent/folder", "not a diffusers model folder"),
        ("/nonexistent/model.safetensors", "does not exist"),
    ],
)
def test_missing_models_are_one_clear_line(model, needle):
    with pytest.raises(BackboneError) as err:
        load_backbone(model, device="cpu")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_fp16_on_cpu_is_refused():
    """A usage error (the CLI exits 2), not a model that failed to load."""
    from date_edit.errors import ConfigError

    with pytest.raises(ConfigError, match="^dtype fp16 needs a GPU"):
        load_backbone("tiny", dtype="fp16", device="cpu")


def test_gradient_checkpointing_does_not_change_the_result(tiny_scorer, pixels):
    """The memory optimisation recomputes the same ops: same edit as the unoptimised path (CPU, fp32)."""
    results = []
    for mode in ("none", "all"):
        backbone = load_backbone("tiny", device="cpu", grad_checkpointing=mode)
        results.append(edit(backbone, pixels, "a dog", scorer=tiny_scorer,
                            config=EditConfig(steps=8, date=DateConfig(update_steps="0,2,4"))))
    torch.testing.assert_close(results[0].latents, results[1].latents, rtol=0, atol=1e-5)
    assert results[0].embedding_update_norms == pytest.approx(results[1].embedding_update_norms, abs=1e-6)


def test_approximate_grad_decoder_only_steers(tiny_scorer, pixels):
    """An opt-in grad decoder changes the gradient path, never the output decoder; rho stays exact."""
    backbone = load_backbone("tiny", device="cpu", grad_decoder="tiny")
    assert backbone.grad_decoder is not None
    r = edit(backbone, pixels, "a dog", scorer=tiny_scorer,
             config=EditConfig(steps=8, date=DateConfig(update_steps="0,2")))
    assert all(abs(n - 0.5) <= 1e-3 for n in r.embedding_update_norms)
    with torch.no_grad():
        assert torch.equal(r.images, backbone.decode(r.latents))
    with pytest.raises(BackboneError, match="hf download"):
        load_backbone("tiny", device="cpu", grad_decoder="taesd")


def test_update_step_reuses_the_unconditional_eps(tiny_backbone, tiny_scorer, pixels, monkeypatch):
    """An update step evaluates eps_u once (in the gradient pass) and the sampling step reuses it: one UNet
    row fewer per update step, and the same result as recomputing it (CPU, fp32)."""
    from date_edit import cfg as cfg_mod

    cfg = EditConfig(steps=8, skip=0, date=DateConfig(update_steps="0,2,4"), mask=None, p2p=None)  # the plain edit
    inversion = edit(tiny_backbone, pixels, "a dog", config=EditConfig(steps=8, skip=0, date=None)).inversion
    rows = []
    real_forward = tiny_backbone.unet.forward

    def counting_forward(sample, *args, **kwargs):
        rows.append(sample.shape[0])
        return real_forward(sample, *args, **kwargs)

    monkeypatch.setattr(tiny_backbone.unet, "forward", counting_forward)
    reused = edit(tiny_backbone, pixels, "a dog", scorer=tiny_scorer, config=cfg, inversion=inversion)
    rows_reused, rows[:] = sum(rows), []

    # the unoptimised path: the kept eps_u is never handed over, so the loop evaluates it again
    monkeypatch.setattr(cfg_mod.ClassifierFreeGuidance, "take", lambda self, x_t, t: None)
    recomputed = edit(tiny_backbone, pixels, "a dog", scorer=tiny_scorer, config=cfg, inversion=inversion)
    # 5 plain steps x 2 rows + 3 update steps x (uncond + cond with grad + cond) = 19; recomputing adds 3.
    assert (rows_reused, sum(rows)) == (19, 22)
    # A batch-of-1 and a batch-of-2 UNet call differ by ~1e-6 (kernel order); CFG 15 over 8 steps amplifies that
    # to ~2e-4. What DATE itself changes is three orders of magnitude larger.
    gap = float((reused.latents - recomputed.latents).abs().max())
    fixed = edit(tiny_backbone, pixels, "a dog", config=EditConfig(steps=8, skip=0, date=None), inversion=inversion)
    assert gap <= 1e-3 and 100 * max(gap, 1e-6) < float((reused.latents - fixed.latents).abs().max())
    assert reused.embedding_update_norms == pytest.approx(recomputed.embedding_update_norms, abs=1e-5)


def test_compiled_unet_gives_the_unoptimised_result(tiny_scorer, pixels):
    """--compile (torch.compile, Inductor on the CPU) runs the no-grad passes; same edit as eager within fp32 noise,
    the one-off compile time is counted, and DATE's gradient pass stays eager (its norms are unchanged)."""
    cfg = EditConfig(steps=6, skip=0, date=DateConfig(update_steps="0,3"))
    eager = load_backbone("tiny", device="cpu")
    compiled = load_backbone("tiny", device="cpu", compile="auto")
    assert compiled.describe()["compile"] == "default" and eager.describe()["compile"] is None
    a = edit(eager, pixels, "a dog", scorer=tiny_scorer, config=cfg)
    b = edit(compiled, pixels, "a dog", scorer=tiny_scorer, config=cfg)
    assert compiled.compile_s > 0
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-3)
    assert a.embedding_update_norms == pytest.approx(b.embedding_update_norms, abs=1e-5)
    with pytest.raises(ValueError, match="compile_mode"):
        compiled.compile("fastest")


class RecordingScorer:
    """Wraps a differentiable scorer and records the range of every image batch DATE's gradient pass feeds it."""

    differentiable = True

    def __init__(self, inner):
        self.inner, self.name, self.ranges = inner, "recording", []

    def __call__(self, images, prompts):
        if images.requires_grad:
            self.ranges.append((float(images.detach().min()), float(images.detach().max())))
        return self.inner(images, prompts)


def test_gradient_pass_sees_unclamped_images_as_the_reference_does(tiny_backbone, tiny_scorer, pixels):
    """The reference decodes x0_hat as vae.decode(x0).sample / 2 + 0.5 with no clamp: pixels outside [0, 1]
    keep their gradient. The clamp survives only as the clamped-decode ablation; the output is clamped always."""
    scorer = RecordingScorer(tiny_scorer)
    cfg = EditConfig(steps=8, skip=0, date=DateConfig(update_steps="0,3,6"))
    result = edit(tiny_backbone, pixels, "a dog", scorer=scorer, config=cfg)
    assert len(scorer.ranges) == 3
    assert min(lo for lo, _ in scorer.ranges) < 0.0 or max(hi for _, hi in scorer.ranges) > 1.0
    assert 0.0 <= float(result.images.min()) and float(result.images.max()) <= 1.0
    clamped = RecordingScorer(tiny_scorer)
    ablation = edit(tiny_backbone, pixels, "a dog", scorer=clamped, inversion=result.inversion,
                    config=EditConfig(steps=8, skip=0, date=DateConfig(update_steps="0,3,6", clamp_decoded=True)))
    assert all(0.0 <= lo and hi <= 1.0 for lo, hi in clamped.ranges)
    assert not torch.equal(ablation.latents, result.latents)


def test_gradient_pass_preprocessing_is_the_references_bilinear_resize():
    """Inside DATE's gradient pass CLIP preprocessing is Resize((224, 224)) bilinear on the float tensor (no
    rounding, clamp or crop), as in aailab-kaist/DATE; outside it, the PIL-faithful metric path."""
    import torch.nn.functional as F

    from date_edit.scorers.preprocess import (CLIP_MEAN, CLIP_STD, clip_preprocess, normalize,
                                              reference_grad_preprocessing)

    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 1.4 - 0.2  # some pixels outside [0, 1]
    with reference_grad_preprocessing():
        ref = clip_preprocess(x, 32)
    expected = normalize(F.interpolate(x, size=(32, 32), mode="bilinear", antialias=False, align_corners=False),
                         CLIP_MEAN, CLIP_STD)
    torch.testing.assert_close(ref, expected)
    metric = clip_preprocess(x, 32)
    assert metric.shape == ref.shape and not torch.allclose(metric, ref, atol=1e-2)
    with reference_grad_preprocessing(False):
        torch.testing.assert_close(clip_preprocess(x, 32), metric)


def test_generate_with_per_image_seeds_does_not_depend_on_the_batch(tiny_backbone, tiny_scorer):
    """seeds=[...]: each image's noise has its own seed, so a batched benchmark gives the images one-by-one runs
    give (the DATE update is per sample too); keep_directions records each update's (B, L, D) move."""
    cfg = GenerateConfig(steps=4, date=DateConfig(update_steps="0,2"))
    both = generate(tiny_backbone, ["a red circle", "a blue square"], config=cfg, scorer=tiny_scorer,
                    seeds=[11, 12], keep_directions=True)
    alone = generate(tiny_backbone, ["a blue square"], config=cfg, scorer=tiny_scorer, seeds=[12])
    torch.testing.assert_close(both.latents[1:], alone.latents, rtol=0, atol=1e-4)
    assert len(both.trace.directions) == 2 and both.trace.directions[0].shape[0] == 2
    norms = both.trace.directions[0].flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((2,), 0.5), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="one seed per image"):
        generate(tiny_backbone, ["a", "b"], config=GenerateConfig(steps=2, date=None), seeds=[1])
