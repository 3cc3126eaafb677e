"""FlowEdit's ``n_min`` and ``n_avg`` (issue 30, item 4) on a fake denoiser: a small deterministic velocity field,
no model. ``n_avg`` averages exactly that many fresh draws per step; ``n_min`` runs the last steps as plain Euler
sampling of the target; both as the official loop (fallenshock/FlowEdit, FlowEditSD3), transcribed below."""

from __future__ import annotations

import pytest
import torch

from date_edit.errors import ConfigError
from date_edit.flow import FlowSchedule
from date_edit.flowedit import flow_edit

TIMESTEPS = [950.0, 800.0, 600.0, 400.0, 200.0]  # sigma = t / 1000; the step after the last lands on sigma 0
SHAPE = (2, 4, 8, 8)


class FakeVelocity:
    """``v = 0.5 x + c t / 1000`` with ``c`` a ``(B,)`` condition; counts its calls and records their inputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append((x.clone(), float(t), cond))
        return 0.5 * x + cond.view(-1, 1, 1, 1) * float(t) / 1000.0


SRC, TAR = torch.tensor([0.2, -0.1]), torch.tensor([1.0, 0.7])


def _x_src():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))


def _gens(seeds=(3, 4)):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _run(n_min=0, n_avg=1, hook=None, denoiser=None):
    return flow_edit(denoiser or FakeVelocity(), _x_src(), TIMESTEPS, FlowSchedule(), src_cond=SRC, src_uncond=None,
                     src_scale=1.0, tar_cond=TAR, tar_uncond=None, tar_scale=1.0, generators=_gens(), n_min=n_min,
                     n_avg=n_avg, cond_hook=hook)


def _reference(n_min: int, n_avg: int) -> torch.Tensor:
    """The official loop, from its math: per step ``n_avg`` draws averaged; the last ``n_min`` steps plain Euler of
    the target from ``z_edit + z_src - x_src`` noised afresh at the first of them."""
    v = FakeVelocity()
    x_src, gens = _x_src(), _gens()

    def draw():
        return torch.stack([torch.randn(SHAPE[1:], generator=g) for g in gens])

    sigmas = [t / 1000.0 for t in TIMESTEPS] + [0.0]
    n = len(TIMESTEPS)
    z_edit, x_tar = x_src.clone(), None
    for i, t in enumerate(TIMESTEPS):
        s, s_next = sigmas[i], sigmas[i + 1]
        if n - i > n_min:
            delta = torch.zeros_like(x_src)
            for _ in range(n_avg):
                z_src = (1 - s) * x_src + s * draw()
                z_tar = z_edit + z_src - x_src
                delta += (1 / n_avg) * (v(z_tar, t, TAR) - v(z_src, t, SRC))
            z_edit = z_edit + (s_next - s) * delta
        else:
            if n - i == n_min:
                x_tar = z_edit + ((1 - s) * x_src + s * draw()) - x_src
            x_tar = x_tar + (s_next - s) * v(x_tar, t, TAR)
    return z_edit if n_min == 0 else x_tar


@pytest.mark.parametrize("n_min, n_avg", [(0, 1), (0, 3), (2, 1), (2, 2), (4, 1)])
def test_flow_edit_follows_the_official_loop(n_min, n_avg):
    torch.testing.assert_close(_run(n_min, n_avg), _reference(n_min, n_avg), rtol=0, atol=1e-6)


def test_n_avg_averages_exactly_that_many_draws_per_step():
    fake = FakeVelocity()
    _run(n_avg=3, denoiser=fake)
    assert len(fake.calls) == len(TIMESTEPS) * 3 * 2  # per step: 3 draws x (target, source)
    # the first step's 3 source inputs are x_src noised with the generators' first 3 draws, in order
    x_src, gens, s = _x_src(), _gens(), TIMESTEPS[0] / 1000.0
    sources = [x for x, _, c in fake.calls[:6] if c is SRC]
    assert len(sources) == 3
    for x in sources:
        noise = torch.stack([torch.randn(SHAPE[1:], generator=g) for g in gens])
        torch.testing.assert_close(x, (1 - s) * x_src + s * noise, rtol=0, atol=1e-6)
    # one step (onto sigma 0): the move is the mean of the 3 recorded velocity differences
    one = FakeVelocity()
    out = flow_edit(one, x_src, TIMESTEPS[:1], FlowSchedule(), src_cond=SRC, src_uncond=None, src_scale=1.0,
                    tar_cond=TAR, tar_uncond=None, tar_scale=1.0, generators=_gens(), n_avg=3)
    velocity = {id(c): [] for c in (SRC, TAR)}
    for x, t, c in one.calls:
        velocity[id(c)].append(0.5 * x + c.view(-1, 1, 1, 1) * t / 1000.0)
    mean = sum(vt - vs for vt, vs in zip(velocity[id(TAR)], velocity[id(SRC)])) / 3
    assert len(one.calls) == 6
    torch.testing.assert_close(out, x_src + (0.0 - s) * mean, rtol=0, atol=1e-6)


def _recorder(seen: list):
    def hook(state):
        seen.append((state.index, state.x_t.clone()))
        return state.cond

    return hook


def test_n_min_runs_plain_euler_sampling_for_the_last_steps():
    fake, seen = FakeVelocity(), []
    n_min = 3
    out = _run(n_min=n_min, denoiser=fake, hook=_recorder(seen))
    flowedit_steps = len(TIMESTEPS) - n_min
    assert len(fake.calls) == 2 * flowedit_steps + n_min  # plain steps call only the target
    assert all(c is TAR for _, _, c in fake.calls[2 * flowedit_steps:])
    sigmas = [t / 1000.0 for t in TIMESTEPS] + [0.0]
    plain = [x for i, x in seen if i >= flowedit_steps] + [out]
    for j, i in enumerate(range(flowedit_steps, len(TIMESTEPS))):
        x, t = plain[j], TIMESTEPS[i]
        expected = x + (sigmas[i + 1] - sigmas[i]) * (0.5 * x + TAR.view(-1, 1, 1, 1) * t / 1000.0)
        torch.testing.assert_close(plain[j + 1], expected, rtol=0, atol=1e-6)


def test_bad_counts_are_one_line_errors_naming_the_parameter():
    for kwargs, name in (({"n_avg": 0}, "n_avg"), ({"n_min": -1}, "n_min"), ({"n_min": len(TIMESTEPS)}, "n_min")):
        with pytest.raises(ConfigError, match=f"^{name} "):
            _run(**kwargs)


def test_the_pipeline_passes_n_min_and_n_avg_through(monkeypatch):
    """On tiny FLUX: n_avg 2 makes a different edit than the default; n_min 1 too; the config records both."""
    from date_edit.backbones import load_backbone
    from date_edit.edit_config import EditConfig
    from date_edit.pipeline import edit

    flux = load_backbone("tiny-flux", device="cpu")
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    runs = {kw: edit(flux, pixels, "a dog", source_prompt="a cat", config=EditConfig(steps=6, date=None, **dict(kw)))
            for kw in ((), (("n_avg", 2),), (("n_min", 1),))}
    base = runs[()].latents
    assert runs[()].config["n_avg"] == 1 and runs[()].config["n_min"] == 0
    assert runs[(("n_avg", 2),)].config["n_avg"] == 2 and runs[(("n_min", 1),)].config["n_min"] == 1
    assert float((runs[(("n_avg", 2),)].latents - base).abs().max()) > 1e-6
    assert float((runs[(("n_min", 1),)].latents - base).abs().max()) > 1e-6
