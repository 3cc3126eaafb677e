"""Unit tier: the pure schedule math against diffusers' own scheduler and closed forms."""

import pytest
import torch

from date_edit.schedule import (
    ddim_step,
    ddpm_step,
    ddpm_variance,
    noise_map_for,
    posterior_mean,
    tweedie_x0,
    v_to_eps,
)


@pytest.mark.parametrize("steps", [1, 7, 10, 50, 100])
def test_timesteps_match_diffusers_ddim(sd_schedule, steps):
    from diffusers import DDIMScheduler

    from date_edit.backbones import SD_SCHEDULER_CONFIG

    sched = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if not k.startswith("_")})
    sched.set_timesteps(steps)
    assert sd_schedule.timesteps(steps) == sched.timesteps.tolist()
    assert torch.equal(sd_schedule.alphas_cumprod.float(), sched.alphas_cumprod)


def test_fifty_steps_are_981_to_1_and_last_step_uses_abar0(sd_schedule):
    ts = sd_schedule.timesteps(50)
    assert ts[0] == 981 and ts[-1] == 1 and ts[1] == 961
    assert sd_schedule.next_timestep(ts, 49) == -1
    assert sd_schedule.abar(-1) == float(sd_schedule.alphas_cumprod[0])
    assert ddpm_variance(sd_schedule.abar(1), sd_schedule.abar(-1)) > 0


def test_ddim_step_matches_diffusers(sd_schedule):
    from diffusers import DDIMScheduler

    from date_edit.backbones import SD_SCHEDULER_CONFIG

    sched = DDIMScheduler(**{k: v for k, v in SD_SCHEDULER_CONFIG.items() if not k.startswith("_")})
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    eps = torch.randn(2, 4, 8, 8, generator=g)
    ts = sd_schedule.timesteps(10)
    for i, t in enumerate(ts):
        ours = ddim_step(x, eps, sd_schedule.abar(t), sd_schedule.abar(sd_schedule.next_timestep(ts, i)))
        theirs = sched.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_tweedie_inverts_forward_noising():
    x0 = torch.randn(3, 4, 5, 5)
    eps = torch.randn(3, 4, 5, 5)
    abar = 0.37
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
    torch.testing.assert_close(tweedie_x0(x_t, eps, abar), x0, rtol=1e-5, atol=1e-5)


def test_v_to_eps_closed_form():
    x0, eps, abar = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), 0.6
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
    v = abar**0.5 * eps - (1 - abar) ** 0.5 * x0
    torch.testing.assert_close(v_to_eps(x_t, v, abar), eps, rtol=1e-5, atol=1e-5)


def test_noise_map_round_trips_through_ddpm_step():
    g = torch.Generator().manual_seed(1)
    x_t, x_prev, eps = (torch.randn(1, 4, 6, 6, generator=g) for _ in range(3))
    z = noise_map_for(x_t, x_prev, eps, 0.3, 0.5)
    torch.testing.assert_close(ddpm_step(x_t, eps, 0.3, 0.5, z), x_prev, rtol=1e-5, atol=1e-6)
    # eta = 1 leaves the direction term sqrt(1 - abar_prev - var)
    mu = posterior_mean(x_t, eps, 0.3, 0.5, eta=1.0)
    var = ddpm_variance(0.3, 0.5)
    expected = 0.5**0.5 * tweedie_x0(x_t, eps, 0.3) + (1 - 0.5 - var) ** 0.5 * eps
    torch.testing.assert_close(mu, expected)


def test_bad_step_counts_are_refused(sd_schedule):
    with pytest.raises(ValueError, match="steps must be"):
        sd_schedule.timesteps(0)
