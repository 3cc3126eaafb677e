"""The Hugging Face hub as this project meets it: is it reachable, and random weights made reproducibly where
real ones cannot be had. Light: the standard library at import (torch loads in :func:`seeded`)."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Callable, Iterator, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")

OFFLINE_VALUES = ("1", "true", "yes")


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in OFFLINE_VALUES


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers a TCP connect (so an offline run fails in seconds, not minutes); False when
    :func:`offline`. ``HF_ENDPOINT`` names another hub."""
    if offline():
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_then_hub(load: Callable[[bool], T], *, local: bool) -> T:
    """``load(local_files_only)`` from the cache (or a local folder) first, then from the hub, but only for a hub id
    and only when the hub answers (:func:`hub_reachable`); the cache's ``OSError`` is raised otherwise."""
    try:
        return load(True)
    except OSError:
        if local or not hub_reachable():
            raise
        return load(False)


@contextlib.contextmanager
def seeded(seed: int, device=None) -> Iterator[None]:
    """Inside, torch's CPU generator is seeded with ``seed`` (and, with ``device``, new tensors are made there);
    the caller's random state is restored after. For building random-weight models reproducibly."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if device is None:
            yield
        else:
            with torch.device(device):
                yield


@contextlib.contextmanager
def library_progress_bars(enabled: bool) -> Iterator[None]:
    """Inside, transformers' and diffusers' own progress bars (weight loading, downloads) are on or off as asked;
    their previous state is restored after. A command run with ``--quiet``, or with stderr not a terminal, turns
    them off so that its stderr holds only its own lines."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = [(lib, lib.is_progress_bar_enabled()) for lib in (transformers_logging, diffusers_logging)]
    for lib, _ in before:
        (lib.enable_progress_bar if enabled else lib.disable_progress_bar)()
    try:
        yield
    finally:
        for lib, was in before:
            (lib.enable_progress_bar if was else lib.disable_progress_bar)()
