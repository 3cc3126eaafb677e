"""The launcher's view of a job (date_edit.distributed.Dist): environment, round-robin shards, clear refusals."""

import pytest

from date_edit.distributed import Dist
from date_edit.errors import ConfigError


def test_one_process_without_a_launcher(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    dist = Dist.from_env()
    assert (dist.rank, dist.world, dist.active, dist.main) == (0, 1, False, True)
    dist.init("cpu")  # nothing to join
    assert dist.gather("x") == ["x"] and dist.broadcast(3) == 3 and dist.shard([1, 2, 3]) == [1, 2, 3]


def test_launcher_environment_and_round_robin_shards(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    dist = Dist.from_env()
    assert (dist.rank, dist.world, dist.local_rank, dist.active, dist.main) == (1, 3, 1, True, False)
    todo = list(range(8))
    shards = [Dist(rank=r, world=3).shard(todo) for r in range(3)]
    assert shards[1] == dist.shard(todo) == [1, 4, 7]
    assert sorted(x for s in shards for x in s) == todo  # every item exactly once


def test_slurm_variables_are_read(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    assert (Dist.from_env().rank, Dist.from_env().world) == (2, 4)


def test_inconsistent_or_unreachable_launch_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ConfigError, match="rank 5 of 2"):
        Dist.from_env()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        Dist.from_env().init("cpu")


def test_a_group_smaller_than_the_launch_is_refused(monkeypatch):
    """WORLD_SIZE says 2 but the initialised group has 1 process (a launcher that did not start the others):
    refused in one line, naming both numbers. The store and the group are the real calls' stand-ins here."""
    import torch.distributed as td

    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(td, "TCPStore", lambda *a, **k: td.HashStore())
    monkeypatch.setattr(td, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(td, "get_world_size", lambda *a, **k: 1)
    monkeypatch.setattr(td, "is_initialized", lambda: True)
    left = []
    monkeypatch.setattr(td, "destroy_process_group", lambda *a, **k: left.append(1))
    dist = Dist.from_env()
    with pytest.raises(ConfigError, match="WORLD_SIZE is 2 but the process group has 1"):
        dist.init("cpu")
    assert left == [1], "the group is left before the error goes up (no gloo group alive at the exit)"
    dist.close()
    assert left == [1], "closing twice leaves once"


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_a_bad_join_timeout_is_named(monkeypatch, value):
    for name, v in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                    "DATE_EDIT_JOIN_TIMEOUT": value}.items():
        monkeypatch.setenv(name, v)
    with pytest.raises(ConfigError, match="DATE_EDIT_JOIN_TIMEOUT=.*seconds above 0"):
        Dist.from_env().init("cpu")


@pytest.mark.slow
def test_the_group_is_left_at_exit_even_when_close_is_never_called(tmp_path):
    """A rank that exits on an error path without :meth:`Dist.close` must not keep a gloo group alive into the
    interpreter's teardown (with its peer gone, that aborts: SIGABRT). A handler registered before the join runs
    after Dist's own (atexit is last in, first out) and reports whether the group was still up."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "rank.py"
    script.write_text(
        "import atexit, os, sys, torch.distributed as td\n"
        "def report():\n"
        "    with open(f\"rank{os.environ['RANK']}.txt\", 'w') as f:\n"
        "        f.write(f'initialized at exit: {td.is_initialized()}')\n"
        "atexit.register(report)\n"
        "from date_edit.distributed import Dist\n"
        "d = Dist.from_env()\n"
        "d.init('cpu')\n"
        "d.barrier()\n"
        "sys.exit(3)  # no close()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script)], cwd=tmp_path,
                          env=dict(env, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=180)
    # one file per rank: the two ranks share torchrun's stdout, where their lines can interleave
    reports = [(tmp_path / f"rank{r}.txt").read_text() if (tmp_path / f"rank{r}.txt").exists() else "missing"
               for r in (0, 1)]
    assert reports == ["initialized at exit: False"] * 2, (reports, proc.stderr[-3000:])
    assert "SIGABRT" not in proc.stderr


def test_job_progress_counts_every_step_and_draws_only_when_enabled(capsys):
    from date_edit.distributed import JobProgress

    shown = JobProgress(Dist(), 3, enabled=True, desc="toy")
    for _ in range(3):
        shown.step()
    shown.wait_all()
    assert shown.bar.n == 3
    shown.close()
    assert "3/3" in capsys.readouterr().err
    hidden = JobProgress(Dist(), 3, enabled=False, desc="toy")
    hidden.step()
    hidden.wait_all()
    hidden.close()
    assert hidden.bar is None and capsys.readouterr().err == ""
