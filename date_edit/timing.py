"""Wall-clock phases and peak memory of a run (CUDA is asynchronous: every lap waits for the device)."""

from __future__ import annotations

import resource
import time
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:
    from .date import DateTrace


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory since the last reset, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Clock:
    """Wall-clock phases of one run, each read after the device has finished its work (CUDA is asynchronous);
    resets the peak-memory counter when it starts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        _reset_peak(device)
        self.start = self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """End ``phase`` now (after a device sync)."""
        _sync(self.device)
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.last
        self.last = now

    def timings(self, trace: Optional[DateTrace]) -> dict:
        """``total_s``, ``inversion_s``, ``sampling_s`` (decoding included) and ``date_s`` (within sampling)."""
        return {"total_s": self.last - self.start, "inversion_s": self.phases.get("inversion_s", 0.0),
                "sampling_s": self.phases.get("sampling_s", 0.0), "date_s": trace.seconds if trace else 0.0}
