"""The rectified-flow schedule: diffusers' sigmas, its Euler step, the DDPM posterior of the path (checked against
the VP step it is equivalent to) and exact edit-friendly inversion, including the sigma-0 last step."""

import pytest
import torch

from date_edit.flow import FlowSchedule
from date_edit.inversion import invert
from date_edit.sampling import sample
from date_edit.schedule import ddpm_step, noise_map_for

SD3 = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
        "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


class FakeVelocity:
    """A smooth, condition-dependent velocity field (a stand-in denoiser for the pure math)."""

    def __call__(self, x_t, t, cond):
        c = cond.mean() if isinstance(cond, torch.Tensor) else cond["tokens"].mean()
        return 0.3 * torch.tanh(x_t) + 0.01 * float(t) / 1000 + c


def test_sigmas_are_diffusers_sd3_and_flux():
    sd3 = FlowSchedule.from_config(SD3)
    ts = sd3.timesteps(28)
    assert len(ts) == 28 and ts[0] == pytest.approx(1000.0)
    assert sd3.sigma(ts[-1]) == pytest.approx(0.0089, abs=5e-5)  # the shifted last non-zero sigma at 28 steps
    flux = FlowSchedule.from_config(FLUX)
    n = 28
    ts = flux.timesteps(n, image_seq_len=4096, sigmas=[1.0 - i * (1.0 - 1.0 / n) / (n - 1) for i in range(n)])
    assert flux.sigma(ts[-1]) == pytest.approx(0.105, abs=5e-4)  # FLUX-dev at 1024 px
    assert flux.next_timestep(ts, n - 1) == 0.0


def test_euler_step_matches_diffusers_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowSchedule.from_config(SD3)
    ts = sched.timesteps(8)
    ref = FlowMatchEulerDiscreteScheduler.from_config(SD3)
    ref.set_timesteps(8)
    x0 = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    ours, theirs = x0.clone(), x0.clone()
    model = FakeVelocity()
    cond = torch.zeros(2, 3, 4)
    for i, t in enumerate(ts):
        ours = sched.ddim(ours, model(ours, t, cond), t, sched.next_timestep(ts, i))
        theirs = ref.step(model(theirs, ref.timesteps[i], cond), ref.timesteps[i], theirs).prev_sample
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t,t_prev", [(1000.0, 900.0), (800.0, 500.0), (300.0, 299.0), (120.0, 40.0)])
def test_ddpm_step_of_the_path_is_the_vp_step_of_the_rescaled_latent(t, t_prev):
    """x_t = a x0 + s eps with a = 1 - s is the VP path of y = x / k, k = sqrt(a^2 + s^2), abar = a^2 / k^2."""
    sched = FlowSchedule.from_config(SD3)
    g = torch.Generator().manual_seed(1)
    x, v, z = (torch.randn(1, 4, 3, 3, generator=g) for _ in range(3))
    ours = sched.ddpm(x, v, t, t_prev, z)
    s, s2 = sched.sigma(t), sched.sigma(t_prev)
    k, k2 = ((1 - s) ** 2 + s**2) ** 0.5, ((1 - s2) ** 2 + s2**2) ** 0.5
    abar, abar2 = (1 - s) ** 2 / k**2, (1 - s2) ** 2 / k2**2
    eps = sched.eps(x, v, t)
    if abar == 0:  # sigma 1: the VP formula divides by sqrt(abar); compare the posterior by its definition
        assert sched.variance(t, t_prev) == pytest.approx(s2**2)
        torch.testing.assert_close(ours, (1 - s2) * sched.x0(x, v, t) + s2 * z)
        return
    vp = ddpm_step(x / k, eps, abar, abar2, z) * k2
    torch.testing.assert_close(ours, vp, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sched.noise_map(x, ours, v, t, t_prev),
                               noise_map_for(x / k, ours / k2, eps, abar, abar2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("skip", [0, 5])
def test_inversion_on_the_flow_path_is_exact(skip):
    sched = FlowSchedule.from_config(SD3)
    ts = sched.timesteps(12)
    x0 = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    cond, uncond = torch.ones(2, 3, 4) * 0.1, torch.zeros(2, 3, 4)
    inv = invert(FakeVelocity(), x0, ts, sched, cond=cond, uncond=uncond, guidance_scale=3.5,
                 generator=torch.Generator().manual_seed(0))
    assert float(inv.noise_maps[-1].abs().max()) > 0  # the sigma-0 step keeps its residual, not zeros
    x_start, steps, maps = inv.start(skip)
    out = sample(FakeVelocity(), x_start, steps, sched, cond=cond, uncond=uncond, guidance_scale=3.5,
                 noise_maps=maps)
    assert float((out - x0).abs().max()) <= 1e-5
