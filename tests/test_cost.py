"""`python -m benchmarks.cost.date_cost --tiny`: the CPU smoke version of the GPU cost benchmark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cost_tiny_writes_rows_with_ratios(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "benchmarks.cost.date_cost", "--tiny", "--batches", "1",
                          "--fractions", "10", "--edit", "--checkpointing", "--breakdown", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    files = list(tmp_path.glob("cost-*.json"))
    assert len(files) == 1 and files[0].with_suffix(".md").is_file()
    rows = json.loads(files[0].read_text())["rows"]
    methods = {(r["method"], r.get("fraction"), r.get("vae_checkpointing")) for r in rows}
    assert {("plain", None, False), ("diffusers", None, False), ("date", 10, False), ("date", 10, True),
            ("edit", None, False), ("edit", 10, False)} <= methods
    for r in rows:
        if r["method"] in ("date", "edit", "plain"):
            assert r["seconds_per_image"] > 0 and r["time_ratio_vs_plain"] > 0
    assert any(r["method"] == "update-breakdown" and "backward" in r["phases_ms"] for r in rows)


@pytest.mark.parametrize("arch", ["sdxl", "flux"])
def test_cost_tiny_other_architectures_run_plain_date_and_diffusers(tmp_path, arch):
    """`--arch sdxl|flux` (the GPU runs' architectures) end to end on tiny-sdxl / tiny-flux: plain, DATE 10% with and
    without per-block checkpointing, diffusers' own pipeline on the same modules, and the update breakdown."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "benchmarks.cost.date_cost", "--tiny", "--arch", arch,
                          "--batches", "1", "--fractions", "10", "--breakdown", "--block-checkpointing", "--out",
                          str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    (path,) = tmp_path.glob(f"cost-*-{arch}.json")
    data = json.loads(path.read_text())
    assert data["meta"]["arch"] == arch
    methods = {r["method"] for r in data["rows"]}
    assert {"plain", "diffusers", "date", "date-blockckpt", "update-breakdown"} <= methods
