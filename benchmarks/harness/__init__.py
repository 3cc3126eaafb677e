"""The benchmark harness (``python -m benchmarks run ...``): suites x methods x seeds -> per-image JSONL, tables,
plots and an HTML page.

- ``cli``: the command line, its checks (``checks``) and its one-line errors;
- ``methods``: the methods a run compares and their ``@`` overrides (``parse_method``, ``Method.slug``);
- ``runner``: the loop, resumable and sharded between the ranks of a launcher;
- ``records``: what is done, the ranks' records merged, the model's fingerprint;
- ``reports``: summary.md / .csv / .json, plots, index.html, FID.

What each suite brings (its items, its metrics, how it makes one image) lives in :mod:`benchmarks.suites`.
"""

from benchmarks.harness.cli import main
from benchmarks.harness.methods import BASE_METHODS, EDIT_OPTIONS, Method, expand_sweep, parse_method
from benchmarks.harness.reports import summarize, write_reports
from benchmarks.harness.runner import run
from benchmarks.suites import EDIT_SUITES, SUITES, load_items
from benchmarks.suites.base import Item
from date_edit.scorers import offline_scorer_spec

__all__ = ["BASE_METHODS", "EDIT_OPTIONS", "EDIT_SUITES", "SUITES", "Item", "Method", "expand_sweep", "load_items",
           "main", "offline_scorer_spec", "parse_method", "run", "summarize", "write_reports"]
