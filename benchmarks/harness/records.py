"""A run folder's records: which (method, item, seed) are done, every rank's share merged into ``records.jsonl``,
and the fingerprint that keeps a resumed run on the model that made its records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from benchmarks.harness.methods import Method
from benchmarks.suites.base import Item
from date_edit.errors import ConfigError


def model_fingerprint(backbone) -> str:
    """A short hash of the UNet's and the VAE's first and last weights: tells two trainings of one model apart."""
    import hashlib

    h = hashlib.sha256()
    for module in (backbone.unet, backbone.vae):
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_same_model(out: Path, model: str, backbone, resuming: bool) -> None:
    """Resume only with the model that made the records (``run.json`` keeps its fingerprint)."""
    meta_path = out / "run.json"
    fingerprint = model_fingerprint(backbone)
    if resuming and meta_path.is_file():
        earlier = json.loads(meta_path.read_text())
        if earlier.get("fingerprint") != fingerprint:
            raise ConfigError(None, f"{out} holds records of another model ({earlier.get('model')}, weights "
                                    f"{earlier.get('fingerprint')}); delete it or pass --out to start a new run")
    meta_path.write_text(json.dumps({"model": model, "fingerprint": fingerprint}) + "\n")



def todo(methods: list[Method], items: list[Item], seeds: list[int], done: dict) -> list[tuple]:
    """Every (method, item, seed) not done yet, in one order every rank computes the same way."""
    return [(m, item, seed) for m in methods for item in items for seed in seeds
            if (m.label, item.id, seed) not in done]


def load_all_records(out: Path) -> dict:
    """The records of ``records.jsonl`` and of every rank's ``records.rank<N>.jsonl``, by (method, item, seed)."""
    done = load_records(out / "records.jsonl")
    for path in sorted(out.glob("records.rank*.jsonl")):
        done.update(load_records(path))
    return done


def merge_records(out: Path, methods: list[Method], items: list[Item]) -> list[dict]:
    """All ranks' records into ``records.jsonl`` (written whole, then swapped in), the rank files removed; returns
    the records of this run's methods and items, in method, item, seed order."""
    done = load_all_records(out)
    tmp = out / "records.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    os.replace(tmp, out / "records.jsonl")
    for path in out.glob("records.rank*.jsonl"):
        path.unlink()
    order = {m.label: i for i, m in enumerate(methods)}
    item_order = {it.id: i for i, it in enumerate(items)}
    return sorted(done.values(), key=lambda r: (order.get(r["method"], len(order)),
                                                item_order.get(r["item"], len(item_order)), r["seed"]))


def equal_compute_factor(methods: list[Method], done: dict) -> Optional[float]:
    """DATE(clip)/fixed mean time ratio measured so far in this run folder (for fixed-equal-compute)."""
    fixed = [r["seconds"] for (m, _, _), r in done.items() if m == "fixed"]
    date = [r["seconds"] for (m, _, _), r in done.items() if m == "date-clip"]
    if not fixed or not date:
        return None
    return max(1.0, (sum(date) / len(date)) / (sum(fixed) / len(fixed)))


def load_records(path: Path) -> dict:
    """The records of one JSONL file by (method, item, seed) (a torn last line is skipped)."""
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed run
                continue
            done[(r["method"], r["item"], r["seed"])] = r
    return done


