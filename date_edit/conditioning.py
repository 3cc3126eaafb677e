"""What a denoiser is conditioned on, for every backbone family, as one object.

A :class:`Conditioning` holds named, batch-first tensors. Some of them DATE may move (``movable``: SD's token
embedding; SDXL's token embedding and pooled vector); the ``extras`` are never moved (SDXL's ``time_ids``).
The denoising loop, the inversion and DATE only batch, detach and replace tensors by name, so they run any
family without knowing which it is. A plain ``(B, L, D)`` tensor is accepted wherever a condition is, and means
``Conditioning({"tokens": tensor})``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

import torch

from .choices import DATE_TARGETS as TARGETS  # what --date-targets accepts
from .errors import ConfigError


@dataclass(frozen=True)
class Conditioning:
    """Named condition tensors of one batch.

    Attributes:
        tensors: movable tensors by name, each ``(B, ...)``: ``tokens`` ``(B, L, D)`` always, ``pooled``
            ``(B, P)`` for SDXL.
        extras: tensors the model needs that are never moved, each ``(B, ...)`` (SDXL ``time_ids`` ``(B, 6)``,
            FLUX's embedded ``guidance`` ``(B,)``).
        masks: per movable tensor, a 0/1 float mask broadcastable to one row (``(1, ...)``) of the entries DATE
            may move; entries under 0 stay as they are (SD3's zero pad block of the CLIP part).
    """

    tensors: Mapping[str, torch.Tensor]
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "tokens" not in self.tensors:
            raise ValueError("a Conditioning needs a 'tokens' tensor")
        sizes = {t.shape[0] for t in (*self.tensors.values(), *self.extras.values())}
        if len(sizes) != 1:
            raise ValueError(f"condition tensors disagree on the batch size: {sorted(sizes)}")

    def __getitem__(self, name: str) -> torch.Tensor:
        """The tensor ``name`` (movable or extra)."""
        return self.tensors[name] if name in self.tensors else self.extras[name]

    @property
    def names(self) -> tuple[str, ...]:
        """The movable tensors' names, ``tokens`` first."""
        return tuple(self.tensors)

    @property
    def batch_size(self) -> int:
        """B."""
        return self.tensors["tokens"].shape[0]

    @property
    def device(self) -> torch.device:
        """Where the tensors are."""
        return self.tensors["tokens"].device

    def replace(self, **tensors: torch.Tensor) -> "Conditioning":
        """The same condition with some movable tensors replaced (same names, same shapes)."""
        for name, value in tensors.items():
            if name not in self.tensors:
                raise KeyError(f"{name!r} is not a movable condition tensor ({', '.join(self.tensors)})")
            if value.shape != self.tensors[name].shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {tuple(self.tensors[name].shape)}")
        return Conditioning({**self.tensors, **tensors}, self.extras, self.masks)

    def map(self, fn) -> "Conditioning":
        """``fn`` applied to every tensor, movable and extra (``detach``, ``clone``, ``.to(...)``)."""
        return Conditioning({k: fn(v) for k, v in self.tensors.items()}, {k: fn(v) for k, v in self.extras.items()},
                            self.masks)

    def with_extras(self, **extras: torch.Tensor) -> "Conditioning":
        """The same condition with extras added or replaced (FLUX's embedded ``guidance``)."""
        return Conditioning(self.tensors, {**self.extras, **extras}, self.masks)

    def detach(self) -> "Conditioning":
        """Every tensor detached."""
        return self.map(torch.Tensor.detach)

    def clone(self) -> "Conditioning":
        """Every tensor copied."""
        return self.map(torch.Tensor.clone)

    def mask(self, name: str) -> torch.Tensor | None:
        """The movable-entry mask of tensor ``name`` (None: every entry may move)."""
        return self.masks.get(name)

    def resolve_targets(self, targets: str) -> tuple[str, ...]:
        """The tensor names ``--date-targets`` means here: ``tokens``, ``pooled`` or ``all`` movable tensors.

        Raises:
            ConfigError: ``pooled`` on a family without a pooled vector.
        """
        if targets not in TARGETS:
            raise ConfigError("date_targets", f"{targets!r}: use one of {', '.join(TARGETS)}")
        if targets == "all":
            return self.names
        if targets not in self.tensors:
            raise ConfigError("date_targets", f"{targets}: this model conditions only on "
                                              f"{', '.join(self.names)}; use --date-targets tokens")
        return (targets,)


Condition = Union[torch.Tensor, Conditioning]


def as_conditioning(cond: Condition) -> Conditioning:
    """``cond`` as a :class:`Conditioning` (a plain tensor becomes its ``tokens``)."""
    return cond if isinstance(cond, Conditioning) else Conditioning({"tokens": cond})


def cat_conditions(first: Condition, second: Condition) -> Condition:
    """Two conditions stacked on the batch axis (the CFG batch ``[uncond, cond]``); tensors stay tensors."""
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return torch.cat([first, second])
    a, b = as_conditioning(first), as_conditioning(second)
    if a.names != b.names or set(a.extras) != set(b.extras):
        raise ValueError(f"cannot batch conditions on {a.names} with conditions on {b.names}")
    return Conditioning({k: torch.cat([a.tensors[k], b.tensors[k]]) for k in a.names},
                        {k: torch.cat([a.extras[k], b.extras[k]]) for k in a.extras}, a.masks or b.masks)
