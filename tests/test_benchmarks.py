"""The benchmark harness end to end on the tiny backbone with tiny scorers (small limits)."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import expand_sweep, load_items, parse_method, summarize  # noqa: E402
from benchmarks.suites.edit import ssim  # noqa: E402


def run_suite(tmp_path, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "benchmarks", "run", "--model", "tiny", "--steps", "4",
                           "--out", str(tmp_path / "run"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.parametrize(
    "suite,methods,metrics",
    [
        ("ane", "fixed,date-min-concept", {"full_prompt", "min_object", "text_text"}),
        ("coco5k", "fixed,date-clip,ug", {"clip"}),
        ("edit", "fixed,date-clip", {"clip_to_target", "lpips_to_source", "psnr_to_source", "ssim_to_source"}),
        ("toy", "fixed,date-random", {"both_correct", "clip_toy"}),
    ],
)
def test_every_suite_runs_end_to_end(tmp_path, suite, methods, metrics):
    out = run_suite(tmp_path, "--suite", suite, "--methods", methods, "--limit", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == set(methods.split(","))
    for r in records:
        assert metrics <= set(r), r
        assert (run / r["image"]).is_file()
    table = json.loads((run / "summary.json").read_text())["methods"]
    assert set(table) == set(methods.split(","))
    assert (run / "summary.md").is_file() and (run / "index.html").is_file()
    with open(run / "summary.csv") as f:
        assert len(list(csv.reader(f))) == 1 + len(table)
    # resumable: the same command does no new work
    again = run_suite(tmp_path, "--suite", suite, "--methods", methods, "--limit", "1")
    assert again.returncode == 0
    assert len((run / "records.jsonl").read_text().splitlines()) == len(records)
    if suite == "toy":  # records of other weights (a retrained model) are never mixed into a resumed run
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "fingerprint": "0" * 16}))
        other = run_suite(tmp_path, "--suite", suite, "--methods", methods, "--limit", "1")
        assert other.returncode != 0 and "another model" in other.stdout + other.stderr
        assert "Traceback" not in other.stderr


def test_sweep_writes_plots(tmp_path):
    out = run_suite(tmp_path, "--suite", "coco5k", "--methods", "date-clip", "--sweep", "rho=0.25,1", "--limit", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    plots = {p.name for p in (tmp_path / "run" / "plots").iterdir()}
    assert "clip_vs_rho.png" in plots and "objective_per_update.png" in plots


def test_method_parsing_and_sweeps():
    m = parse_method("date-clip@rho=1.0@updates=20%")
    assert m.date.rho == 1.0 and m.date.update_steps == "20%" and m.scorer == "clip"
    assert parse_method("fixed").date is None
    assert parse_method("date-random").date.direction.value == "random"
    with pytest.raises(ValueError, match="unknown method"):
        parse_method("magic")
    assert expand_sweep(["fixed", "date-clip"], "rho=0.25,1") == ["fixed", "date-clip", "date-clip@rho=0.25",
                                                                   "date-clip@rho=1"]


def test_items_and_metrics():
    assert len(load_items("coco5k", None)) == 5000
    assert len(load_items("ane", None)) == 276
    import torch

    x = torch.rand(1, 3, 32, 32)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5) and ssim(x, 1 - x) < 0.5
    table = summarize([{"method": "a", "clip": 0.2, "seconds": 1.0}, {"method": "a", "clip": 0.4, "seconds": 3.0}])
    assert table["a"]["clip"]["mean"] == pytest.approx(0.3) and table["a"]["clip"]["n"] == 2


@pytest.mark.slow
def test_toy_gradient_pass_benchmark_runs_and_pairs_its_methods(tmp_path):
    """make toy-gradient-pass on one prompt and one seed: every method judged, paired against fixed and against
    the reference gradient pass, the Markdown table written (the full run is 480 pairs, 12 min)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = tmp_path / "tgp.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.studies.toy_gradient_pass", "--limit", "1", "--seeds",
                           "7000", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["pairs"] == 1 and len(report["methods"]) == 5
    for name, row in report["methods"].items():
        assert row["summary"]["correct"]["n"] == 1
        if name.startswith("date,"):
            assert row["minus_reference_correct"]["n"] == 1
    assert "| fixed |" in out.with_suffix(".md").read_text()


def test_lpips_random_variant_is_a_distance():
    import torch

    from benchmarks.suites.edit import Lpips

    lpips = Lpips("random")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    assert torch.allclose(lpips(a, a), torch.zeros(2), atol=1e-6)
    far, near = lpips(a, b), lpips(a, (a + 0.02 * (b - a)))
    assert (far > near).all() and (near > 0).all()
    with pytest.raises(ValueError, match="one shape"):
        lpips(a, b[:, :, :32])


@pytest.mark.slow
def test_toy_suite_under_torchrun_matches_one_process_and_resumes(tmp_path, terminal):
    """Two torchrun ranks (gloo, CPU) share the work round-robin; rank 0 merges their records and summarises the
    union: the same figures as one process. Run on a terminal, rank 0 alone draws a bar counting the images of
    both. A rerun without a launcher then finds nothing left to do."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    common = ["run", "--suite", "toy", "--model", "tiny", "--methods", "fixed,date-clip", "--limit", "3",
              "--seeds", "2", "--steps", "4"]
    import socket

    with socket.socket() as s:  # a free port for the rendezvous, so parallel test workers never share one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    runs = {"one": [sys.executable, "-m", "benchmarks"],
            "two": [torchrun, "--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "benchmarks"]}
    out = subprocess.run([*runs["one"], *common, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    logs = {"one": out.stdout[-2000:] + out.stderr[-3000:]}
    assert out.returncode == 0, logs["one"]
    code, logs["two"] = terminal([*runs["two"], *common, "--out", str(tmp_path / "two")], ROOT, env, timeout=600)
    assert code == 0, logs["two"][-3000:]
    closed = re.findall(r"\| *(\d+)/12 \[[^\r\n]*\]\r?\n", logs["two"])  # each bar's last state
    assert closed == ["12"], f"one bar, rank 0's, counting both ranks' images: {logs['two'][-3000:]}"
    one, two = (json.loads((tmp_path / n / "summary.json").read_text()) for n in runs)
    assert two["meta"]["processes"] == 2 and one["meta"]["processes"] == 1
    for method in ("fixed", "date-clip"):
        for metric in ("clip_toy", "both_correct"):
            assert two["methods"][method][metric]["n"] == 6
            assert two["methods"][method][metric]["mean"] == pytest.approx(
                one["methods"][method][metric]["mean"], abs=1e-4), (method, metric, logs)
    lines = (tmp_path / "two" / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 12 and not list((tmp_path / "two").glob("records.rank*.jsonl"))
    assert len({(r["method"], r["item"], r["seed"]) for r in records}) == 12
    assert all(r["host"] and r["device"] == "cpu" for r in records)
    again = subprocess.run([*runs["one"], *common, "--out", str(tmp_path / "two")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "two" / "records.jsonl").read_text().splitlines() == lines  # nothing was redone
