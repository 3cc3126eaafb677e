"""Pinned outputs (issue 37): for fixed seeds, the images and records of ``edit``, ``generate``, ``batch`` and
``sweep`` on the tiny and toy models stay exactly what they were when they were pinned, so a refactor of how the
front ends build and run an edit cannot change what users get.

The runs are the CLI's own (``date_edit_cli.main`` in-process, one torch thread, so float sums are reproducible);
their PNGs' pixels and their records (less times, memory and paths) are compared with
``tests/fixtures/pinned_outputs.npz`` / ``.json``. After a change that is *meant* to change outputs, rewrite them
with ``python tests/test_pinned_outputs.py --write`` and say why in the commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PHOTO = ROOT / "samples" / "chelsea.png"
RED_CIRCLE = ROOT / "samples" / "toy" / "red_circle.png"
TINY = ("--model", "tiny", "-q")
# record keys that differ from run to run or machine to machine, dropped before comparing
VOLATILE = {"timings", "peak_memory_mb", "memory_kind", "output", "outputs", "input", "mask_output", "seconds",
            "source", "started", "finished", "run_id", "duration_s", "cells_s", "total_s", "inversion_s", "time",
            "host", "pid", "input_sha256", "label", "worker", "rank", "device", "record_id",
            "options_hash"}


def cases(work: Path) -> dict[str, list[str]]:
    """Each pinned run's ``date-edit`` arguments, writing under ``work``."""
    (work / "photos").mkdir(exist_ok=True)
    shutil.copy(PHOTO, work / "photos" / "a.png")
    shutil.copy(RED_CIRCLE, work / "photos" / "b.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    from PIL import Image

    Image.fromarray(mask).save(work / "mask.png")
    (work / "edits.csv").write_text("image,prompt,seed,skip,cfg_target,no_date,mask\n"
                                    "photos/a.png,a dog,1,,,,\n"
                                    "photos/b.png,a green square,2,3,9,true,mask.png\n")
    p = str(work)
    return {
        "edit_tiny_date": ["edit", str(PHOTO), "a dog", *TINY, "--steps", "8", "--update-steps", "0,3", "--seed",
                           "3", "--json", "-o", f"{p}/edit_tiny_date.png"],
        "edit_tiny_source": ["edit", str(PHOTO), "a dog", *TINY, "--source-prompt", "a cat", "--steps", "8",
                             "--no-date", "--save-mask", "--json", "-o", f"{p}/edit_tiny_source.png"],
        "edit_tiny_user_mask": ["edit", str(PHOTO), "a dog", *TINY, "--steps", "8", "--no-p2p", "--mask",
                                f"{p}/mask.png", "--update-steps", "1", "--json", "-o", f"{p}/edit_tiny_mask.png"],
        "edit_toy": ["edit", str(RED_CIRCLE), "a blue circle", "--model", "toy", "-q", "--source-prompt",
                     "a red circle", "--steps", "12", "--update-steps", "0,4", "--json", "-o", f"{p}/edit_toy.png"],
        "edit_tiny_sd3": ["edit", str(PHOTO), "a dog", "--model", "tiny-sd3", "-q", "--steps", "6", "--no-date",
                          "--json", "-o", f"{p}/edit_sd3.png"],
        "generate_tiny": ["generate", "a red cube", *TINY, "--steps", "6", "--update-steps", "0,3", "-n", "2",
                          "--json", "-o", f"{p}/generate_tiny.png"],
        "batch_tiny": ["batch", "--manifest", f"{p}/edits.csv", "-o", f"{p}/batch", *TINY, "--steps", "8",
                       "--update-steps", "0"],
        "sweep_toy": ["sweep", str(RED_CIRCLE), "a blue circle", "--model", "toy", "-q", "--source-prompt",
                      "a red circle", "--steps", "12", "--skips", "4", "--cfgs", "7.5", "--date", "both",
                      "--update-steps", "0", "--json", f"{p}/sweep.json", "-o", f"{p}/sweep.png"],
    }


def _stable(value):
    """``value`` without its volatile keys (recursively)."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _read(path: Path, work: Path):
    """A record file (JSON, or JSON lines as a list), the run's folder written ``WORK``."""
    text = path.read_text().replace(str(work), "WORK")
    return [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" \
        else json.loads(text)


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@contextlib.contextmanager
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_all(work: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Run every case in-process; ``(images by name, stable records by case)``."""
    from date_edit_cli.main import main

    images, records = {}, {}
    with _one_thread():
        for name, args in cases(work).items():
            before = {p for p in work.rglob("*")}
            try:
                main.main(args, standalone_mode=False)
            except SystemExit as exc:
                assert exc.code in (0, None), f"{name}: exit {exc.code}"
            new = sorted(p for p in work.rglob("*") if p not in before and p.is_file())
            for png in (p for p in new if p.suffix == ".png"):
                images[f"{name}/{png.relative_to(work)}"] = _pixels(png)
            jsons = [p for p in new if p.suffix in (".json", ".jsonl")]
            records[name] = {str(p.relative_to(work)): _stable(_read(p, work)) for p in jsons}
    return images, records


def _first_difference(path: str, got, want) -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(got) | set(want)):
            if got.get(key, "<missing>") != want.get(key, "<missing>"):
                return _first_difference(f"{path}.{key}", got.get(key, "<missing>"), want.get(key, "<missing>"))
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                return _first_difference(f"{path}[{i}]", g, w)
    return f"{path}: {str(got)[:200]} != pinned {str(want)[:200]}"


@pytest.mark.slow
def test_outputs_are_the_pinned_ones(tmp_path):
    """Every pinned image pixel for pixel and every record field (less times, memory and paths) as pinned."""
    want_images = dict(np.load(FIXTURES / "pinned_outputs.npz"))
    want_records = json.loads((FIXTURES / "pinned_outputs.json").read_text())
    images, records = run_all(tmp_path)
    assert sorted(images) == sorted(want_images)
    for name, pixels in images.items():
        diff = np.abs(pixels.astype(int) - want_images[name].astype(int))
        assert pixels.shape == want_images[name].shape and not diff.any(), \
            f"{name}: {int((diff > 0).sum())} pixel values differ (max {int(diff.max())})"
    for name in want_records:
        got = json.loads(json.dumps(records.get(name)))
        assert got == want_records[name], _first_difference(name, got, want_records[name])


def write() -> None:
    """Rewrite the pinned outputs from this checkout's code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as d:
        images, records = run_all(Path(d))
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(FIXTURES / "pinned_outputs.npz", **images)
    (FIXTURES / "pinned_outputs.json").write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"pinned {len(images)} images and {len(records)} records in {FIXTURES}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_pinned_outputs.py --write")
    write()
