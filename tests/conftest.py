"""Shared fixtures: offline hub, tiny random-weight backbone and scorer built once per session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs two workers) each worker, and every process it starts, gets its share of the
# cores, so the workers never fight over them (the whole suite on a 2-core machine: 8.7 min with one thread each,
# 12.8 min with two each); a plain `pytest` run uses every core.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, (os.cpu_count() or 2) // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def tiny_backbone():
    """The built-in tiny SD backbone (random weights, CPU, fp32)."""
    from date_edit.backbones import load_backbone

    return load_backbone("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_scorer():
    """``clip:tiny``: random-weight CLIP with the real tokenizer."""
    from date_edit.scorers import build_scorer

    return build_scorer("clip:tiny")


@pytest.fixture(scope="module")
def toy():
    """The shipped toy-world backbone (CPU, fp32), loaded once per module."""
    from date_edit.backbones import load_backbone

    return load_backbone("toy", device="cpu")


@pytest.fixture
def app(toy, tmp_path):
    """The web app's handlers (``date_edit_cli.ui_app.App``) on the toy model, writing under ``tmp_path``."""
    from date_edit_cli.ui_app import App

    return App(toy, "toy", out_dir=str(tmp_path / "out"))


@pytest.fixture(scope="session")
def sd_schedule():
    """The SD 1.x noise schedule."""
    from date_edit.backbones import SD_SCHEDULER_CONFIG
    from date_edit.schedule import NoiseSchedule

    return NoiseSchedule.from_config(SD_SCHEDULER_CONFIG)


def run_on_a_terminal(cmd: list, cwd, env: dict, timeout: float = 300) -> tuple:
    """Run ``cmd`` with stderr on a pseudo-terminal of 100 columns (so progress bars draw); (exit code, stderr)."""
    import fcntl
    import pty
    import select
    import struct
    import subprocess
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def terminal():
    """:func:`run_on_a_terminal`: run a command with stderr on a pseudo-terminal, to see its progress bars."""
    return run_on_a_terminal


@pytest.fixture(scope="session")
def checkout_env(tmp_path_factory):
    """An environment whose ``python`` imports this checkout's ``date_edit`` and ``date_edit_cli`` (``cli/``), not
    those of another checkout installed in editable mode, with this process's thread count (CPU float sums then
    match bit for bit between a subprocess and this one)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    shim = tmp_path_factory.mktemp("checkout")
    (shim / "date_edit").symlink_to(root / "date_edit")
    (shim / "date_edit_cli").symlink_to(root / "cli")
    path = os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS=str(torch.get_num_threads()))
