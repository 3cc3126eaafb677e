"""Summary statistics of a run's numbers (light: no torch), for the benchmarks' tables and the AnE summary."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci95(values: Sequence[float]) -> dict:
    """Mean and 95% normal-approximation confidence half-width (1.96 * s / sqrt(n))."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = sum(vals) / n
    if n == 1:
        return {"mean": mean, "ci95": None, "n": 1}
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return {"mean": mean, "ci95": 1.96 * math.sqrt(var / n), "n": n}
