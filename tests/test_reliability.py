"""Issue 13, "Reliability and security": bad inputs and options fail at once, in one line, before any work.

Real ``date-edit`` processes (offline, CPU, ``--model tiny``) where the behaviour is a process's: devices and
huge files among batch inputs, ``--size``/``--device``/``--seed`` checked where they are parsed, SIGTERM, an
``--out`` that cannot be written, and the batch lock file. Most cases fail before torch loads, so each process
takes well under a second; the SIGTERM test is the one that loads the tiny model.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from date_edit import batch as jobs
from date_edit import limits
from date_edit.imaging import ImageError, load_image, open_input

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "chelsea.png"
EXE = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
FAST = ("--model", "tiny", "--steps", 4, "-q")


def cli(*args, cwd, timeout=120):
    """Run ``date-edit ARGS``; the CompletedProcess gets ``seconds``, the wall time."""
    start = time.perf_counter()
    proc = subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV,
                          check=False)
    proc.seconds = time.perf_counter() - start
    return proc


def one_error(proc) -> str:
    """The single error line of a failed run (and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / jobs.RESULTS_NAME).read_text().splitlines()]


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.exists() else []


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk (a hole)."""
    path.touch()
    os.truncate(path, size)
    return path


# ------------------------------------------------------------------------ items 2, 3, 9: inputs and the lock


@pytest.mark.skipif(not os.path.exists("/dev/zero") or not hasattr(os, "mkfifo"), reason="needs /dev/zero, FIFOs")
def test_batch_fails_devices_pipes_and_huge_files_at_once_and_leaves_no_lock(tmp_path):
    """IN/x.png -> /dev/zero used to be read forever, and a link to a 20 GB sparse file read whole (188 s) before
    it was rejected. Now each fails in one line, from the open file's type and size, before a byte is read."""
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    (photos / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(photos / "pipe.png")
    (photos / "huge.png").symlink_to(sparse_file(tmp_path / "huge.bin", 20 * 2**30))
    proc = cli("batch", photos, "--prompt", "a dog", "--out", out, *FAST, "--no-date", cwd=tmp_path, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.seconds < 30, f"took {proc.seconds:.1f} s"
    assert "Traceback" not in proc.stderr
    by_label = {r["label"]: r for r in records(out)}
    assert {k: v["status"] for k, v in by_label.items()} == dict.fromkeys(("huge.png", "pipe.png", "zero.png"),
                                                                          "failed")
    for name in ("zero.png", "pipe.png"):
        assert "not a regular file" in by_label[name]["error"] and "\n" not in by_label[name]["error"]
    limit = limits.format_bytes(limits.max_input_bytes(limits.DEFAULT_MAX_PIXELS))
    assert "20.0 GiB" in by_label["huge.png"]["error"] and f"limit of {limit}" in by_label["huge.png"]["error"]
    assert tree(out) == [jobs.RESULTS_NAME], "no lock file, no output, no temp file after the run"
    # `edit` refuses the same file with the same shared check, before any model loads
    edit = cli(photos / "huge.png", "a dog", *FAST, "--out", tmp_path / "e.png", cwd=tmp_path)
    assert edit.returncode == 2 and "20.0 GiB" in one_error(edit) and "note: --model tiny" not in edit.stderr


def test_inputs_open_as_regular_files_with_a_size_check(tmp_path):
    big = sparse_file(tmp_path / "big.png", 2 * 2**30)
    start = time.perf_counter()
    with pytest.raises(ImageError, match="over the limit of 610 MiB"):
        jobs.sha256_file(big, max_bytes=limits.max_input_bytes(limits.DEFAULT_MAX_PIXELS))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(big, size=64, multiple=8)
    with pytest.raises(ImageError, match="not a regular file"):
        jobs.sha256_file("/dev/zero")
    with pytest.raises(ImageError, match="is a directory"):
        open_input(tmp_path, max_bytes=None)
    assert time.perf_counter() - start < 5
    # the limit follows the pixel budget: 16 bytes a pixel, never under 64 MiB
    assert limits.max_input_bytes(20_000) == 64 * 2**20
    assert limits.max_input_bytes(100_000_000) == 1_600_000_000
    noise(16, 16).save(tmp_path / "ok.png")
    with open_input(tmp_path / "ok.png", max_bytes=10_000) as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_lock_file_is_left_after_a_usage_error_inside_the_run(tmp_path):
    """A usage error found once the run holds OUT (an update step outside the run) still removes the lock."""
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    noise(64, 64).save(photos / "a.png")
    proc = cli("batch", photos, "--prompt", "a dog", "--out", out, *FAST, "--update-steps", "99", cwd=tmp_path)
    assert proc.returncode == 2 and "99" in one_error(proc), proc.stderr
    assert out.is_dir() and not (out / jobs.LOCK_NAME).exists()


# ----------------------------------------------------------------------- items 4, 5, 6: options at parse time


def test_size_device_and_seed_are_checked_where_parsed(tmp_path):
    """--size 100000 was OOM-killed after minutes; --size 7 failed inside PyTorch; --size 0 was silently the
    native size; --device potato and --seed 2**64 gave tracebacks or failed every batch item. Each is now one line
    naming the flag, exit 2, in well under 10 s, before any model loads, and nothing is written."""
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    noise(64, 64).save(photos / "a.png")
    cases = [
        (("edit", SAMPLE, "a dog", "--size", 100000), "--size", "40,000,000"),
        (("score", SAMPLE, "--prompt", "a cat", "--size", 100000), "--size", "40,000,000"),
        (("reconstruct", SAMPLE, "--size", 7), "--size", "64 px"),
        (("edit", SAMPLE, "a dog", "--size", 8), "--size", "64 px"),
        (("edit", SAMPLE, "a dog", "--size", 0), "--size", "64 px"),
        (("batch", photos, "-p", "a", "--out", out, "--size", 7000), "--size", "--max-pixels"),
        (("generate", "a cat", "--height", 8), "--height", "64 px"),
        (("edit", SAMPLE, "a dog", "--device", "potato"), "--device", "cuda:N"),
        (("score", SAMPLE, "--prompt", "a cat", "--device", "potato"), "--device", "cuda:N"),
        (("batch", photos, "-p", "a", "--out", out, "--device", "potato"), "--device", "cuda:N"),
        (("edit", SAMPLE, "a dog", "--seed", 2**64), "--seed", str(2**64 - 1)),
        (("generate", "a cat", "--seed", -1), "--seed", str(2**64 - 1)),
        (("batch", photos, "-p", "a", "--out", out, "--seed", 2**64), "--seed", str(2**64 - 1)),
    ]
    for args, flag, limit in cases:
        model = ("--scorer", "clip:tiny") if args[0] == "score" else ("--model", "tiny")
        proc = cli(*args, *model, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_error(proc)
        assert flag in line and limit in line, (args, line)
        assert proc.seconds < 10, (args, proc.seconds)
        assert "note:" not in proc.stderr, "no model was loaded"
    assert not out.exists(), "a refused batch writes nothing: no results.jsonl, no lock"
    assert tree(tmp_path) == ["in", "in/a.png"]
    # the library checks name parameters; the largest seed torch takes is accepted
    import torch

    torch.Generator().manual_seed(limits.check_seed(2**64 - 1))
    for bad, check in ((2**64, limits.check_seed), (-1, limits.check_seed), ("cuda:x", limits.check_device)):
        with pytest.raises(ValueError, match="^(seed|device) "):
            check(bad)
    assert limits.check_size(6324) == 6324 and limits.check_size(None) is None
    with pytest.raises(ValueError, match="^size 6325 is too large.*at most 6324"):
        limits.check_size(6325)


def test_manifest_rows_with_a_bad_seed_or_size_fail_alone(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")  # never read: these rows fail first
    noise(64, 64).save(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("image,prompt,seed,size\na.png,a dog,18446744073709551616,\n"
                                    "b.png,a cat,,100000\n")
    out = tmp_path / "out"
    proc = cli("batch", "--manifest", tmp_path / "m.csv", "--out", out, *FAST, "--no-date", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    errors = {r["label"].split(" (")[-1].rstrip(")"): r["error"] for r in records(out)}
    assert "out of range" in errors["a.png"] and "size 100000 is too large" in errors["b.png"], errors
    assert "note:" not in proc.stderr and not (out / jobs.LOCK_NAME).exists()


def test_processed_sides_below_the_models_minimum_are_refused(tiny_backbone, tmp_path):
    """tiny's deepest group norms hold one channel each, so it needs 32 px a side; a long image at --size 64
    would have a 16 px side and fail inside PyTorch. load_image(min_side=...) refuses it in one line."""
    assert tiny_backbone.min_side == 32 and tiny_backbone.size_multiple == 16
    noise(400, 100).save(tmp_path / "long.png")
    with pytest.raises(ImageError, match="64x16 has a side under 32 px"):
        load_image(tmp_path / "long.png", size=64, multiple=16, min_side=tiny_backbone.min_side)
    assert load_image(tmp_path / "long.png", size=128, multiple=16, min_side=32).processed_size == (128, 32)


# --------------------------------------------------------------------------------------- item 7: SIGTERM


def test_sigterm_mid_edit_exits_130_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out" / "x.png"
    proc = subprocess.Popen([EXE, "edit", str(SAMPLE), "a dog", "--model", "tiny", "--steps", "1000", "--skip", "0",
                             "--no-date", "-q", "--size", "64", "--out", str(out)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        seen = []
        for line in proc.stderr:  # the model is loaded and the image prepared: the edit is running
            seen.append(line)
            if "processed size" in line:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, "".join(seen) + rest
    assert "Traceback" not in rest and [line for line in rest.splitlines() if line] == [
        "date-edit: interrupted; nothing was written"]
    assert tree(tmp_path) == [], "no output, no temp file, not even the output folder"


def test_a_signal_during_the_write_waits_until_the_files_are_whole(tmp_path, monkeypatch):
    """In-process: SIGTERM while the PNG is being saved is held; the PNG and its JSON are complete, then exit 130."""
    import torch

    from date_edit import imaging
    from date_edit.pipeline import Result
    from date_edit_cli import common, running

    real_save = imaging.save_png

    def save_and_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(imaging, "save_png", save_and_signal)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(running, "SIGNALS", running.Signals())
    running.SIGNALS.install()
    result = Result(images=torch.rand(1, 3, 16, 16), latents=torch.zeros(1, 4, 2, 2), prompts=["p"], update_steps=[],
                    trace=None, timings={}, peak_memory_mb=0.0, config={})
    try:
        with pytest.raises(SystemExit) as exit_info:
            common.write_outputs(result, tmp_path / "x.png", {"command": "edit"}, False, [], True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert exit_info.value.code == 130
    assert Image.open(tmp_path / "x.png").size == (16, 16)
    assert json.loads((tmp_path / "x.png.json").read_text())["output"] == str(tmp_path / "x.png")
    assert tree(tmp_path) == ["x.png", "x.png.json"]


# ------------------------------------------------------------------------------- item 8: --out checked first


def test_out_that_cannot_be_written_is_refused_before_the_work(tmp_path):
    """--out /proc/x.png was "No such file or directory", after the whole edit. Now a correct line, exit 2, before
    the model loads; and a refused edit creates no output folder."""
    cases = [(tmp_path / "file.txt" / "x.png", "is not a folder")]
    (tmp_path / "file.txt").write_text("a file")
    if os.path.isdir("/proc/self"):
        cases.append((Path("/proc/x.png"), "/proc does not take new files"))
    (tmp_path / "there.png").write_bytes(b"keep")
    cases.append((tmp_path / "there.png", "--overwrite"))
    for target, needle in cases:
        proc = cli(SAMPLE, "a dog", *FAST, "--out", target, cwd=tmp_path)
        assert proc.returncode == 2, (target, proc.stderr)
        assert needle in one_error(proc), (target, proc.stderr)
        assert "note: --model tiny" not in proc.stderr and proc.seconds < 10
    assert (tmp_path / "there.png").read_bytes() == b"keep"
    missing = cli(tmp_path / "nope.png", "a dog", *FAST, "--out", tmp_path / "new" / "x.png", cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in one_error(missing)
    assert not (tmp_path / "new").exists(), "the output folder is created only when there is an output"
