"""Image-text scorers: the objectives DATE optimises and the metrics benchmarks report.

A scorer spec is ``name[:variant]`` (``clip``, ``clip:tiny``, ``clip:toy``, ``clip:openai/clip-vit-base-patch32``)
or a weighted sum ``clip=1,imagereward:tiny=0.5``. Third-party packages add scorers through the
``date_edit.scorers`` entry-point group: each entry point names a factory ``(variant, device, dtype) -> Scorer``.
"""

from __future__ import annotations

from .base import Scorer, ScorerError
from .registry import available_scorers, build_scorer, offline_scorer_spec, parse_scorer_spec, register_scorer

__all__ = [
    "Scorer", "ScorerError", "available_scorers", "build_scorer", "offline_scorer_spec", "parse_scorer_spec",
    "register_scorer",
]
