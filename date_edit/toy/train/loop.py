"""The one training loop every stage runs: learning-rate schedule, optimiser step, loss curve, and a step total
re-planned from the measured step time so the stage fits its share of the wall budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# steps at which a stage re-plans its total from the measured step time (the machine may be busier or idler)
REPLAN_AT = frozenset((20, 50, 100, 200, 400, 1000, 2000, 4000))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def planned_steps(step_time: float, budget_s: float, max_steps: int, done: int) -> int:
    """The step total that fits ``budget_s`` more seconds at ``step_time`` each, after ``done``, capped."""
    return int(min(max_steps, done + max(0.0, budget_s) / max(step_time, 1e-6)))


class Curve:
    """Mean of a scalar per ``every`` steps."""

    def __init__(self, every: int) -> None:
        self.every, self.buf, self.points = every, [], []

    def add(self, step: int, value: float) -> None:
        """Record ``value`` at ``step``; every ``every`` values become one point ``[step + 1, mean]``."""
        self.buf.append(value)
        if len(self.buf) == self.every:
            self.points.append([step + 1, round(float(np.mean(self.buf)), 6)])
            self.buf = []


@dataclass(frozen=True)
class Schedule:
    """How long and how fast one stage trains, and how it reports."""

    name: str  # in the log lines
    max_steps: int  # upper bound; the wall budget may stop the stage first
    lr: float  # peak learning rate of :func:`lr_at`
    warmup: int  # warmup steps of :func:`lr_at`
    budget_s: float  # wall seconds for the stage
    log_every: int  # a loss-curve point per this many steps
    progress_every: int = 200  # a progress log line per this many steps
    rate_digits: int = 3  # decimals of the seconds per step in the re-planning log line
    show_elapsed: bool = False  # progress lines end with the stage's wall seconds


def train_loop(schedule: Schedule, opt: torch.optim.Optimizer, loss_fn: Callable[[int], torch.Tensor],
               log: Callable[[str], None], *, max_grad_norm: float | None = None,
               after_step: Callable[[int], None] | None = None) -> tuple[list, int]:
    """Train until the (re-planned) step total: per step, set the learning rate, take ``loss_fn(step)`` (which
    draws its own batch), step the optimiser (gradients clipped to ``max_grad_norm`` when given), then call
    ``after_step(step)`` (e.g. an EMA update). Returns (the loss curve's points, the steps taken)."""
    s = schedule
    curve, t0, total, step = Curve(s.log_every), time.time(), s.max_steps, 0
    params = [p for group in opt.param_groups for p in group["params"]]
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, s.lr, s.warmup)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        if after_step is not None:
            after_step(step)
        curve.add(step, loss.item())
        step += 1
        if step in REPLAN_AT:
            elapsed = time.time() - t0
            total = planned_steps(elapsed / step, s.budget_s - elapsed, s.max_steps, step)
            log(f"{s.name}: {elapsed / step:.{s.rate_digits}f} s/step -> {total} steps")
        if step % s.progress_every == 0:
            shown = curve.points[-1][1] if curve.points else loss.item()
            tail = f" ({time.time() - t0:.0f} s)" if s.show_elapsed else ""
            log(f"{s.name} step {step}/{total} loss {shown:.4f}{tail}")
    return curve.points, step
