"""Scorer specs: ``name[:variant][=weight]`` terms joined by commas, parsed, and resolved for the offline
backbones. Pure text: the registry builds what a spec names."""

from __future__ import annotations

import math
import re
from typing import Optional

from ..errors import excerpt
from .base import ScorerError

_TERM = re.compile(r"^([A-Za-z0-9_.\-]+)(?::(.+?))?(?:=(.+))?$")


def parse_scorer_spec(spec: str) -> list[tuple[str, Optional[str], float]]:
    """``"clip=1,imagereward:tiny=0.5"`` -> ``[("clip", None, 1.0), ("imagereward", "tiny", 0.5)]``.

    A term named again is merged into its first place, weights added (``clip,clip=0.5`` is ``clip=1.5``: one model
    loads, the sum is the same); at most :data:`~date_edit.limits.MAX_SCORER_TERMS` distinct terms (each loads a
    model), else :class:`ScorerError`.
    """
    from ..limits import MAX_SCORER_TERMS

    terms: dict[tuple[str, Optional[str]], float] = {}
    text = spec.strip()
    if not text:
        raise ScorerError("empty scorer spec: name one, e.g. clip or clip=1,imagereward=0.5")
    for part in text.split(","):
        match = _TERM.match(part.strip())
        if not match:
            raise ScorerError(f"cannot read scorer {excerpt(part)}: use name, name:variant or name=weight")
        name, variant, weight = match.group(1), match.group(2), match.group(3)
        try:
            w = 1.0 if weight is None else float(weight)
        except ValueError:
            raise ScorerError(f"scorer weight {excerpt(weight)} in {excerpt(part)} is not a number") from None
        if not math.isfinite(w):
            raise ScorerError(f"scorer weight in {excerpt(part)} must be finite")
        key = (name.lower(), variant)
        terms[key] = terms.get(key, 0.0) + w
        if len(terms) > MAX_SCORER_TERMS:
            raise ScorerError(f"scorer spec {spec[:80]!r} names more than {MAX_SCORER_TERMS} different scorers, the "
                              "most one objective may hold (each loads a model)")
    return [(name, variant, w) for (name, variant), w in terms.items()]


# scorers with weights trained in the shipped toy world (the rest have only random-weight ``tiny`` variants there)
_TOY_VARIANTS = {"clip": "toy", "min-concept": "toy"}


def offline_scorer_spec(spec: str, model: str) -> str:
    """What a scorer named without a variant means with an offline backbone (``tiny``, ``tiny-sdxl`` or ``toy``).

    With ``toy``, ``clip`` and ``min-concept`` mean the toy world's own CLIP (``clip:toy``); with ``tiny``, and
    for scorers without toy-world weights, the random-weight ``:tiny`` variant (offline: a smoke test, not a
    measurement). Terms that name a variant are kept; any other ``model`` returns ``spec`` unchanged. The CLI
    and the benchmark harness both resolve specs here, so ``--model toy --scorer min-concept`` means the same
    objective in both. Example: ``offline_scorer_spec("min-concept,imagereward=0.5", "toy")`` is
    ``"min-concept:toy=1,imagereward:tiny=0.5"``.
    """
    from ..choices import OFFLINE_MODELS

    if model not in OFFLINE_MODELS:
        return spec
    terms: dict[tuple[str, str], float] = {}  # clip and clip:tiny are one term with --model tiny: merged
    for name, variant, weight in parse_scorer_spec(spec):
        if variant is None:
            variant = _TOY_VARIANTS.get(name, "tiny") if model == "toy" else "tiny"
        terms[(name, variant)] = terms.get((name, variant), 0.0) + weight
    return ",".join(f"{name}:{variant}={weight:g}" for (name, variant), weight in terms.items())
