"""``EditConfig(reference_compat=True)`` (issue 30, item 3): the edit equals the official codes' loops, transcribed
here from their math in plain torch and driving our backbones' denoisers and schedules, with the same seed.

* DDPM editing, as inbarhub/DDPM_inversion (``sample_xts_from_x0``, ``inversion_forward_process``,
  ``inversion_reverse_process``): one noise per timestep drawn in turn from the least noisy timestep up, the noise
  maps solved over the timesteps in that same order, the last one zeroed; the edit resamples from ``xts[skip]``
  with ``zs[skip:]``.
* FlowEdit on FLUX, as fallenshock/FlowEdit (``FlowEditFLUX``): the loop runs on the packed latents
  ``(B, seq, 64)``, the fresh noise drawn in that layout.

Without the option the reconstruction stays exact (``test_pipeline_tiny``'s reconstruction test and the one below).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from date_edit.edit_config import EditConfig
from date_edit.pipeline import edit, reconstruct

SOURCE, TARGET = "a red circle", "a blue square"


def _official_ddpm_edit(backbone, pixels, *, steps: int, skip: int, cfg_src: float, cfg_tar: float,
                        seed: int) -> torch.Tensor:
    """The official edit-friendly DDPM inversion and edit (eta 1), written from its math."""
    torch.manual_seed(0)  # irrelevant: every draw below comes from the seeded generator
    g = torch.Generator().manual_seed(seed)
    size = tuple(pixels.shape[-2:])
    x0 = backbone.encode_image(pixels)
    timesteps = backbone.timesteps(steps, size)
    schedule = backbone.schedule
    stride = schedule.num_train_timesteps // steps

    def abar(t):
        return schedule.abar(t) if t >= 0 else schedule.final_alpha_cumprod

    def noise_pred(x, t, cond, scale):
        uncond = backbone.unconditional(1, size=size)
        out_u, out_c = backbone(x, t, uncond), backbone(x, t, cond)
        return out_u + scale * (out_c - out_u)

    def mean_and_std(x, eps, t):
        a_t, a_prev = abar(t), abar(t - stride)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        x0_pred = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        return a_prev ** 0.5 * x0_pred + (1 - a_prev - variance) ** 0.5 * eps, variance ** 0.5

    t_to_idx = {t: i for i, t in enumerate(timesteps)}
    xts = torch.zeros((steps + 1,) + tuple(x0.shape))
    for t in reversed(timesteps):  # sample_xts_from_x0: the least noisy timestep draws first
        xts[t_to_idx[t]] = x0 * abar(t) ** 0.5 + torch.randn(x0.shape, generator=g) * (1 - abar(t)) ** 0.5
    xts[steps] = x0
    source = backbone.encode_condition([SOURCE], size=size)
    zs = torch.zeros((steps,) + tuple(x0.shape))
    with torch.no_grad():
        for t in reversed(timesteps):  # inversion_forward_process
            idx = t_to_idx[t]
            mu, std = mean_and_std(xts[idx], noise_pred(xts[idx], t, source, cfg_src), t)
            zs[idx] = (xts[idx + 1] - mu) / std
            xts[idx + 1] = mu + std * zs[idx]
        zs[-1] = 0.0
        target = backbone.encode_condition([TARGET], size=size)
        x = xts[skip]
        for idx, t in enumerate(timesteps[skip:]):  # inversion_reverse_process with zs[skip:]
            mu, std = mean_and_std(x, noise_pred(x, t, target, cfg_tar), t)
            x = mu + std * zs[skip + idx]
    return x


@pytest.mark.parametrize("model", ["tiny", "toy"])
def test_reference_compat_ddpm_edit_equals_the_official_loops(model):
    from date_edit.backbones import load_backbone

    backbone = load_backbone(model, device="cpu")
    size = 64 if model == "tiny" else backbone.native_size
    pixels = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    settings = dict(steps=10, skip=3, cfg_source=3.5, cfg_target=7.5)
    # the official loops are the plain edit (no structure control)
    config = EditConfig(**settings, seed=5, date=None, method="ddpm", reference_compat=True, mask=None, p2p=None)
    ours = edit(backbone, pixels, TARGET, source_prompt=SOURCE, config=config)
    official = _official_ddpm_edit(backbone, pixels, steps=10, skip=3, cfg_src=3.5, cfg_tar=7.5, seed=5)
    torch.testing.assert_close(ours.latents, official, rtol=0, atol=1e-4)
    assert float(ours.inversion.noise_maps[-1].abs().max()) == 0.0 and ours.config["reference_compat"]
    # without the option: our own noise order and last map, hence another edit from the same seed
    default = edit(backbone, pixels, TARGET, source_prompt=SOURCE, config=replace(config, reference_compat=False))
    assert float((default.latents - official).abs().max()) > 1e-3


def test_only_reference_compat_gives_up_the_exact_reconstruction():
    from date_edit.backbones import load_backbone

    tiny = load_backbone("tiny", device="cpu")
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    exact = reconstruct(tiny, pixels, source_prompt=SOURCE, config=EditConfig(steps=8, skip=0))
    assert float((exact.latents - exact.source_latents).abs().max()) <= 1e-4
    compat = reconstruct(tiny, pixels, source_prompt=SOURCE, config=EditConfig(steps=8, skip=0, reference_compat=True))
    assert float((compat.latents - compat.source_latents).abs().max()) > 1e-3  # the zeroed last map's residual


def _official_flux_flowedit(flux, pixels, *, steps: int, skip: int, cfg_src: float, cfg_tar: float,
                            seed: int) -> torch.Tensor:
    """FlowEditFLUX (n_min 0, n_avg 1) from its math, on packed latents; returns them unpacked."""
    g = torch.Generator().manual_seed(seed)
    size = tuple(pixels.shape[-2:])
    x_src = flux.encode_image(pixels)
    shape = tuple(x_src.shape)
    x_packed = flux.pack(x_src)
    src = flux.guidance(flux.encode_condition([SOURCE], size=size), None, cfg_src)[0]
    tar = flux.guidance(flux.encode_condition([TARGET], size=size), None, cfg_tar)[0]

    def velocity(z_packed, t, cond):  # the transformer on packed tokens
        return flux.pack(flux(flux.unpack(z_packed, shape), t, cond))

    timesteps = flux.timesteps(steps, size)
    sigmas = [t / 1000.0 for t in timesteps] + [0.0]
    z_edit = x_packed.clone()
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            if steps - i > steps - skip:  # n_max = steps - skip
                continue
            noise = torch.randn(tuple(x_packed.shape[1:]), generator=g)[None]  # randn_like(x_src_packed)
            z_src = (1 - sigmas[i]) * x_packed + sigmas[i] * noise
            z_tar = z_edit + z_src - x_packed
            z_edit = z_edit + (sigmas[i + 1] - sigmas[i]) * (velocity(z_tar, t, tar) - velocity(z_src, t, src))
    return flux.unpack(z_edit, shape)


def test_reference_compat_flux_flowedit_draws_its_noise_packed_as_the_official_code():
    from date_edit.backbones import load_backbone

    flux = load_backbone("tiny-flux", device="cpu")
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    settings = dict(steps=6, skip=1, cfg_source=1.5, cfg_target=5.5, seed=7, date=None)
    ours = edit(flux, pixels, TARGET, source_prompt=SOURCE, config=EditConfig(**settings, reference_compat=True))
    official = _official_flux_flowedit(flux, pixels, steps=6, skip=1, cfg_src=1.5, cfg_tar=5.5, seed=7)
    assert ours.config["method"] == "flowedit"
    torch.testing.assert_close(ours.latents, official, rtol=0, atol=1e-4)
    default = edit(flux, pixels, TARGET, source_prompt=SOURCE, config=EditConfig(**settings))
    assert float((default.latents - official).abs().max()) > 1e-4  # image-layout noise: another draw
