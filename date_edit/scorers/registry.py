"""Scorer registry: built-in factories plus the ``date_edit.scorers`` entry-point group."""

from __future__ import annotations

from importlib import metadata
from typing import Sequence

import torch

from ..errors import DateEditError, printable
from .base import Scorer, ScorerError, ScorerInfo
from .spec import offline_scorer_spec, parse_scorer_spec  # noqa: F401  (re-exported)

ENTRY_POINT_GROUP = "date_edit.scorers"


_REGISTRY: dict[str, ScorerInfo] = {}


def register_scorer(info: ScorerInfo) -> None:
    """Register a scorer factory under ``info.name`` (later registrations replace earlier ones)."""
    _REGISTRY[info.name] = info


BUILTIN_MODULES = ("clip", "imagereward", "pickscore", "aesthetic", "minconcept")  # each defines INFO


def _load_builtins() -> None:
    """Register the built-in scorers: each module describes itself in ``INFO`` and imports nothing from here."""
    import importlib

    for module in BUILTIN_MODULES:
        try:
            info = importlib.import_module(f"{__package__}.{module}").INFO
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
            continue
        _REGISTRY.setdefault(info.name, info)


def _load_entry_points() -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the CLI
            import warnings

            warnings.warn(f"scorer plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        info = obj if isinstance(obj, ScorerInfo) else ScorerInfo(
            name=ep.name,
            factory=obj,
            differentiable=bool(getattr(obj, "differentiable", True)),
            backend=f"plugin {ep.value}",
            default_weights=str(getattr(obj, "default_weights", "")),
        )
        _REGISTRY.setdefault(ep.name, info)


def available_scorers() -> dict[str, ScorerInfo]:
    """All registered scorers by name: built-ins first, then entry-point plugins."""
    _load_builtins()
    _load_entry_points()
    return dict(_REGISTRY)


class WeightedScorer:
    """``sum_k w_k * h_k(images, prompts)``: differentiable only if every term is."""

    def __init__(self, terms: Sequence[tuple[Scorer, float]], name: str) -> None:
        self.terms = list(terms)
        self.name = name
        self.differentiable = all(s.differentiable for s, _ in self.terms)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Weighted sum of the terms' scores, ``(B,)``."""
        total = None
        for scorer, weight in self.terms:
            value = weight * scorer(images, prompts).float()
            total = value if total is None else total + value
        return total

    def to(self, device) -> "WeightedScorer":
        """Move every term."""
        for scorer, _ in self.terms:
            scorer.to(device)
        return self

    def components(self) -> dict[str, Scorer]:
        """The terms by name, for reporting each score separately."""
        return {s.name: s for s, _ in self.terms}


def _build_term(info: ScorerInfo, name: str, variant, *, device: torch.device, dtype: torch.dtype) -> Scorer:
    """One term's scorer; what its weights or files do wrong (a checkpoint that is not one, a path that is not a
    file) is a :class:`ScorerError` in one line, never the loading library's own exception."""
    try:
        return info.factory(variant, device=device, dtype=dtype)
    except DateEditError:
        raise
    except Exception as exc:  # noqa: BLE001 - a spec names files: what they hold is input
        if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
            raise
        first = printable((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]
        label = f"{name}:{variant}" if variant else name
        raise ScorerError(f"could not build scorer {label!r}: {type(exc).__name__}: {first}") from None


def build_scorer(
    spec: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    require_differentiable: bool = False,
) -> Scorer:
    """Build the scorer a spec names (one term, or a :class:`WeightedScorer` of several).

    Raises:
        ScorerError: unknown name (listing the known ones), bad syntax, or a non-differentiable
            scorer where ``require_differentiable`` (the DATE objective) asks for gradients.
    """
    terms = parse_scorer_spec(spec)
    registry = available_scorers()
    built: list[tuple[Scorer, float]] = []
    for name, variant, weight in terms:
        if name not in registry:
            raise ScorerError(f"unknown scorer {name!r}: known scorers are {', '.join(sorted(registry))}")
        info = registry[name]
        if require_differentiable and not info.differentiable:
            raise ScorerError(
                f"scorer {name!r} is not differentiable, so it cannot be a DATE objective; "
                "use it with `date-edit score`, or pick a differentiable one (see `date-edit scorers`)"
            )
        scorer = _build_term(info, name, variant, device=torch.device(device), dtype=dtype)
        if require_differentiable and not scorer.differentiable:
            raise ScorerError(f"scorer {scorer.name!r} is not differentiable, so it cannot be a DATE objective")
        built.append((scorer, weight))
    if len(built) == 1 and built[0][1] == 1.0:
        return built[0][0]
    merged = len(terms) < len(spec.split(","))  # a term named twice: the name says the merged sum
    name = ",".join(f"{n}{':' + v if v else ''}={w:g}" for n, v, w in terms) if merged else spec.replace(" ", "")
    return WeightedScorer(built, name=name)
