"""Issue 36, "Reliability, round three", item 14: the Python API's :class:`date_edit.callback.DateCallback`.

Every misuse of its constructor, :meth:`~date_edit.callback.DateCallback.prepare` and its diffusers callback is one
:class:`~date_edit.errors.DateEditError` line naming the argument, raised before any model runs (a forward hook on
every module of the pipeline counts the calls). In-process, on the tiny stock pipelines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from date_edit.backbones import tiny_pipeline
from date_edit.callback import DateCallback
from date_edit.date import DateConfig
from date_edit.errors import ConfigError, DateEditError

STEPS = 4


@pytest.fixture(scope="module")
def world(tiny_scorer):
    """The tiny SD and FLUX pipelines, a callback on each, and a counter of every module call they make."""
    sd, flux = tiny_pipeline("sd"), tiny_pipeline("flux")
    calls: list[str] = []
    modules = [m for pipe in (sd, flux) for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    if isinstance(tiny_scorer, torch.nn.Module):
        modules.append(tiny_scorer)
    hooks = [m.register_forward_pre_hook(lambda module, _: calls.append(type(module).__name__)) for m in modules]
    yield {"sd": sd, "flux": flux, "scorer": tiny_scorer, "calls": calls,
           "cb": DateCallback(sd, "a cat", scorer=tiny_scorer, config=DateConfig(update_steps="0,2", rho=1.0)),
           "flux_cb": DateCallback(flux, "a cat", scorer=tiny_scorer, config=DateConfig(update_steps="2"))}
    for hook in hooks:
        hook.remove()


def _noise(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


class _NoCallback:
    def __call__(self, prompt):
        return None


class _NoModel:
    def __call__(self, prompt, callback_on_step_end=None):
        return None


def _make(w, **kw):
    args = {"pipe": w["sd"], "prompt": "a cat", "scorer": w["scorer"]} | kw
    return DateCallback(args.pop("pipe"), args.pop("prompt"), **args)


def _prepare(w, **kw):
    args = {"num_inference_steps": STEPS, "guidance_scale": 4.0, "latents": _noise(1, 4, 8, 8)} | kw
    return w["cb"].prepare(**args)


def _step(w, pipe="sd", i=0, tensors=None):
    w["sd"].scheduler.set_timesteps(STEPS)
    pipe = w[pipe] if isinstance(pipe, str) else pipe
    return w["cb"](pipe, i, 981, tensors)


TEXT = _noise(1, 77, 32)
MISUSES = {
    # the constructor
    "pipe None": ("pipe", lambda w: _make(w, pipe=None)),
    "pipe a model id": ("pipe", lambda w: _make(w, pipe="runwayml/stable-diffusion-v1-5")),
    "pipe its scheduler": ("pipe", lambda w: _make(w, pipe=w["sd"].scheduler)),
    "pipe without callbacks": ("pipe", lambda w: _make(w, pipe=_NoCallback())),
    "pipe without a model": ("pipe", lambda w: _make(w, pipe=_NoModel())),
    "prompt None": ("prompt", lambda w: _make(w, prompt=None)),
    "prompt 123": ("prompt", lambda w: _make(w, prompt=123)),
    "prompt []": ("prompt", lambda w: _make(w, prompt=[])),
    "prompt bytes": ("prompt", lambda w: _make(w, prompt=b"a cat")),
    "prompt a list with a number": ("prompt", lambda w: _make(w, prompt=["a cat", 7])),
    "prompt not UTF-8": ("prompt", lambda w: _make(w, prompt="caf\udce9")),
    "scorer None": ("scorer", lambda w: _make(w, scorer=None)),
    "scorer a spec": ("scorer", lambda w: _make(w, scorer="clip")),
    "scorer an object": ("scorer", lambda w: _make(w, scorer=object())),
    "config {}": ("config", lambda w: _make(w, config={})),
    "config None": ("config", lambda w: _make(w, config=None)),
    "config a schedule": ("config", lambda w: _make(w, config="every:10")),
    "height negative": ("height", lambda w: _make(w, height=-64)),
    "height zero": ("height", lambda w: _make(w, height=0)),
    "height a string": ("height", lambda w: _make(w, height="64")),
    "height a float": ("height", lambda w: _make(w, height=64.0)),
    "width not a multiple": ("width", lambda w: _make(w, width=100)),
    "width huge": ("width", lambda w: _make(w, width=10**7)),
    "then not callable": ("then", lambda w: _make(w, then="print")),
    "then_inputs a string": ("then_inputs", lambda w: _make(w, then=print, then_inputs="latents")),
    "then_inputs unknown": ("then_inputs", lambda w: _make(w, then=print, then_inputs=["noise"])),
    # prepare()
    "steps a string": ("num_inference_steps", lambda w: _prepare(w, num_inference_steps="4")),
    "steps a float": ("num_inference_steps", lambda w: _prepare(w, num_inference_steps=4.0)),
    "steps True": ("num_inference_steps", lambda w: _prepare(w, num_inference_steps=True)),
    "steps zero": ("num_inference_steps", lambda w: _prepare(w, num_inference_steps=0)),
    "steps huge": ("num_inference_steps", lambda w: _prepare(w, num_inference_steps=10**6)),
    "guidance NaN": ("guidance_scale", lambda w: _prepare(w, guidance_scale=math.nan)),
    "guidance inf": ("guidance_scale", lambda w: _prepare(w, guidance_scale=math.inf)),
    "guidance a string": ("guidance_scale", lambda w: _prepare(w, guidance_scale="7.5")),
    "guidance None": ("guidance_scale", lambda w: _prepare(w, guidance_scale=None)),
    "latents None": ("latents", lambda w: _prepare(w, latents=None)),
    "latents numpy": ("latents", lambda w: _prepare(w, latents=np.zeros((1, 4, 8, 8), np.float32))),
    "latents 2-D": ("latents", lambda w: _prepare(w, latents=_noise(8, 8))),
    "latents 3 channels": ("latents", lambda w: _prepare(w, latents=_noise(1, 3, 8, 8))),
    "latents another size": ("latents", lambda w: _prepare(w, latents=_noise(1, 4, 16, 16))),
    "latents batch of 2": ("latents", lambda w: _prepare(w, latents=_noise(2, 4, 8, 8))),
    "latents all NaN": ("latents", lambda w: _prepare(w, latents=torch.full((1, 4, 8, 8), math.nan))),
    "latents one inf": ("latents", lambda w: _prepare(w, latents=_noise(1, 4, 8, 8).index_fill(3, torch.tensor([2]),
                                                                                             math.inf))),
    "latents integers": ("latents", lambda w: _prepare(w, latents=torch.zeros((1, 4, 8, 8), dtype=torch.long))),
    "latents packed wrong": ("latents", lambda w: w["flux_cb"].prepare(num_inference_steps=STEPS, guidance_scale=3.5,
                                                                       latents=_noise(1, 16, 63))),
    # the diffusers callback (no prepare() before it)
    "call without tensors": ("callback_on_step_end_tensor_inputs", lambda w: _step(w, tensors={})),
    "call with latents only": ("callback_on_step_end_tensor_inputs",
                               lambda w: _step(w, tensors={"latents": _noise(1, 4, 8, 8)})),
    "call tensors None": ("callback_kwargs", lambda w: _step(w, tensors=None)),
    "call pipe None": ("pipe", lambda w: _step(w, pipe=None, tensors={"latents": _noise(1, 4, 8, 8)})),
    "call another pipe": ("pipe", lambda w: _step(w, pipe="flux", tensors={"latents": _noise(1, 4, 8, 8)})),
    "call step past the run": ("i", lambda w: _step(w, i=STEPS, tensors={"latents": _noise(1, 4, 8, 8)})),
    "call other prompts": ("prompt", lambda w: _step(w, tensors={"latents": _noise(2, 4, 8, 8),
                                                                 "prompt_embeds": torch.cat([TEXT] * 4)})),
}


@pytest.mark.parametrize("case", list(MISUSES))
def test_each_misuse_is_one_library_error_naming_the_argument_before_any_model_runs(world, case):
    """23 of 35 misuses raised AttributeError, KeyError or torch's and diffusers' own errors, or went through
    (NaN latents and guidance, a negative height): now each is a ConfigError naming the argument, one line, and
    neither the pipeline's models nor the scorer ran."""
    param, misuse = MISUSES[case]
    before = len(world["calls"])
    with pytest.raises(DateEditError) as err:
        misuse(world)
    message = str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.param == param, message
    assert message.startswith(param) and "\n" not in message and len(message) < 400, message
    assert world["calls"][before:] == [], f"{case}: a model ran before the refusal"


def test_the_callback_passed_without_its_tensor_inputs_stops_the_run_in_one_line(world):
    """``pipe(prompt, callback_on_step_end=date)`` hands the callback ``latents`` alone: a KeyError at the first
    update step before, now a ConfigError that says what to pass at the end of step 0, and the callback works in
    the next run; FLUX's packed latents pass prepare()."""
    sd, cb = world["sd"], DateCallback(world["sd"], "a cat", scorer=world["scorer"],
                                       config=DateConfig(update_steps="2", rho=1.0))
    with pytest.raises(ConfigError, match="^callback_on_step_end_tensor_inputs lacks prompt_embeds.*tensor_inputs"):
        sd("a cat", num_inference_steps=STEPS, guidance_scale=4.0, latents=_noise(1, 4, 8, 8),
           output_type="latent", callback_on_step_end=cb)
    sd.scheduler.set_timesteps(STEPS)
    out = sd("a cat", num_inference_steps=STEPS, guidance_scale=4.0, latents=_noise(1, 4, 8, 8), output_type="latent",
             callback_on_step_end=cb, callback_on_step_end_tensor_inputs=cb.tensor_inputs).images
    assert torch.isfinite(out).all() and cb.trace.update_steps == [2]
    kw = world["flux_cb"].prepare(num_inference_steps=STEPS, guidance_scale=3.5, latents=_noise(1, 16, 64))
    assert tuple(kw["latents"].shape) == (1, 16, 64)
