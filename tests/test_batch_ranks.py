"""``date-edit batch`` on several processes: real torchrun launches (gloo, CPU, offline, ``--model tiny``), kills,
restarts, a two-"node" rendezvous on one machine; and the rank logs' merge, in-process.

The launches are marked slow (each starts 2-3 Python processes that import torch: about 5 s apiece).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from date_edit import batch as jobs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXE = shutil.which("date-edit", path=str(BIN)) or "date-edit"
TORCHRUN = str(BIN / "torchrun")
FAST = ("--model", "tiny", "--steps", "4", "--size", "64", "--quiet")
# PYTHONFAULTHANDLER: a rank that dies of a signal prints every thread's Python stack (into the failure message)
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
for _name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"):
    ENV.pop(_name, None)


def photos(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_args(src: Path, out: Path) -> list[str]:
    return ["batch", str(src), "--prompt", "a dog", "--out", str(out), *FAST]


def torchrun(nproc: int, *extra: str) -> list[str]:
    return [TORCHRUN, "--standalone", "--nproc-per-node", str(nproc), *extra, "--no-python", EXE]


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def outputs(out: Path) -> dict[str, tuple]:
    """Every output PNG: (sha256, inode, mtime_ns); each must decode."""
    found = {}
    for p in sorted(out.glob("*.png")):
        with Image.open(p) as im:
            im.load()
        st = p.stat()
        found[p.name] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
    return found


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(np.int16)


def worker_with_rank(agent: subprocess.Popen, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that the torchrun ``agent`` started (None while it has none)."""
    try:
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RESTART_COUNT=0" in env:
            return int(pid)
    return None


def kill_when(agent: subprocess.Popen, out: Path, rank: int, after: int, timeout: float = 240) -> int:
    """SIGKILL the first attempt's worker of ``rank`` once ``after`` outputs exist; returns how many existed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and agent.poll() is None:
        done = len(list(out.glob("*.png")))
        pid = worker_with_rank(agent, rank)
        if done >= after and pid is not None:
            os.kill(pid, signal.SIGKILL)
            return done
        time.sleep(0.05)
    raise AssertionError(f"never saw {after} outputs with rank {rank} alive (agent exit {agent.poll()})")


def ok_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records(out):
        counts[r["label"]] = counts.get(r["label"], 0) + (r["status"] == "ok")
    return counts


@pytest.mark.slow
def test_two_ranks_do_every_item_once_and_match_one_process(tmp_path):
    src = photos(tmp_path / "in")
    one = run([EXE, *batch_args(src, tmp_path / "one")], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run(torchrun(2) + batch_args(src, tmp_path / "two"), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "8 done, 0 skipped, 0 failed" in two.stderr and "(2 processes)" in two.stderr
    assert two.stderr.count("batch: 8 done") == 1, "only rank 0 prints the summary"
    recs = records(tmp_path / "two")
    assert sorted(r["label"] for r in recs) == [f"p{i}.png" for i in range(8)]  # one record per item
    assert all(r["status"] == "ok" for r in recs) and len({r["run_id"] for r in recs}) == 1
    assert [r["label"] for r in recs] == [f"p{i}.png" for i in range(8)], "merged in item order"
    assert not list((tmp_path / "two").glob("results.rank*.jsonl"))
    assert not (tmp_path / "two" / jobs.LOCK_NAME).exists()
    for i in range(8):  # per-item seeds: the same image as one process, up to fp32 noise in the last 8-bit step
        a, b = pixels(tmp_path / "one" / f"p{i}.png"), pixels(tmp_path / "two" / f"p{i}.png")
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, i


@pytest.mark.slow
def test_a_killed_rank_then_three_ranks_do_only_the_rest(tmp_path):
    src, out = photos(tmp_path / "in"), tmp_path / "out"
    agent = subprocess.Popen(torchrun(2) + batch_args(src, out), cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    kill_when(agent, out, rank=1, after=2)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode != 0, "the launcher reports the lost rank"
    before = outputs(out)  # what the killed run finished: every file decodes
    assert 2 <= len(before) < 8, err[-2000:]

    again = run(torchrun(3) + batch_args(src, out), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = outputs(out)
    assert sorted(after) == [f"p{i}.png" for i in range(8)] and not list(out.glob(".*.tmp"))
    assert all(after[name] == before[name] for name in before), "nothing finished is rewritten"
    rerun = [r for r in records(out) if r["run_id"] == records(out)[-1]["run_id"]]
    assert sorted(r["label"] for r in rerun) == [f"p{i}.png" for i in range(8)]  # one record per item
    assert {r["label"] for r in rerun if r["status"] == "ok"} == set(after) - set(before)
    assert max(ok_counts(out).values()) == 1, "no item was edited twice"
    assert not list(out.glob("results.rank*.jsonl"))

    alone = run([EXE, *batch_args(src, out)], tmp_path)
    assert alone.returncode == 0 and "0 done, 8 skipped, 0 failed" in alone.stderr, alone.stderr[-2000:]
    assert outputs(out) == after


@pytest.mark.slow
def test_max_restarts_finishes_in_one_command_after_a_rank_dies(tmp_path):
    src, out = photos(tmp_path / "in"), tmp_path / "out"
    agent = subprocess.Popen(torchrun(2, "--max-restarts", "1") + batch_args(src, out), cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at = kill_when(agent, out, rank=0, after=1)  # rank 0 holds the lock: the restart must get it back
    _, err = agent.communicate(timeout=240)
    assert agent.returncode == 0, err[-3000:]
    assert killed_at < 8 and sorted(outputs(out)) == [f"p{i}.png" for i in range(8)]
    assert max(ok_counts(out).values()) == 1
    last = [r for r in records(out) if r["run_id"] == records(out)[-1]["run_id"]]
    assert sorted(r["label"] for r in last) == [f"p{i}.png" for i in range(8)]
    assert not list(out.glob("results.rank*.jsonl")) and not (out / jobs.LOCK_NAME).exists()


@pytest.mark.slow
def test_two_nodes_on_one_machine_complete_a_batch(tmp_path):
    src, out, port = photos(tmp_path / "in", n=6), tmp_path / "out", free_port()
    node = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
            f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", "--no-python", EXE, *batch_args(src, out)]
    agents = [subprocess.Popen(node, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    errs = [a.communicate(timeout=300)[1] for a in agents]
    # both stderrs whole in the message: a rare failure here must be diagnosable from the CI log
    assert [a.returncode for a in agents] == [0, 0], "".join(f"\n--- agent {i} stderr ---\n{e}"
                                                             for i, e in enumerate(errs))
    assert sum("6 done, 0 skipped, 0 failed" in e for e in errs) == 1, "one summary, from rank 0's node"
    assert sorted(outputs(out)) == [f"p{i}.png" for i in range(6)] and len(records(out)) == 6


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_runs_the_ranks(tmp_path):
    """``accelerate launch --multi_gpu`` starts its ranks through torchrun's launcher; without CUDA they run on the
    CPU (gloo), which is what this machine can show of that path."""
    src, out = photos(tmp_path / "in", n=4), tmp_path / "out"
    proc = run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", EXE, *batch_args(src, out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("4 done, 0 skipped, 0 failed") == 1 and "(2 processes)" in proc.stderr
    assert sorted(outputs(out)) == [f"p{i}.png" for i in range(4)]
    assert [r["label"] for r in records(out)] == [f"p{i}.png" for i in range(4)]


@pytest.mark.slow
def test_one_bar_on_rank_0_counts_the_items_of_every_rank(tmp_path, terminal):
    src, out = photos(tmp_path / "in", n=6), tmp_path / "out"
    args = [a for a in batch_args(src, out) if a != "--quiet"]
    code, err = terminal(torchrun(2) + args, tmp_path, ENV)
    assert code == 0, err[-3000:]
    closed = re.findall(r"\| *(\d+)/6 \[[^\r\n]*\]\r?\n", err)  # a bar's last state, left on its own line
    assert closed == ["6"], ("one bar (rank 0's; the other rank draws none) that counts the 6 items of both ranks "
                             f"though rank 0 did 3: {err[-3000:]}")


# ------------------------------------------------------------------------------------- in-process pieces


def test_rank_logs_merge_by_record_id_in_order_and_only_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.rank1.jsonl").write_text(
        json.dumps({"record_id": "r1:1", "label": "b"}) + "\n" + json.dumps({"record_id": "r1:3", "label": "d"})
        + "\n" + '{"record_id": "r1:5", "lab')  # a torn last line of a killed rank
    (out / "results.rank0.jsonl").write_text(
        json.dumps({"record_id": "r1:0", "label": "a"}) + "\n"
        + json.dumps({"record_id": "r1:2", "label": "c"}) + "\n")
    with jobs.ResultsLog(out / "results.jsonl") as log:
        log.append({"record_id": "r0:0", "label": "old"})
        log.append({"record_id": "r1:2", "label": "c"})  # a merge cut short had added this one already
        assert jobs.merge_rank_logs(out, log) == 3
        assert jobs.merge_rank_logs(out, log) == 0  # nothing left to merge
    assert [r["label"] for r in records(out)] == ["old", "c", "a", "b", "d"]
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


def test_a_link_in_place_of_a_rank_log_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "secret.jsonl"
    out.mkdir()
    elsewhere.write_text(json.dumps({"record_id": "x:0"}) + "\n")
    (out / "results.rank0.jsonl").symlink_to(elsewhere)
    with jobs.ResultsLog(out / "results.jsonl") as log, pytest.raises(jobs.BatchError, match="symlink"):
        jobs.merge_rank_logs(out, log)
    assert elsewhere.read_text() == json.dumps({"record_id": "x:0"}) + "\n"


def test_one_process_counts_and_merges_leftover_rank_logs(tmp_path):
    """A one-process run finishes what a killed job of several left: its rank logs go into results.jsonl."""
    from date_edit.distributed import Dist

    d = Dist()
    assert d.add("k") == 1 and d.add("k", 2) == 3 and d.add("k", 0) == 3
    src, out = photos(tmp_path / "in", n=2), tmp_path / "out"
    out.mkdir()
    (out / "results.rank1.jsonl").write_text(json.dumps({"record_id": "old:1", "label": "p1.png"}) + "\n")
    proc = run([EXE, *batch_args(src, out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "merged 1 record(s)" in proc.stderr
    recs = records(out)
    assert recs[0]["record_id"] == "old:1" and [r["status"] for r in recs[1:]] == ["ok", "ok"]
    assert all(r["record_id"] == f"{r['run_id']}:{i}" for i, r in enumerate(recs[1:]))
    assert not (out / "results.rank1.jsonl").exists()


def test_a_launch_without_a_rendezvous_is_one_line_and_writes_nothing(tmp_path):
    """WORLD_SIZE=2 without MASTER_ADDR/MASTER_PORT (srun without the exports): exit 2, one line, no --out made."""
    src = photos(tmp_path / "src", 2)
    env = dict(ENV, WORLD_SIZE="2", RANK="0")
    done = subprocess.run([EXE, *batch_args(src, tmp_path / "out")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "MASTER_ADDR/MASTER_PORT" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def rank_env(rank: int, port: int, **extra: str) -> dict:
    """What srun plus the README's exports give a rank: no torchrun agent, rank 0 serves the store."""
    return dict(ENV, WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), **extra)


@pytest.mark.slow
def test_ranks_started_by_hand_out_of_order_meet_and_finish(tmp_path):
    """An srun-style launch (MASTER_ADDR/PORT exported, each rank its own process): rank 1 starts first and waits
    for rank 0's store; together they do every item once."""
    src, out, port = photos(tmp_path / "src", 4), tmp_path / "out", free_port()
    late = subprocess.Popen([EXE, *batch_args(src, out)], cwd=tmp_path, env=rank_env(1, port),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    main = subprocess.run([EXE, *batch_args(src, out)], cwd=tmp_path, env=rank_env(0, port), capture_output=True,
                          text=True, timeout=300)
    _, late_err = late.communicate(timeout=300)
    assert (main.returncode, late.returncode) == (0, 0), main.stderr + late_err
    assert "4 done, 0 skipped, 0 failed" in main.stderr and "(2 processes)" in main.stderr
    assert "batch:" not in late_err, "only rank 0 prints the summary"
    recs = records(out)
    assert sorted(r["label"] for r in recs) == [f"p{i}.png" for i in range(4)] and len(outputs(out)) == 4


@pytest.mark.parametrize("rank, says", [(0, "did not all meet"), (1, "nothing answers at MASTER_ADDR")])
def test_a_rank_whose_peers_never_come_stops_in_one_line(tmp_path, rank, says):
    """WORLD_SIZE=2 but only one process started: after $DATE_EDIT_JOIN_TIMEOUT seconds, exit 2 with one line (no
    C++ log, no traceback), nothing written."""
    src = photos(tmp_path / "src", 2)
    done = subprocess.run([EXE, *batch_args(src, tmp_path / "out")], cwd=tmp_path, timeout=120, capture_output=True,
                          text=True, env=rank_env(rank, free_port(), DATE_EDIT_JOIN_TIMEOUT="2"))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and says in lines[-1] and "DATE_EDIT_JOIN_TIMEOUT" in lines[-1]
    assert not [line for line in lines if "Traceback" in line or "frame #" in line or "[E" in line], done.stderr
    assert not (tmp_path / "out").exists()
