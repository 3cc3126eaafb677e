"""The ``date-edit`` command as a user runs it: real processes, real files, offline, CPU."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "chelsea.png"
EXE = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"


def run(*args, cwd, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def photo(tmp_path):
    dst = tmp_path / "photo.png"
    shutil.copy(SAMPLE, dst)
    return dst


def test_help_is_fast_and_lists_every_command():
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for word in ("edit", "generate", "reconstruct"):
        assert word in out.stdout
    # Fast means: --help imports none of the heavy libraries (they take seconds). Asserted on the imports, not
    # on a wall-clock time that a loaded machine can break.
    probe = ("import sys; from click.testing import CliRunner; from date_edit_cli.main import main; "
             "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
             "print(' '.join(m for m in ('torch', 'diffusers', 'transformers', 'open_clip', 'numpy') "
             "if m in sys.modules))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert heavy.returncode == 0, heavy.stderr
    assert heavy.stdout.strip() == "", f"--help imports {heavy.stdout.strip()}"
    edit_help = subprocess.run([EXE, "edit", "--help"], capture_output=True, text=True, timeout=60).stdout
    for option in ("--rho", "--update-steps", "--update-mode", "--scorer", "--skip", "--cfg-source", "--cfg-target",
                   "--no-date", "--dtype", "--device", "--overwrite", "--json", "--size", "--resize", "--ablation",
                   "--compile", "--compile-mode", "--date-targets", "--date-norm", "--rho-relative", "--edit-method"):
        assert option in edit_help


@pytest.mark.parametrize("model,skip", [("tiny", "0"), ("tiny", "8"), ("tiny-sdxl", "0"), ("tiny-sdxl", "8"),
                                        ("tiny-sd3", "0"), ("tiny-sd3", "8"), ("tiny-flux", "0"), ("tiny-flux", "8")])
def test_reconstruct_is_exact(photo, tmp_path, model, skip):
    out = run("reconstruct", photo, "--model", model, "--steps", 20, "--skip", skip, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["latent_max_abs_error"] <= 1e-4
    assert record["image_psnr_db"] > 60
    assert "processed size" in out.stderr


def test_default_command_is_edit_and_rho_zero_equals_no_date(photo, tmp_path):
    before = sha(photo)
    a = run(photo, "a dog", "--model", "tiny", "--steps", 10, "--rho", 0, "--out", tmp_path / "a.png", "--json",
            cwd=tmp_path)
    b = run("edit", photo, "a dog", "--model", "tiny", "--steps", 10, "--no-date", "--out", tmp_path / "b.png",
            cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    from PIL import Image
    import numpy as np

    ia, ib = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert np.array_equal(ia, ib)
    assert sha(photo) == before
    meta = json.loads(Image.open(tmp_path / "a.png").text["date-edit"])
    assert meta["config"]["steps"] == 10 and meta["rho"] == 0.0
    assert (tmp_path / "a.png.json").is_file()


def test_date_norms_restart_drift_and_long_prompt(photo, tmp_path):
    out = run(photo, "a dog", "--model", "tiny", "--steps", 10, "--rho", 0.5, "--update-steps", "0,3,6", "--json",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["update_steps"] == [0, 3, 6]
    assert all(abs(n - 0.5) <= 1e-3 for n in rec["embedding_update_norms"])
    for key in ("command", "output", "model", "seed", "steps", "skip", "rho", "embedding_drift", "scores",
                "timings", "peak_memory_mb"):
        assert key in rec
    assert set(rec["timings"]) >= {"total_s", "inversion_s", "sampling_s", "date_s"}
    assert Path(tmp_path / rec["output"]).is_file()
    long_prompt = "a very detailed photograph of a cat " * 15
    out = run(photo, long_prompt, "--model", "tiny", "--steps", 10, "--update-steps", "0,3,6",
              "--update-mode", "restart", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "truncated" in out.stderr
    assert json.loads(out.stdout)["embedding_drift"] <= 0.5 + 1e-3


def test_generate(tmp_path):
    out = run("generate", "a red circle", "--model", "tiny", "--steps", 6, "--update-steps", "10%", "--json",
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["update_steps"] == [0] and rec["seed"] == 6
    assert (tmp_path / rec["output"]).is_file()


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return {
        "missing": ([tmp_path / "nope.png", "a dog"], "no such file"),
        "text": ([text, "a dog"], "notes.png"),
        "empty": ([empty, "a dog"], "empty.png"),
        "unwritable": ([SAMPLE, "a dog", "--out", locked / "sub" / "x.png"], "locked"),
        "model": ([SAMPLE, "a dog", "--model", "nobody/no-such-model"], "no-such-model"),
        "steps": ([SAMPLE, "a dog", "--steps", 10, "--update-steps", "0,999"], "999"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "empty", "unwritable", "model", "steps"])
def test_bad_input_is_one_line_and_nonzero(tmp_path, case):
    if case == "unwritable" and os.geteuid() == 0:
        locked_parent = tmp_path / "ro"
        # root ignores permission bits: make the parent a file so the folder cannot be created
        locked_parent.write_text("a file, not a folder")
        args, needle = [SAMPLE, "a dog", "--out", locked_parent / "x.png"], "ro"
    else:
        args, needle = _bad_inputs(tmp_path)[case]
    before = set(p for p in tmp_path.rglob("*"))
    out = run(*args, "--model" if case != "model" else "--quiet", *(["tiny"] if case != "model" else []),
              cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.strip().splitlines() if line]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and needle in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    after = set(p for p in tmp_path.rglob("*"))
    assert not [p for p in after - before if p.suffix in (".png", ".json")], "no output file on failure"


def test_existing_output_is_not_overwritten(photo, tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"keep me")
    out = run(photo, "a dog", "--model", "tiny", "--steps", 4, "--out", target, cwd=tmp_path)
    assert out.returncode == 2 and "--overwrite" in out.stderr
    assert target.read_bytes() == b"keep me"
    out = run(photo, "a dog", "--model", "tiny", "--steps", 4, "--out", photo, "--overwrite", cwd=tmp_path)
    assert out.returncode == 2 and "input" in out.stderr


def test_scorers_and_score_commands(tmp_path):
    listing = subprocess.run([EXE, "scorers"], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert listing.returncode == 0, listing.stderr
    for name in ("clip", "imagereward", "pickscore", "aesthetic", "min-concept"):
        assert name in listing.stdout
    for spec in ("clip:tiny", "imagereward:tiny", "pickscore:tiny", "aesthetic:tiny", "clip:openclip-tiny"):
        out = run("score", SAMPLE, "--prompt", "a cat", "--scorer", spec, "--json", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        record = json.loads(out.stdout)
        score = record["results"][0]["score"]
        assert isinstance(score, float) and score == score and abs(score) != float("inf"), record
    bad = run("score", SAMPLE, "--prompt", "a cat", "--scorer", "nonsense", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown scorer" in bad.stderr and "Traceback" not in bad.stderr


def test_non_differentiable_objective_and_two_scorer_objective(photo, tmp_path):
    out = run(photo, "a dog", "--model", "tiny", "--steps", 10, "--update-steps", "0,5", "--scorer",
              "clip:tiny=1,imagereward:tiny=0.5", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    assert rec["update_steps"] == [0, 5]
    assert all(abs(n - 0.5) <= 1e-3 for n in rec["embedding_update_norms"])
    assert set(rec["scores"]) >= {"clip:tiny", "imagereward:tiny"}


def test_toy_recolouring_edit_keeps_the_object_in_place(tmp_path):
    """Issue 3's editing line, as a user types it: the colour changes and the object keeps its place and size."""
    import numpy as np
    from PIL import Image

    from date_edit.toy.judge import box_iou, evaluate

    sample = ROOT / "samples" / "toy" / "red_circle.png"
    before = sha(sample)
    out = run(sample, "a blue circle", "--model", "toy", "--out", tmp_path / "blue.png", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # stderr is not a terminal here: only the command's own lines, no library progress bars
    assert "Loading weights" not in out.stderr and all(line.startswith("date-edit: ")
                                                       for line in out.stderr.splitlines()), out.stderr
    assert sha(sample) == before
    source = evaluate(np.asarray(Image.open(sample).convert("RGB")), "a red circle")["objects"][0].box
    verdict = evaluate(np.asarray(Image.open(tmp_path / "blue.png").convert("RGB")), "a blue circle")
    assert verdict["correct"], verdict
    assert box_iou(source, verdict["objects"][0].box) >= 0.5
