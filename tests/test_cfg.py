"""ClassifierFreeGuidance keeps one step's unconditional eps: evaluated once, handed over once, never stale."""

import torch

from date_edit.cfg import ClassifierFreeGuidance, guided_eps, shared_guidance, step_eps


class Counting:
    def __init__(self):
        self.calls = []

    def __call__(self, x, t, cond):
        self.calls.append(x.shape[0])
        return x * cond.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t


def test_the_kept_eps_u_is_evaluated_once_and_taken_once():
    den, x, c, u = Counting(), torch.randn(2, 4, 3, 3), torch.ones(2, 5, 8), torch.zeros(2, 5, 8) + 0.5
    guide = ClassifierFreeGuidance(den, u, 3.0)
    first = guide.unconditional(x, 10)
    assert guide.unconditional(x, 10) is first and den.calls == [2]  # kept for the step
    eps = step_eps(den, x, 10, c, u, 3.0, shared_guidance(type("Hook", (), {"guidance": guide})(), u, 3.0))
    assert den.calls == [2, 2]  # the conditional branch only
    torch.testing.assert_close(eps, guided_eps(den, x, 10, c, u, 3.0))
    assert guide.take(x, 10) is None  # handed over once


def test_a_kept_eps_u_is_not_used_at_another_latent_step_or_guidance():
    den, x, u = Counting(), torch.randn(1, 4, 3, 3), torch.zeros(1, 5, 8)
    guide = ClassifierFreeGuidance(den, u, 3.0)
    guide.unconditional(x, 10)
    assert guide.take(x.clone(), 10) is None
    guide.unconditional(x, 10)
    assert guide.take(x, 9) is None
    hook = type("Hook", (), {"guidance": guide})()
    assert shared_guidance(hook, torch.zeros(1, 5, 8), 3.0) is None  # another uncond
    assert shared_guidance(hook, u, 2.0) is None and shared_guidance(hook, u, 3.0) is guide
    assert ClassifierFreeGuidance(den, None, 3.0).unconditional(x, 10) is None
    assert ClassifierFreeGuidance(den, u, 1.0).unconditional(x, 10) is None
