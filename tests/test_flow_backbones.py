"""SD3 and FLUX through the backbone protocol, on tiny random models built offline: our loop against diffusers'
own pipelines, exact inversion, DATE on the flow path (what moves and what never does), folders."""

import json

import pytest
import torch

from date_edit.backbones import (
    Backbone, Flux, StableDiffusion3, load_backbone, save_components, tiny_flux_components, tiny_sd3_components,
)
from date_edit.date import DateConfig
from date_edit.pipeline import EditConfig, GenerateConfig, generate, reconstruct


@pytest.fixture(scope="module")
def sd3_pipe():
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**tiny_sd3_components(), image_encoder=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def flux_pipe():
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**tiny_flux_components(), image_encoder=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd3(sd3_pipe):
    return Backbone.from_pipeline(sd3_pipe)


@pytest.fixture(scope="module")
def flux(flux_pipe):
    return Backbone.from_pipeline(flux_pipe)


def test_sd3_generation_reproduces_diffusers(sd3, sd3_pipe):
    ref = sd3_pipe("a red cube", num_inference_steps=6, guidance_scale=5.0, height=64, width=64,
                   generator=torch.Generator().manual_seed(4), output_type="latent").images
    assert sd3.timesteps(6, (64, 64)) == pytest.approx([float(t) for t in sd3_pipe.scheduler.timesteps])
    ours = generate(sd3, "a red cube", config=GenerateConfig(steps=6, guidance_scale=5.0, seed=4, date=None))
    assert isinstance(sd3, StableDiffusion3) and ours.latents.shape == ref.shape
    torch.testing.assert_close(ours.latents, ref, rtol=1e-4, atol=1e-4)


def test_flux_generation_reproduces_diffusers(flux, flux_pipe):
    ref = flux_pipe("a red cube", num_inference_steps=6, guidance_scale=3.5, height=64, width=64,
                    generator=torch.Generator().manual_seed(4), output_type="latent").images
    assert flux.timesteps(6, (64, 64)) == pytest.approx([float(t) for t in flux_pipe.scheduler.timesteps])
    ours = generate(flux, "a red cube", config=GenerateConfig(steps=6, guidance_scale=3.5, seed=4, date=None))
    assert isinstance(flux, Flux)
    torch.testing.assert_close(flux.pack(ours.latents), ref, rtol=1e-4, atol=1e-4)  # diffusers returns them packed


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("skip", [0, 5])
def test_reconstruction_is_exact(family, skip, request):
    backbone = request.getfixturevalue(family)
    pixels = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    result = reconstruct(backbone, pixels, source_prompt="a photo", config=EditConfig(steps=12, skip=skip))
    assert float((result.latents - result.source_latents).abs().max()) <= 1e-4


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_rho_zero_is_no_date(family, request, tiny_scorer):
    backbone = request.getfixturevalue(family)
    a = generate(backbone, "a cat", config=GenerateConfig(steps=8, seed=1, date=DateConfig(rho=0.0,
                                                                                           update_steps="0,3,6")),
                 scorer=tiny_scorer)
    b = generate(backbone, "a cat", config=GenerateConfig(steps=8, seed=1, date=None))
    assert torch.equal(a.images, b.images)


@pytest.mark.parametrize("family,targets,norm", [("sd3", "tokens", "joint"), ("sd3", "all", "per-tensor"),
                                                 ("flux", "all", "joint"), ("flux", "pooled", "joint")])
def test_updates_move_targets_by_rho_and_nothing_else(family, targets, norm, request, tiny_scorer, monkeypatch):
    backbone = request.getfixturevalue(family)
    seen = []
    real = backbone.unet_inputs

    def spy(cond, latent_shape=None):
        kwargs = real(cond, latent_shape)
        seen.append((cond, {k: v.clone() for k, v in kwargs.items() if k in ("txt_ids", "img_ids", "guidance")}))
        return kwargs

    monkeypatch.setattr(backbone, "unet_inputs", spy)
    date = DateConfig(rho=0.5, update_steps="0,3,6", targets=targets, norm=norm)
    trace = generate(backbone, "a cat", config=GenerateConfig(steps=10, seed=2, date=date),
                     scorer=tiny_scorer).trace
    names = {"tokens": ["tokens"], "pooled": ["pooled"], "all": ["tokens", "pooled"]}[targets]
    assert trace.update_steps == [0, 3, 6] and trace.targets == names
    if norm == "joint":
        assert trace.update_norms == pytest.approx([0.5] * 3, abs=1e-3)
    else:
        for name in names:
            assert trace.update_norms_per_tensor[name] == pytest.approx([0.5] * 3, abs=1e-3)
    last = seen[-1][0]
    if family == "sd3":  # the zero pad block of the CLIP part stays exactly zero
        clip_width = 32
        assert not last["tokens"][:, :77, clip_width:].any()
        assert "tokens" not in names or last["tokens"][:, :77, :clip_width].abs().sum() > 0
    else:  # position ids and the embedded guidance are the same in every call
        first_ids = seen[0][1]
        for _, ids in seen:
            for key in ("txt_ids", "img_ids", "guidance"):
                assert torch.equal(ids[key], first_ids[key])
        assert torch.equal(seen[-1][1]["guidance"], torch.full((1,), 7.5))


def test_flux_gradient_pass_is_one_forward_without_an_unconditional_branch(flux, tiny_scorer, monkeypatch):
    calls = []
    real = flux.unet.forward

    def counting(hidden_states, *args, **kwargs):
        calls.append(hidden_states.shape[0])
        return real(hidden_states, *args, **kwargs)

    monkeypatch.setattr(flux.unet, "forward", counting)
    generate(flux, "a cat", config=GenerateConfig(steps=4, date=DateConfig(update_steps="0")), scorer=tiny_scorer)
    assert calls == [1] * 5  # 4 steps + the gradient pass, batch 1 each: no CFG batch


@pytest.mark.parametrize("factory,family,cls", [(tiny_sd3_components, "StableDiffusion3Pipeline", StableDiffusion3),
                                                (tiny_flux_components, "FluxPipeline", Flux)])
def test_tiny_folders_round_trip(factory, family, cls, tmp_path):
    components = factory()
    save_components(components, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model_index.json").read_text())["_class_name"] == family
    loaded = load_backbone(str(tmp_path / "m"), device="cpu")
    direct = Backbone.from_components("direct", components, device="cpu")
    assert isinstance(loaded, cls)
    a, b = loaded.encode_condition(["a cat"]), direct.encode_condition(["a cat"])
    torch.testing.assert_close(a["tokens"], b["tokens"])
    torch.testing.assert_close(a["pooled"], b["pooled"])


def test_real_size_flow_architectures_have_their_parameter_counts():
    from date_edit.backbones import flux_components, sd3_components

    with torch.device("meta"):
        sd3 = sd3_components(device="meta")
        flux = flux_components(device="meta")

    def billions(module):
        return sum(p.numel() for p in module.parameters()) / 1e9

    assert abs(billions(sd3["transformer"]) - 2.03) < 0.02  # SD3-medium MMDiT
    assert abs(billions(sd3["text_encoder_3"]) - 4.76) < 0.02  # T5-XXL encoder
    assert abs(billions(flux["transformer"]) - 11.9) < 0.05  # FLUX.1-dev


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flowedit_with_the_source_prompt_returns_the_input(family, request):
    from date_edit.pipeline import edit

    backbone = request.getfixturevalue(family)
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    config = EditConfig(steps=10, skip=2, cfg_source=4.0, cfg_target=4.0, date=None, method="flowedit")
    result = edit(backbone, pixels, "a photo of a cat", source_prompt="a photo of a cat", config=config)
    assert float((result.latents - result.source_latents).abs().max()) <= 1e-5
    changed = edit(backbone, pixels, "a watercolor dog", source_prompt="a photo of a cat", config=config)
    assert float((changed.latents - changed.source_latents).abs().max()) > 1e-3  # a real edit moves


def test_flowedit_runs_date_on_the_target_branch_and_auto_picks_it_for_flux(flux, sd3, tiny_backbone,
                                                                             tiny_scorer):
    from date_edit.errors import ConfigError
    from date_edit.pipeline import edit

    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    config = EditConfig(steps=10, skip=2, date=DateConfig(rho=0.5, update_steps="0,4"))
    result = edit(flux, pixels, "a dog", source_prompt="a cat", config=config, scorer=tiny_scorer)
    assert result.config["method"] == "flowedit" and result.inversion is None
    assert result.trace.update_steps == [0, 4] and result.trace.update_norms == pytest.approx([0.5, 0.5], abs=1e-3)
    assert config.resolved_method(sd3) == "ddpm"
    with pytest.raises(ConfigError, match="flow model"):
        EditConfig(method="flowedit").resolved_method(tiny_backbone)


def test_flux_schnell_has_no_guidance_input_and_reproduces_diffusers():
    from diffusers import FluxPipeline

    pipe = FluxPipeline(**tiny_flux_components(guidance_embeds=False), image_encoder=None, feature_extractor=None)
    pipe.set_progress_bar_config(disable=True)
    backbone = Backbone.from_pipeline(pipe)
    assert not backbone.guidance_embeds
    cond, uncond, scale = backbone.guidance(backbone.encode_condition(["a cat"]), backbone.unconditional(1), 3.5)
    assert uncond is None and scale == 1.0 and "guidance" not in cond.extras
    ref = pipe("a cat", num_inference_steps=4, guidance_scale=0.0, height=64, width=64,
               generator=torch.Generator().manual_seed(1), output_type="latent").images
    ours = generate(backbone, "a cat", config=GenerateConfig(steps=4, guidance_scale=0.0, seed=1, date=None))
    torch.testing.assert_close(backbone.pack(ours.latents), ref, rtol=1e-4, atol=1e-4)


def test_tiny_autoencoder_gradient_decoder_is_refused_for_16_channel_latents(sd3):
    from date_edit.errors import ConfigError

    with pytest.raises(ConfigError, match="use --grad-decoder vae"):
        sd3.set_grad_decoder("tiny")
    assert sd3.grad_decoder is None
