"""SDXL through the backbone protocol: the tiny random SDXL built offline, its condition checked against diffusers'
own StableDiffusionXLPipeline, DATE on several tensors, folders, single files and a user's own pipeline."""

import json
import struct

import pytest
import torch

from date_edit.backbones import (
    Backbone, BackboneError, StableDiffusionXL, load_backbone, save_components, single_file_family, tiny_components,
    tiny_sdxl_components,
)
from date_edit.conditioning import Conditioning, cat_conditions
from date_edit.date import DateConfig
from date_edit.errors import ConfigError
from date_edit.pipeline import GenerateConfig, generate


@pytest.fixture(scope="module")
def xl():
    return load_backbone("tiny-sdxl", device="cpu")


@pytest.fixture(scope="module")
def xl_pipe():
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline(**tiny_sdxl_components())


def test_condition_matches_diffusers_encode_prompt(xl, xl_pipe):
    prompts = ["a red cube on a table", "a cat"]
    cond = xl.encode_condition(prompts, size=(64, 48))
    embeds, neg, pooled, neg_pooled = xl_pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1,
                                                            do_classifier_free_guidance=True)
    torch.testing.assert_close(cond["tokens"], embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cond["pooled"], pooled, rtol=1e-5, atol=1e-5)
    uncond = xl.unconditional(2, size=(64, 48))
    assert torch.equal(uncond["tokens"], torch.zeros_like(neg)) and not neg.any()  # force_zeros_for_empty_prompt
    assert torch.equal(uncond["pooled"], torch.zeros_like(neg_pooled)) and not neg_pooled.any()
    # add_time_ids: (original size, crop corner, target size) of the output, as the pipeline builds them
    assert cond["time_ids"].tolist() == [[64.0, 48.0, 0.0, 0.0, 64.0, 48.0]] * 2
    assert cond.names == ("tokens", "pooled") and xl.family == "sdxl" and xl.native_size == 64


def test_generation_matches_diffusers_denoiser(xl, xl_pipe):
    """One guided eps of the protocol equals the diffusers pipeline's UNet call on the same inputs."""
    cond = xl.encode_condition(["a cat"])
    uncond = xl.unconditional(1)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = xl.denoise(torch.cat([x, x]), 500, cat_conditions(uncond, cond))
    ref = xl_pipe.unet(torch.cat([x, x]), torch.tensor([500, 500]), encoder_hidden_states=torch.cat(
        [uncond["tokens"], cond["tokens"]]), added_cond_kwargs={"text_embeds": torch.cat([uncond["pooled"],
        cond["pooled"]]), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}).sample
    torch.testing.assert_close(ours, ref)


def test_rho_zero_equals_no_date(xl, tiny_scorer):
    base = dict(steps=10, seed=3)
    a = generate(xl, "a cat", config=GenerateConfig(**base, date=DateConfig(rho=0.0, update_steps="0,3,6")),
                 scorer=tiny_scorer)
    b = generate(xl, "a cat", config=GenerateConfig(**base, date=None))
    assert torch.equal(a.images, b.images)
    assert a.trace.update_norms == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("targets,norm", [("tokens", "joint"), ("pooled", "joint"), ("all", "joint"),
                                          ("all", "per-tensor")])
def test_updates_move_the_targets_by_rho_and_never_the_time_ids(xl, tiny_scorer, monkeypatch, targets, norm):
    seen = []
    real = xl.unet_inputs

    def spy(cond, latent_shape=None):
        seen.append(cond)
        return real(cond, latent_shape)

    monkeypatch.setattr(xl, "unet_inputs", spy)
    date = DateConfig(rho=0.5, update_steps="0,3,6", targets=targets, norm=norm)
    result = generate(xl, "a cat", config=GenerateConfig(steps=10, seed=1, date=date), scorer=tiny_scorer)
    trace = result.trace
    assert trace.update_steps == [0, 3, 6]
    names = {"tokens": ["tokens"], "pooled": ["pooled"], "all": ["tokens", "pooled"]}[targets]
    assert trace.targets == names and sorted(trace.update_norms_per_tensor) == sorted(names)
    if norm == "joint":
        assert trace.update_norms == pytest.approx([0.5] * 3, abs=1e-3)
    else:
        for name in names:
            assert trace.update_norms_per_tensor[name] == pytest.approx([0.5] * 3, abs=1e-3)
    time_ids = xl.time_ids(1)
    assert all(torch.equal(c["time_ids"], time_ids.expand(c.batch_size, 6)) for c in seen)
    # the CFG batch is [uncond, cond]: the unconditional half is zeros at every step
    cfg_calls = [c for c in seen if c.batch_size == 2]
    assert cfg_calls and all(not c["tokens"][:1].any() and not c["pooled"][:1].any() for c in cfg_calls)
    untouched = {"tokens", "pooled"} - set(names)
    first, last = cfg_calls[0], cfg_calls[-1]  # conditional half: first and last sampling step
    for name in untouched:  # a tensor that is not a target keeps its value bit for bit
        assert torch.equal(first[name][-1:], last[name][-1:])
    for name in names:  # a target has moved by the last step
        assert not torch.equal(first[name][-1:], last[name][-1:])


def test_relative_rho_is_relative_to_each_target(xl, tiny_scorer):
    cond = xl.encode_condition(["a cat"])
    date = DateConfig(rho_relative=0.01, update_steps="0", targets="all", norm="per-tensor")
    trace = generate(xl, "a cat", config=GenerateConfig(steps=4, date=date), scorer=tiny_scorer).trace
    for name in ("tokens", "pooled"):
        want = 0.01 * float(cond[name].flatten(1).norm(dim=1))
        assert trace.update_norms_per_tensor[name][0] == pytest.approx(want, rel=1e-3)


def test_pooled_target_on_sd_is_a_config_error(tiny_backbone, tiny_scorer):
    date = DateConfig(update_steps="0", targets="pooled")
    with pytest.raises(ConfigError, match="date-targets tokens"):
        generate(tiny_backbone, "a cat", config=GenerateConfig(steps=2, date=date), scorer=tiny_scorer)


def test_saved_folder_loads_as_sdxl(xl, tmp_path):
    save_components(tiny_sdxl_components(), tmp_path / "xl")
    assert json.loads((tmp_path / "xl" / "model_index.json").read_text())["_class_name"] == \
        "StableDiffusionXLPipeline"
    loaded = load_backbone(str(tmp_path / "xl"), device="cpu")
    assert isinstance(loaded, StableDiffusionXL) and loaded.family == "sdxl"
    a, b = loaded.encode_condition(["a cat"]), xl.encode_condition(["a cat"])
    torch.testing.assert_close(a["tokens"], b["tokens"])
    torch.testing.assert_close(a["pooled"], b["pooled"])
    assert loaded.tokenizer_2.pad_token == "!"


def _fake_safetensors(path, names):
    """A valid .safetensors file holding one float32 zero per name (enough to read the family from its header)."""
    header = {name: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, name in
              enumerate(names)}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * (4 * len(names)))
    return path


def test_single_file_family_and_the_offline_error(tmp_path):
    xl_file = _fake_safetensors(tmp_path / "xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight"])
    sd_file = _fake_safetensors(tmp_path / "sd.safetensors", ["cond_stage_model.transformer.x"])
    assert single_file_family(str(xl_file)) == "sdxl"
    assert single_file_family(str(sd_file)) == "sd"
    sd3_file = _fake_safetensors(tmp_path / "sd3.safetensors", ["model.diffusion_model.joint_blocks.0.x.weight"])
    flux_file = _fake_safetensors(tmp_path / "flux.safetensors", ["double_blocks.0.img_attn.qkv.weight"])
    assert single_file_family(str(sd3_file)) == "sd3" and single_file_family(str(flux_file)) == "flux"
    with pytest.raises(BackboneError, match="--model-config DIR"):
        load_backbone(str(xl_file), device="cpu")


def test_an_unsupported_pipeline_is_named_in_the_error(tmp_path):
    folder = tmp_path / "kandinsky"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline", "prior": []}))
    with pytest.raises(BackboneError, match="KandinskyV22Pipeline"):
        load_backbone(str(folder), device="cpu")


def test_from_pipeline_uses_the_pipelines_modules_and_gives_the_same_image(xl_pipe, tmp_path, tiny_scorer):
    backbone = Backbone.from_pipeline(xl_pipe)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        assert getattr(backbone, name) is getattr(xl_pipe, name)
    xl_pipe.save_pretrained(tmp_path / "saved")
    loaded = load_backbone(str(tmp_path / "saved"), device="cpu")
    config = GenerateConfig(steps=6, seed=2, date=DateConfig(update_steps="0,3", targets="all"))
    a = generate(backbone, "a red cube", config=config, scorer=tiny_scorer)
    b = generate(loaded, "a red cube", config=config, scorer=tiny_scorer)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-5)
    assert a.trace.update_norms == pytest.approx(b.trace.update_norms, abs=1e-5)


def test_from_pipeline_on_sd(tiny_backbone):
    from date_edit.backbones import tiny_pipeline

    pipe = tiny_pipeline("sd")
    backbone = Backbone.from_pipeline(pipe)
    assert backbone.family == "sd" and backbone.unet is pipe.unet
    torch.testing.assert_close(backbone.encode_prompt(["a cat"]), tiny_backbone.encode_prompt(["a cat"]))


def test_conditioning_checks_its_tensors():
    c = Conditioning({"tokens": torch.zeros(2, 3, 4), "pooled": torch.zeros(2, 5)}, {"time_ids": torch.ones(2, 6)})
    with pytest.raises(ValueError, match="batch size"):
        Conditioning({"tokens": torch.zeros(2, 3, 4)}, {"time_ids": torch.ones(3, 6)})
    with pytest.raises(KeyError):
        c.replace(time_ids=torch.zeros(2, 6))  # extras never move
    with pytest.raises(ValueError, match="shape"):
        c.replace(pooled=torch.zeros(2, 4))
    both = cat_conditions(c, c.replace(pooled=torch.ones(2, 5)))
    assert both.batch_size == 4 and both["pooled"][2:].eq(1).all() and both["time_ids"].shape == (4, 6)
    assert c.resolve_targets("all") == ("tokens", "pooled")


def test_real_size_sdxl_architecture_has_sdxl_parameter_counts():
    from date_edit.backbones import sdxl_components

    with torch.device("meta"):
        comps = sdxl_components(device="meta")
    count = {k: sum(p.numel() for p in comps[k].parameters()) for k in ("unet", "text_encoder", "text_encoder_2")}
    assert abs(count["unet"] / 1e9 - 2.567) < 0.01  # SDXL base UNet: 2,567,463,684 parameters
    assert abs(count["text_encoder"] / 1e6 - 123.06) < 0.1  # CLIP-L text
    assert abs(count["text_encoder_2"] / 1e6 - 694.66) < 0.5  # OpenCLIP-bigG text with projection


def test_fp16_sdxl_keeps_its_vae_in_float32():
    """SDXL's VAE overflows in fp16 (``force_upcast``): the backbone keeps it in float32, the rest in fp16."""
    backbone = Backbone.from_components("tiny-sdxl", tiny_sdxl_components(), dtype=torch.float16, device="cpu")
    assert backbone.family == "sdxl" and backbone.vae_dtype == torch.float32
    assert {p.dtype for m in (backbone.unet, backbone.text_encoder, backbone.text_encoder_2)
            for p in m.parameters()} == {torch.float16}
    sd = Backbone.from_components("tiny", tiny_components(),
                                  dtype=torch.float16, device="cpu")
    assert sd.vae_dtype == torch.float16  # SD's pipelines do not upcast
