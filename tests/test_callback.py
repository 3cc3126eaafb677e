"""DATE inside the stock diffusers pipelines through callback_on_step_end: the same latents as date_edit.generate
with the same DATE settings and noise on every family, composition with a user's callback, and one-line refusals."""

from __future__ import annotations

import pytest
import torch

from date_edit.backbones import Backbone, tiny_pipeline
from date_edit.callback import DateCallback
from date_edit.date import DateConfig
from date_edit.errors import ConfigError
from date_edit.pipeline import GenerateConfig, generate

STEPS, GUIDANCE = 6, 4.0


@pytest.fixture(scope="module")
def pipes():
    return {}


def _get(pipes: dict, family: str):
    if family not in pipes:
        pipes[family] = tiny_pipeline(family)
    return pipes[family]


def _noise(backbone) -> torch.Tensor:
    side = backbone.native_size // backbone.vae_scale_factor
    return torch.randn((1, backbone.latent_channels, side, side), generator=torch.Generator().manual_seed(0))


def _stock(pipe, backbone, callback: DateCallback, **extra) -> torch.Tensor:
    x = _noise(backbone)
    out = pipe(**callback.prepare(num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=x),
               output_type="latent", **extra).images
    return backbone.unpack(out, tuple(x.shape)) if out.dim() == 3 else out


@pytest.mark.parametrize("family,targets", [("sd", "tokens"), ("sdxl", "all"), ("sd3", "all"), ("flux", "tokens")])
def test_stock_pipeline_with_the_callback_equals_generate(pipes, tiny_scorer, family, targets):
    """Updates at step 0 (before the call) and at a late step (from the callback); the latents equal generate's
    with the same settings and noise, and DATE did move them (the plain run differs)."""
    pipe = _get(pipes, family)
    backbone = Backbone.from_pipeline(pipe)
    date = DateConfig(update_steps="0,4", rho=1.0, targets=targets)
    ours = generate(backbone, "a cat", config=GenerateConfig(steps=STEPS, seed=0, date=date, guidance_scale=GUIDANCE),
                    scorer=tiny_scorer)
    plain = generate(backbone, "a cat", config=GenerateConfig(steps=STEPS, seed=0, date=None,
                                                             guidance_scale=GUIDANCE))
    callback = DateCallback(pipe, "a cat", scorer=tiny_scorer, config=date)
    theirs = _stock(pipe, backbone, callback)
    scale = ours.latents.abs().max()
    assert (theirs.float() - ours.latents).abs().max() <= 1e-5 * max(1.0, float(scale)), family
    assert (ours.latents - plain.latents).abs().max() > 30 * 1e-5 * max(1.0, float(scale))  # DATE moved them
    assert callback.trace.update_steps == ours.trace.update_steps == [0, 4]
    assert callback.trace.update_norms == pytest.approx(ours.trace.update_norms, rel=1e-4)
    assert callback.trace.targets == ours.trace.targets


def test_callback_alone_updates_late_steps_and_composes_with_a_user_callback(pipes, tiny_scorer):
    """pipe(prompt, callback_on_step_end=date) with no step 0 in the schedule; a user callback chained after DATE
    sees every step and the embeddings DATE moved."""
    pipe = _get(pipes, "sd")
    backbone = Backbone.from_pipeline(pipe)
    date = DateConfig(update_steps="2,4", rho=1.0)
    ours = generate(backbone, "a cat", config=GenerateConfig(steps=STEPS, seed=0, date=date, guidance_scale=GUIDANCE),
                    scorer=tiny_scorer)
    seen = []

    def user(pipe_, i, t, tensors):
        seen.append((i, tensors["prompt_embeds"].chunk(2)[1].clone()))
        tensors["latents"] = tensors["latents"] * 1.0  # a user callback may rewrite tensors too
        return tensors

    callback = DateCallback(pipe, "a cat", scorer=tiny_scorer, config=date, then=user, then_inputs=["latents"])
    out = pipe("a cat", num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=_noise(backbone),
               output_type="latent", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=callback.tensor_inputs).images
    assert (out - ours.latents).abs().max() <= 1e-5 * max(1.0, float(ours.latents.abs().max()))
    assert [i for i, _ in seen] == list(range(STEPS))
    moved = [bool((e - seen[0][1]).abs().max() > 0) for _, e in seen]
    assert moved == [False, True, True, True, True, True]  # moved at the end of step 1, for step 2
    again = pipe("a cat", num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=_noise(backbone),
                 output_type="latent", callback_on_step_end=callback,
                 callback_on_step_end_tensor_inputs=callback.tensor_inputs).images
    assert torch.equal(again, out)  # a second call starts again from the prompt's embedding


def test_refusals_are_one_line(pipes, tiny_scorer):
    flux = _get(pipes, "flux")
    with pytest.raises(ConfigError, match="pooled"):
        DateCallback(flux, "a cat", scorer=tiny_scorer, config=DateConfig(targets="pooled"))

    class NoCallback:
        def __call__(self, prompt):
            return None

    with pytest.raises(ConfigError, match="callback_on_step_end"):
        DateCallback(NoCallback(), "a cat", scorer=tiny_scorer)
    sd = _get(pipes, "sd")
    callback = DateCallback(sd, "a cat", scorer=tiny_scorer, config=DateConfig(update_steps="0,3"))
    with pytest.raises(ConfigError, match="prepare") as err:
        sd("a cat", num_inference_steps=STEPS, callback_on_step_end=callback,
           callback_on_step_end_tensor_inputs=callback.tensor_inputs, output_type="latent")
    assert "\n" not in str(err.value)
    sd.scheduler.set_timesteps(STEPS)  # the pipeline stopped mid-run; a fresh call must work again
    out = sd(**callback.prepare(num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                                latents=_noise(Backbone.from_pipeline(sd))), output_type="latent").images
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_edit_friendly_editing_inside_the_stock_pipeline(pipes, tiny_scorer, family):
    """The stock pipeline with EditFriendlyScheduler (the inversion's tail and noise maps) lands where
    date_edit.edit does, plain and with DATE from the callback; the pipeline's scheduler is put back after."""
    from date_edit.pipeline import EditConfig, edit, invert_image
    from date_edit.stock_edit import edit_friendly_pipeline

    pipe = _get(pipes, family)
    own = pipe.scheduler
    backbone = Backbone.from_pipeline(pipe)
    pixels = torch.rand(1, 3, backbone.native_size, backbone.native_size, generator=torch.Generator().manual_seed(1))
    inversion = invert_image(backbone, pixels, source_prompt="a cat", steps=10, cfg_source=3.5, seed=0)
    for date in (None, DateConfig(update_steps="2,4", rho=1.0)):
        ours = edit(backbone, pixels, "a dog", source_prompt="a cat", inversion=inversion, scorer=tiny_scorer,
                    config=EditConfig(steps=10, skip=3, cfg_source=3.5, cfg_target=7.5, date=date, mask=None,
                                      p2p=None))  # the plain edit: the stock pipeline runs no structure control
        extra = {}
        if date is not None:
            callback = DateCallback(pipe, "a dog", scorer=tiny_scorer, config=date)
            extra = {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": callback.tensor_inputs}
        with edit_friendly_pipeline(pipe, inversion, 3) as kw:
            theirs = pipe("a dog", guidance_scale=7.5, output_type="latent", **kw, **extra).images
        assert pipe.scheduler is own
        assert (theirs - ours.latents).abs().max() <= 1e-4 * max(1.0, float(ours.latents.abs().max()))
        if date is not None:
            assert callback.trace.update_steps == ours.trace.update_steps == [2, 4]
    with edit_friendly_pipeline(pipe, inversion, 3) as kw:  # the source prompt gives the input back
        back = pipe("a cat", guidance_scale=3.5, output_type="latent", **kw).images
    assert (back - inversion.x0).abs().max() <= 1e-4


def test_edit_friendly_pipeline_refuses_flow_models_and_bad_skips(pipes):
    from date_edit.inversion import Inversion
    from date_edit.stock_edit import edit_friendly_kwargs

    inversion = Inversion(x0=torch.zeros(1, 4, 8, 8), x_ts=torch.zeros(4, 1, 4, 8, 8),
                          noise_maps=torch.zeros(3, 1, 4, 8, 8), timesteps=(901, 601, 301))
    with pytest.raises(ConfigError, match="flow model"):
        edit_friendly_kwargs(_get(pipes, "sd3"), inversion, 1)
    with pytest.raises(ConfigError, match="skip"):
        edit_friendly_kwargs(_get(pipes, "sd"), inversion, 3)
