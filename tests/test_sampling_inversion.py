"""Unit tier: the loop, the inversion and DATE with fake denoisers (milliseconds)."""

import pytest
import torch

from date_edit.date import DateConfig, DateHook, frobenius, parse_update_steps
from date_edit.inversion import invert
from date_edit.sampling import guided_eps, sample


class FakeDenoiser:
    """eps depends on x, t and the embedding, smoothly: enough for exactness and gradient tests."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(8, 4, generator=g) * 0.1
        self.calls = []

    def __call__(self, x_t, t, embeds):
        self.calls.append((int(t), x_t.shape[0]))
        shift = embeds.mean(dim=1) @ self.w  # (B, 4)
        return torch.tanh(x_t * t / (t + 1.0) + shift[:, :, None, None])


def _embeds(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 5, 8, generator=g)


@pytest.mark.parametrize("skip", [0, 3, 9])
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_reconstruction_is_exact_for_any_skip(sd_schedule, skip, cfg):
    den = FakeDenoiser()
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    cond, uncond = _embeds(seed=1), _embeds(seed=2)
    ts = sd_schedule.timesteps(10)
    inv = invert(den, x0, ts, sd_schedule, cond=cond, uncond=uncond, guidance_scale=cfg,
                 generator=torch.Generator().manual_seed(0))
    assert inv.noise_maps.shape == (10, 2, 4, 4, 4)
    assert inv.noise_maps[-1].abs().sum() > 0, "the last noise map must be kept, not zeroed"
    x_start, run_ts, maps = inv.start(skip)
    out = sample(den, x_start, run_ts, sd_schedule, cond=cond, uncond=uncond, guidance_scale=cfg, noise_maps=maps)
    assert float((out - x0).abs().max()) <= 1e-5


def test_inversion_draws_are_independent_and_seeded(sd_schedule):
    den = FakeDenoiser()
    x0 = torch.zeros(1, 4, 4, 4)
    ts = sd_schedule.timesteps(10)
    a = invert(den, x0, ts, sd_schedule, cond=_embeds(1), uncond=None, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(5))
    b = invert(den, x0, ts, sd_schedule, cond=_embeds(1), uncond=None, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.noise_maps, b.noise_maps)
    # with x0 = 0, x_t / sqrt(1 - abar_t) are the raw draws: independent, so nearly uncorrelated
    n1 = a.x_ts[2].flatten() / (1 - sd_schedule.abar(ts[2])) ** 0.5
    n2 = a.x_ts[3].flatten() / (1 - sd_schedule.abar(ts[3])) ** 0.5
    corr = torch.corrcoef(torch.stack([n1, n2]))[0, 1]
    assert abs(float(corr)) < 0.5


def test_guidance_one_equals_cond_only():
    den = FakeDenoiser()
    x = torch.randn(2, 4, 4, 4)
    c, u = _embeds(seed=1), _embeds(seed=2)
    assert torch.equal(guided_eps(den, x, 500, c, u, 1.0), den(x, 500, c))
    expected = den(x, 500, u) + 3 * (den(x, 500, c) - den(x, 500, u))
    torch.testing.assert_close(guided_eps(den, x, 500, c, u, 3.0), expected)


@pytest.mark.parametrize(
    "spec,n,expected",
    [
        ("0,10,20", 50, [0, 10, 20]),
        ("20-23", 50, [20, 21, 22, 23]),
        ("0,5-6", 10, [0, 5, 6]),
        ("every:10", 50, [0, 10, 20, 30, 40]),
        ("10%", 50, [0, 10, 20, 30, 40]),
        ("20%", 50, list(range(0, 50, 5))),
        ("100%", 4, [0, 1, 2, 3]),
        ("none", 50, []),
    ],
)
def test_update_step_specs(spec, n, expected):
    assert parse_update_steps(spec, n) == expected


@pytest.mark.parametrize("spec", ["0,999", "abc", "every:0", "150%", "5-2"])
def test_bad_update_specs_are_one_line_errors(spec):
    with pytest.raises(ValueError) as err:
        parse_update_steps(spec, 10)
    assert "\n" not in str(err.value)


def _date_run(sd_schedule, config, steps=6, indices=(0, 2, 4)):
    den = FakeDenoiser()
    decode = lambda z: torch.sigmoid(z.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1))  # noqa: E731
    score = lambda img, prompts: img.flatten(1).mean(dim=1) * torch.arange(1, img.shape[0] + 1)  # noqa: E731
    ts = sd_schedule.timesteps(steps)
    cond, uncond = _embeds(seed=1), _embeds(seed=2)
    hook = DateHook(config, indices, denoiser=den, decode=decode, score=score, prompts=["a", "b"], uncond=uncond,
                    guidance_scale=3.0, schedule=sd_schedule, timesteps=ts)
    seen = []
    out = sample(den, torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)), ts, sd_schedule,
                 cond=cond, uncond=uncond, guidance_scale=3.0, cond_hook=hook,
                 observers=[lambda s: seen.append(s.cond.clone())])
    return hook, seen, cond, out


def test_date_updates_exactly_rho_on_exactly_the_scheduled_steps(sd_schedule):
    hook, seen, cond, _ = _date_run(sd_schedule, DateConfig(rho=0.5))
    assert hook.trace.update_steps == [0, 2, 4]
    for norm in hook.trace.update_norms:
        assert abs(norm - 0.5) < 1e-4
    # the condition changes only on scheduled steps and persists in between
    changed = [not torch.equal(seen[i], seen[i - 1] if i else cond) for i in range(len(seen))]
    assert changed == [True, False, True, False, True, False]


def test_date_restart_mode_stays_within_rho_of_the_original(sd_schedule):
    hook, seen, cond, _ = _date_run(sd_schedule, DateConfig(rho=0.5, mode="restart"))
    for drift in hook.trace.drifts:
        assert drift <= 0.5 + 1e-4
    assert float(frobenius(seen[-1] - cond).max()) <= 0.5 + 1e-4


def test_date_rho_zero_is_the_fixed_embedding(sd_schedule):
    _, _, _, out_zero = _date_run(sd_schedule, DateConfig(rho=0.0))
    _, _, _, out_none = _date_run(sd_schedule, DateConfig(rho=0.5), indices=())
    assert torch.equal(out_zero, out_none)


def test_date_moves_along_the_score_gradient(sd_schedule):
    """A first-order step along +g raises the objective; the same step along -g lowers it."""
    den = FakeDenoiser()
    decode = lambda z: torch.sigmoid(z.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1))  # noqa: E731
    score = lambda img, prompts: img.flatten(1).mean(dim=1)  # noqa: E731
    ts = sd_schedule.timesteps(10)
    cond = _embeds(b=1, seed=1)
    hook = DateHook(DateConfig(rho=0.05), [0], denoiser=den, decode=decode, score=score, prompts=["a"],
                    uncond=None, guidance_scale=1.0, schedule=sd_schedule, timesteps=ts)
    from date_edit.sampling import StepState

    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    grad, h0 = hook.gradient(StepState(0, ts[0], x, cond), cond)
    step = 0.05 * grad / grad.norm()
    _, h_up = hook.gradient(StepState(0, ts[0], x, cond + step), cond + step)
    _, h_down = hook.gradient(StepState(0, ts[0], x, cond - step), cond - step)
    assert h_up > h0 > h_down


def test_random_direction_has_the_same_norm(sd_schedule):
    hook, _, _, _ = _date_run(sd_schedule, DateConfig(rho=0.5, direction="random"))
    assert all(abs(n - 0.5) < 1e-4 for n in hook.trace.update_norms)


def test_unnormalised_ablation_moves_by_rho_times_grad_norm(sd_schedule):
    hook, _, _, _ = _date_run(sd_schedule, DateConfig(rho=0.5, normalize=False))
    for norm, g in zip(hook.trace.update_norms, hook.trace.grad_norms):
        assert norm == pytest.approx(0.5 * g, rel=1e-3)


def test_noisy_objective_ablation_runs_and_differs(sd_schedule):
    _, _, _, out_x0 = _date_run(sd_schedule, DateConfig(rho=0.5))
    hook, _, _, out_xt = _date_run(sd_schedule, DateConfig(rho=0.5, objective="xt"))
    assert hook.trace.update_steps == [0, 2, 4]
    assert not torch.equal(out_x0, out_xt)


def test_date_config_validates():
    with pytest.raises(ValueError, match="rho"):
        DateConfig(rho=-1)
    with pytest.raises(ValueError):
        DateConfig(mode="sideways")
    assert DateConfig().to_dict()["mode"] == "accumulate"


def test_per_sample_generators_make_maps_independent_of_the_batch(sd_schedule):
    den = FakeDenoiser()
    ts = sd_schedule.timesteps(5)
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    cond = _embeds(seed=1)
    both = invert(den, x0, ts, sd_schedule, cond=cond, uncond=None, guidance_scale=1.0,
                  generator=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    alone = invert(den, x0[1:], ts, sd_schedule, cond=cond[1:], uncond=None, guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(both.x_ts[:, 1], alone.x_ts[:, 0])


def test_rho_relative_moves_each_sample_by_r_times_its_own_norm(sd_schedule):
    """--rho-relative R: every update moves sample b by R * ||c_org[b]||_F (per sample, not the batch mean)."""
    den = FakeDenoiser()
    decode = lambda z: torch.sigmoid(z.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1))  # noqa: E731
    score = lambda img, prompts: img.flatten(1).mean(dim=1)  # noqa: E731
    ts = sd_schedule.timesteps(6)
    cond = _embeds(seed=1) * torch.tensor([1.0, 3.0]).view(2, 1, 1)  # two samples, norms 3x apart
    org_norms = frobenius(cond).flatten()
    config = DateConfig(rho_relative=0.1, update_steps="0,2")
    assert config.rho is None and config.to_dict()["rho_relative"] == 0.1
    hook = DateHook(config, [0, 2], denoiser=den, decode=decode, score=score, prompts=["a", "b"], uncond=None,
                    guidance_scale=1.0, schedule=sd_schedule, timesteps=ts)
    seen = []
    sample(den, torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0)), ts, sd_schedule, cond=cond,
           uncond=None, guidance_scale=1.0, cond_hook=hook, observers=[lambda s: seen.append(s.cond.clone())])
    first = frobenius(seen[0] - cond).flatten()
    second = frobenius(seen[2] - seen[1]).flatten()  # accumulate: from the last embedding, radius from c_org
    torch.testing.assert_close(first, 0.1 * org_norms, rtol=1e-4, atol=0)
    torch.testing.assert_close(second, 0.1 * org_norms, rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="exclusive"):
        DateConfig(rho=0.5, rho_relative=0.1)
    with pytest.raises(ValueError, match="rho_relative"):
        DateConfig(rho_relative=-0.1)
    assert DateConfig().rho == 0.5 and not DateConfig(rho_relative=0.0).moves
