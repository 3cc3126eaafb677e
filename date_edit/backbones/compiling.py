"""Compiling the denoiser: ``torch.compile`` of a backbone's UNet or transformer for the passes that need no
gradients, and the bookkeeping around it (the mode, the input shapes compiled so far, the one-off seconds their
first calls took). :class:`~date_edit.backbones.base.Backbone` holds one :class:`Compilation` and asks it to run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..choices import COMPILE_MODES
from ..errors import ConfigError


def input_shapes(kwargs: dict):
    """The shapes and dtypes of a (nested) dict of tensors: what a compiled UNet specialises on."""
    if isinstance(kwargs, dict):
        return tuple((k, input_shapes(v)) for k, v in sorted(kwargs.items()))
    return (tuple(kwargs.shape), kwargs.dtype) if isinstance(kwargs, torch.Tensor) else kwargs


@dataclass
class Compilation:
    """A backbone's compiled denoiser, or none (eager), and what compiling it has cost so far.

    Attributes:
        module: the ``torch.compile``'d denoiser the passes without autograd run; None: they run the eager one.
        mode: the ``torch.compile`` mode it was compiled with (``auto`` resolved by device), None when off.
        seconds: one-off seconds spent in the first call of each new input shape (compilation), summed over every
            compile of this backbone so far: a caller reports the cost, or amortises it over a batch job.
    """

    module: Optional[torch.nn.Module] = None
    mode: Optional[str] = None
    seconds: float = 0.0
    shapes: set = field(default_factory=set)  # the input shapes compiled so far (a new one compiles on first call)

    def compile(self, denoiser: torch.nn.Module, mode: Optional[str], device: torch.device) -> None:
        """Compile ``denoiser`` in ``mode`` (``auto``: ``reduce-overhead`` on CUDA, ``default`` elsewhere); ``None``
        or ``"none"`` turns compilation off. The seconds counted so far are kept.

        Raises:
            ConfigError: a mode that is not one of :data:`~date_edit.choices.COMPILE_MODES`.
        """
        if mode in (None, "none"):
            self.module, self.mode = None, None
            return
        if mode not in COMPILE_MODES:
            raise ConfigError("compile_mode", f"{mode!r}: use one of {', '.join(COMPILE_MODES)}")
        if mode == "auto":
            mode = "reduce-overhead" if device.type == "cuda" else "default"
        self.module = torch.compile(denoiser, mode=mode, dynamic=False)
        self.mode = mode
        self.shapes = set()

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict, device: torch.device) -> torch.Tensor:
        """The compiled denoiser's output (float32, a copy) for model input ``x``; the first call of a new input
        shape is timed into :attr:`seconds`."""
        key = (tuple(x.shape), x.dtype, repr(input_shapes(kwargs)))
        first = key not in self.shapes
        start = time.perf_counter()
        if device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are no longer read
        # A CUDA-graph replay reuses its output buffer: copy before the next call overwrites it.
        out = self.module(x, timestep=timestep, **kwargs).sample.float().clone()
        if first:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds += time.perf_counter() - start
            self.shapes.add(key)
        return out

    def describe(self) -> dict:
        """The result record's ``compile`` (the mode, None when off) and ``compile_s`` (seconds, 3 decimals)."""
        return {"compile": self.mode, "compile_s": round(self.seconds, 3)}
