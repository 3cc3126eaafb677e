"""The harness's suites, one module each behind one small protocol.

A suite module (``benchmarks.suites.toy``, ``.ane``, ``.coco5k``, ``.edit``, ``.pie.suite``) holds:

- ``DEFAULT_STEPS``: the steps of a run that gives no ``--steps``;
- ``items(limit, category, data) -> list[Item]``: its prompts (and for edits, source images);
- ``Metrics(model, device, eval_clip, captioner)``: its metric functions, built once;
- ``check(args, methods, backbone, items)``: refuse, before any image is made, a method the model cannot run;
- ``run_item(runner, method, item, seed, steps) -> (result, source pixels or None, record fields)``: one image;
- ``measure(runner, method, item, seed, result, source) -> dict``: that image's metrics;
- ``TABLES`` and ``write_tables(out, records, runner)``: the suite's own reports beside the harness's summary.

The generation suites share :mod:`benchmarks.suites.generation`, the edit suites :mod:`benchmarks.suites.editing`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Optional

from date_edit.errors import ConfigError

SUITES = ("toy", "ane", "coco5k", "edit", "pie")
EDIT_SUITES = ("edit", "pie")
_MODULES = {"toy": "toy", "ane": "ane", "coco5k": "coco5k", "edit": "edit", "pie": "pie.suite"}


def suite_module(name: str) -> ModuleType:
    """The module of suite ``name`` (a one-line ConfigError for an unknown name)."""
    if name not in _MODULES:
        raise ConfigError(None, f"unknown suite {name!r}: use one of {', '.join(SUITES)}")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def load_items(suite: str, limit: Optional[int], category: str = "all", data: Optional[str] = None) -> list:
    """The suite's items, the first ``limit`` of them."""
    items = suite_module(suite).items(limit, category, data)
    return items[:limit] if limit else items
