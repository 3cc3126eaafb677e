"""``date-edit batch``: folder and manifest jobs, resume, crash safety, one bad item never stops the rest.

The acceptance tests run the real command in subprocesses (offline, CPU, ``--model tiny``, 4 steps, 64 px).
The runner's failure paths (OOM, NaN, exceptions, signals) run in-process against a fake backbone and an
injected edit function, so they take milliseconds.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from date_edit import batch as jobs
from date_edit.pipeline import EditConfig, Result

ROOT = Path(__file__).resolve().parents[1]
EXE = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"
FAST = ("--model", "tiny", "--steps", 4, "--size", 64)


def batch_command() -> list[str]:
    return [EXE, "batch"]


def run_cli(*args, cwd, timeout=240):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([*batch_command(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]  # every line parses


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def make_mixed_folder(root: Path) -> dict[str, Path]:
    """6 good photos (sizes, EXIF rotation, RGBA, greyscale, CMYK, nested) and 6 bad files."""
    (root / "a" / "b").mkdir(parents=True)
    noise(96, 64, 1).save(root / "a" / "wide.png")
    noise(64, 96, 2).save(root / "a" / "b" / "tall.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    noise(80, 48, 3).save(root / "rotated.jpg", exif=exif)
    Image.new("RGBA", (72, 72), (255, 0, 0, 100)).save(root / "rgba.png")
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64), "L").save(root / "grey.png")
    noise(100, 100, 4).convert("CMYK").save(root / "cmyk.jpg")
    (root / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    noise(64, 64, 5).save(buf, format="JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "notes.png").write_text("not an image at all")
    (root / "folder.jpg").mkdir()
    Image.new("RGB", (1, 1)).save(root / "dot.png")
    noise(300, 300, 6).save(root / "huge.png")  # 90,000 px, over --max-pixels 20000
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


GOOD = {"a/wide.png", "a/b/tall.png", "rotated.png", "rgba.png", "grey.png", "cmyk.png"}
BAD = {"empty.png", "truncated.jpg", "notes.png", "folder.jpg", "dot.png", "huge.png"}


# ------------------------------------------------------------------------------------ acceptance (real CLI)


def test_folder_job_records_every_item_and_rerun_skips_done_items(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    sources = make_mixed_folder(photos)
    before = {k: sha(p) for k, p in sources.items()}
    args = (photos, "--prompt", "a watercolor painting", "--out", out, *FAST, "--max-pixels", 20000)

    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 3, first.stderr
    recs = records(out)
    assert len(recs) == 12
    ok = {Path(r["output"]).relative_to(out).as_posix() for r in recs if r["status"] == "ok"}
    assert ok == GOOD
    failed = {r["label"]: r["error"] for r in recs if r["status"] == "failed"}
    assert set(failed) == BAD
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert "empty" in failed["empty.png"] and "directory" in failed["folder.jpg"]
    assert "too small" in failed["dot.png"] and "over the limit" in failed["huge.png"]
    for r in recs:
        if r["status"] == "ok":
            assert r["input_sha256"] == before[Path(r["input"]).relative_to(photos).as_posix()]
            for key in ("command", "model", "prompt", "seed", "steps", "skip", "update_steps", "rho", "scores",
                        "timings", "config", "config_hash", "options_hash"):
                assert key in r
    with Image.open(out / "rotated.png") as im:
        assert im.height > im.width, "EXIF orientation applied before editing"
        assert json.loads(im.text["date-edit"])["status"] == "ok"
    assert "batch: 6 done, 0 skipped, 6 failed" in first.stderr and "images/min" in first.stderr
    assert "Traceback" not in first.stderr

    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 3, second.stderr
    rerun = records(out)[12:]
    assert len(rerun) == 12 and {r["status"] for r in rerun} <= {"skipped", "failed"}
    assert sum(r["status"] == "skipped" for r in rerun) == 6
    assert "batch: 0 done, 6 skipped, 6 failed" in second.stderr
    # A rerun with nothing to do loads no model (asserted in-process in test_resume_redoes_only_what_changed);
    # no wall-clock ratio here, which a loaded machine could break.
    assert {k: sha(p) for k, p in sources.items()} == before


def test_sigkill_mid_run_then_rerun_completes_cleanly(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    (photos / "sub").mkdir(parents=True)
    for i in range(5):
        noise(64 + 16 * (i % 2), 64, 10 + i).save(photos / ("sub" if i % 2 else ".") / f"p{i}.png")
    before = {p: sha(p) for p in photos.rglob("*.png")}
    args = (photos, "--prompt", "a dog", "--out", out, *FAST, "--no-date", "--quiet")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([*batch_command(), *map(str, args)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            results = out / "results.jsonl"
            if results.exists() and '"status": "ok"' in results.read_text():
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "killed mid-way, not after finishing"
    done_before = sum(r["status"] == "ok" for r in records(out))
    assert 1 <= done_before < 5
    # what a kill during a write leaves: a torn results line and a save_png temp file
    with open(out / "results.jsonl", "ab") as f:
        f.write(b'{"status": "ok", "inp')
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / ".p1.png.0123abcd.tmp").write_bytes(b"\x89PNG half")

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "removed 1 temporary" in again.stderr and "dropped 1" in again.stderr
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    recs = records(out)
    this_run = [r for r in recs if r["run_id"] == recs[-1]["run_id"]]
    assert len(this_run) == 5 and {r["status"] for r in this_run} == {"ok", "skipped"}
    assert sum(r["status"] == "skipped" for r in this_run) == done_before
    outputs = sorted(out.rglob("p*.png"))
    assert len(outputs) == 5
    for p in outputs:
        with Image.open(p) as im:
            im.load()
    assert {p: sha(p) for p in photos.rglob("*.png")} == before


def test_usage_errors_exit_2_in_one_line(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    noise(64, 64).save(photos / "x.png")
    cases = {
        "out is input": ((photos, "--prompt", "a", "--out", photos), "input folder itself"),
        "out contains input": ((photos, "--prompt", "a", "--out", tmp_path), "contains the input folder"),
        "no prompt": ((photos, "--out", tmp_path / "o"), "--prompt is required"),
        "both": ((photos, "--manifest", ROOT / "samples" / "edits.csv", "--out", tmp_path / "o"), "not both"),
        "no match": ((photos, "--prompt", "a", "--glob", "*.tif", "--out", tmp_path / "o"), "nothing to do"),
        "missing folder": ((tmp_path / "nope", "--prompt", "a", "--out", tmp_path / "o"), "no such folder"),
    }
    for name, (args, needle) in cases.items():
        res = run_cli(*args, cwd=tmp_path, timeout=60)
        assert res.returncode == 2, (name, res.stderr)
        errors = [line for line in res.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and needle in errors[0], (name, res.stderr)
    assert sha(photos / "x.png") == sha(photos / "x.png") and len(list(photos.iterdir())) == 1
    help_text = run_cli("--help", cwd=tmp_path, timeout=60).stdout
    for word in ("Exit codes", "0 every item", "3 some items failed", "2 usage", "130 interrupted", "--manifest",
                 "--glob", "--force", "--batch-size", "--max-pixels", "--rho", "--scorer", "--size"):
        assert word in help_text, word


def test_batch_offers_every_edit_option_with_the_same_default():
    import click
    from date_edit_cli.batch_cmd import batch
    from date_edit_cli.main import edit

    mine = {p.name: p for p in batch.params if isinstance(p, click.Option)}
    for p in edit.params:
        if isinstance(p, click.Option) and p.name not in ("out", "overwrite", "as_json", "quiet", "seed"):
            assert p.name in mine, p.name
            assert mine[p.name].default == p.default, p.name
            assert mine[p.name].opts == p.opts, p.name


# ------------------------------------------------------------------------------------------------ planning


def test_plan_folder_mirrors_tree_names_collisions_and_excludes_out_inside_input(tmp_path):
    photos = tmp_path / "photos"
    (photos / "x").mkdir(parents=True)
    (photos / ".hidden").mkdir()
    for name in ("x/a.jpg", "x/a.png", "b.JPG", ".secret.png", ".hidden/c.png", "notes.txt"):
        (photos / name).write_bytes(b"")
    out = photos / "edited"  # inside the input folder: pruned from the walk
    (out / "x").mkdir(parents=True)
    (out / "x" / "a.png").write_bytes(b"an earlier output")
    items = jobs.plan_folder(photos, out, prompt="p")
    assert [i.label for i in items] == ["b.JPG", "x/a.jpg", "x/a.png"]
    assert [i.output.relative_to(out).as_posix() for i in items] == ["b.png", "x/a.jpg.png", "x/a.png"]
    assert all(i.options == {"prompt": "p"} and i.error is None for i in items)
    assert [i.label for i in jobs.plan_folder(photos, out, prompt="p", globs=["x/*"])] == ["x/a.jpg", "x/a.png"]
    with pytest.raises(jobs.BatchError, match="itself"):
        jobs.plan_folder(photos, photos / "x" / "..", prompt="p")
    with pytest.raises(jobs.BatchError, match="contains"):
        jobs.plan_folder(photos / "x", photos, prompt="p")


def test_plan_manifest_csv_jsonl_overrides_and_bad_rows(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("cat.png", "dog.jpg"):
        noise(32, 32).save(tmp_path / "img" / name)
    csv_path = tmp_path / "edits.csv"
    csv_path.write_text(
        "image,prompt,Source-Prompt,seed,steps,rho,no_date,output\n"
        "img/cat.png,a tiger,a cat,3,8,0.7,,\n"
        "img/cat.png,a lion,a cat,,,,yes,\n"
        "img/dog.jpg,,,,,,,custom/dog.png\n"
        "img/dog.jpg,a wolf,,x,,,,\n"
        "img/dog.jpg,a fox,,,,,,../escape.png\n"
    )
    out = tmp_path / "out"
    items = jobs.plan_manifest(csv_path, out, prompt="default prompt")
    assert [i.row for i in items] == [1, 2, 3, 4, 5]
    a, b, c, d, e = items
    assert a.options == {"prompt": "a tiger", "source_prompt": "a cat", "seed": 3, "steps": 8, "rho": 0.7}
    assert b.options["no_date"] is True and c.options == {"prompt": "default prompt"}
    assert a.output == out / "img" / "cat_a-tiger_s3.png" and b.output == out / "img" / "cat_a-lion_s0.png"
    assert c.output == out / "custom" / "dog.png"
    assert d.error and "seed 'x'" in d.error and d.output is None
    assert e.error and "inside the output folder" in e.error
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("image,prompt,colour\nimg/cat.png,a,red\n")
    with pytest.raises(jobs.BatchError, match="colour"):
        jobs.plan_manifest(bad_header, out)
    jsonl = tmp_path / "edits.jsonl"
    jsonl.write_text('{"image": "img/cat.png", "prompt": "a", "cfg_target": 7.5}\n\n# a comment\nnot json\n'
                     '{"image": "img/dog.jpg", "prompt": "b", "colour": 1}\n[1]\n')
    items = jobs.plan_manifest(jsonl, out)
    assert items[0].options == {"prompt": "a", "cfg_target": 7.5} and items[0].output == out / "img" / "cat.png"
    assert [bool(i.error) for i in items] == [False, True, True, True]
    assert "colour" in items[2].error


def test_sample_manifest_plans_onto_existing_samples(tmp_path):
    items = jobs.plan_manifest(ROOT / "samples" / "edits.csv", tmp_path / "out")
    assert len(items) >= 3 and not [i.error for i in items if i.error]
    assert all(i.source.is_file() for i in items)
    assert len({i.output for i in items}) == len(items)


def test_results_repair_and_temp_cleanup(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n{"c": 3, "torn')
    assert jobs.repair_results(results) == 2
    assert results.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert jobs.repair_results(results) == 0
    (tmp_path / "d").mkdir()
    for name in (".x.png.0123abcd.tmp", "d/.y.png.deadbeef.tmp", ".results.jsonl.00000000.tmp"):
        (tmp_path / name).write_bytes(b"")
    keep = [tmp_path / "keep.tmp", tmp_path / ".x.png.tmp", tmp_path / "d" / "z.png"]
    for p in keep:
        p.write_bytes(b"")
    assert jobs.clean_temp_files(tmp_path) == 3
    assert all(p.exists() for p in keep)
    with jobs.ResultsLog(results) as log:
        log.append({"nan": float("nan"), "p": Path("x")})
    assert json.loads(results.read_text().splitlines()[-1]) == {"nan": None, "p": "x"}


# ------------------------------------------------------------------------------- the per-item decision


def test_decide_is_the_whole_resume_rule():
    """The pure decision: up to date only when the output is ours, ok, of this input content, and its options (or
    resolved settings) match; a foreign file fails unless forced; a link out of --out always fails."""
    ok = {"status": "ok", "input_sha256": "in", "options_hash": "opts", "config_hash": "cfg"}
    facts = dict(input_hash="in", options_hash="opts", state="ours", previous=ok, force=False)
    assert jobs.decide(**facts).action == "skip"
    assert jobs.decide(**{**facts, "force": True}).action == "resolve"
    assert jobs.decide(**{**facts, "force": True}, config_hash="cfg") == jobs.Decision("edit", overwrite=True)
    changed = {**facts, "options_hash": "other"}
    assert jobs.decide(**changed).action == "resolve"  # the options differ as given: resolve and compare settings
    assert jobs.decide(**changed, config_hash="cfg").action == "skip"  # ... which resolve to the same settings
    assert jobs.decide(**changed, config_hash="new") == jobs.Decision("edit", overwrite=True)
    assert jobs.decide(**{**facts, "input_hash": "edited"}, config_hash="cfg").action == "edit"
    assert jobs.decide(**{**facts, "previous": {**ok, "status": "failed"}}, config_hash="cfg").action == "edit"
    assert jobs.decide(**{**facts, "state": "absent", "previous": None}, config_hash="c") == jobs.Decision("edit")
    foreign = {**facts, "state": "foreign", "previous": None, "output": "out/a.png"}
    assert jobs.decide(**foreign).action == "fail" and "--force" in jobs.decide(**foreign).reason
    assert jobs.decide(**{**foreign, "force": True}, config_hash="c") == jobs.Decision("edit", overwrite=True)
    outside = jobs.decide(**facts, inside=False, output="out/x/a.png", out_dir="out")
    assert outside.action == "fail" and "symlink" in outside.reason


# ------------------------------------------------------------------------- runner, against a fake backbone


class FakeBackbone:
    """What the runner touches of a Backbone: sizes, device, dtype, and three modules to cast."""

    name, native_size, size_multiple, random_weights = "fake", 64, 16, False

    def __init__(self, dtype=torch.float32):
        self.unet, self.vae, self.text_encoder = (torch.nn.Linear(2, 2).to(dtype) for _ in range(3))
        self.dtype, self.device = dtype, torch.device("cpu")

    def describe(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype)}

    def modules(self) -> list:
        return [self.unet, self.vae, self.text_encoder]


BASE = {"model": "fake", "steps": 4, "skip": "36%", "seed": 0, "no_date": True, "size": None, "resize": "fit",
        "source_prompt": ""}


def resolve(options):
    # the plain edit (no structure control): items with different prompts share a batch
    config = EditConfig(steps=options["steps"], skip=options["skip"], seed=options["seed"], date=None, mask=None,
                        p2p=None)
    return jobs.ItemSettings(prompt=options["prompt"], source_prompt=options.get("source_prompt") or "",
                             config=config, model=options["model"], model_config=None, dtype="fp32",
                             size=options["size"], resize=options["resize"], scorer=None, options=options)


class FakeEdit:
    """An identity edit that logs its calls; ``hook(prompts, backbone)`` may raise or return items to poison."""

    def __init__(self, hook=None):
        self.calls, self.hook = [], hook

    def __call__(self, backbone, pixels, prompts, *, source_prompt, config, scorer, seeds):
        self.calls.append((list(prompts), list(seeds), backbone.dtype))
        poison = self.hook(list(prompts), backbone) if self.hook else None
        b, _, h, w = pixels.shape
        latents = torch.zeros(b, 4, h // 8, w // 8)
        for i in poison or ():
            latents[i] = float("nan")
        return Result(images=pixels.clone(), latents=latents, prompts=list(prompts), update_steps=[], trace=None,
                      timings={"total_s": 0.0}, peak_memory_mb=0.0, config=config.to_dict())


def photo_items(folder: Path, out: Path, n: int = 3, prompt: str = "p") -> list[jobs.Item]:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        if not (folder / f"p{i}.png").exists():
            noise(64, 48, i).save(folder / f"p{i}.png")
    return jobs.plan_folder(folder, out, prompt=prompt)


def run(items, out, edit=None, backbone=None, **kw):
    messages = []
    loads = []

    def load_model(needs_date):
        loads.append(needs_date)
        return backbone or FakeBackbone(), None

    kw.setdefault("base_options", BASE)
    summary = jobs.run_batch(items, out, resolve=resolve, load_model=load_model,
                             edit_fn=edit or FakeEdit(), say=messages.append, **kw)
    summary.messages, summary.loads = messages, loads
    return summary


def test_resume_redoes_only_what_changed(tmp_path):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out)
    edit = FakeEdit()
    first = run(items, out, edit)
    assert (first.ok, first.skipped, first.failed, first.exit_code) == (3, 0, 0, 0)
    again = run(items, out, FakeEdit())
    assert (again.ok, again.skipped) == (0, 3) and again.loads == [], "nothing to do loads no model"
    # the same resolved settings spelled differently: the config hash says up to date
    same = run(items, out, FakeEdit(), base_options={**BASE, "skip": "1"})
    assert (same.ok, same.skipped) == (0, 3)
    # one input's content changes, one item's seed changes: exactly those two are redone
    noise(64, 48, 99).save(tmp_path / "in" / "p0.png")
    items[2] = jobs.Item(2, items[2].source, items[2].output, items[2].label, {"prompt": "p", "seed": 5})
    edit = FakeEdit()
    changed = run(items, out, edit)
    assert (changed.ok, changed.skipped) == (2, 1)
    assert sorted(seed for _, seeds, _ in edit.calls for seed in seeds) == [0, 5]
    forced = run(items, out, FakeEdit(), force=True)
    assert forced.ok == 3
    recs = records(out)
    assert [r["status"] for r in recs[-3:]] == ["ok"] * 3 and len(recs) == 3 * 5


def test_foreign_file_at_output_path_is_kept_unless_forced(tmp_path):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=1)
    out.mkdir()
    items[0].output.write_bytes(b"someone else's file")
    kept = run(items, out)
    assert kept.failed == 1 and "--force" in records(out)[-1]["error"]
    assert items[0].output.read_bytes() == b"someone else's file"
    assert run(items, out, force=True).ok == 1
    assert jobs.output_state(items[0].output)[0] == "ours"


def test_one_exception_fails_one_item_and_batches_keep_per_item_seeds(tmp_path):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=4)
    items = [jobs.Item(i.index, i.source, i.output, i.label, {"prompt": f"p{i.index}", "seed": 10 + i.index})
             for i in items]

    def hook(prompts, backbone):
        if "p2" in prompts:
            raise RuntimeError("boom\nsecond line")

    edit = FakeEdit(hook)
    summary = run(items, out, edit, batch_size=2)
    assert (summary.ok, summary.failed, summary.exit_code) == (3, 1, 3)
    failed = [r for r in records(out) if r["status"] == "failed"]
    assert failed[0]["label"] == "p2.png" and failed[0]["error"] == "RuntimeError: boom"
    assert edit.calls[0][:2] == (["p0", "p1"], [10, 11])  # one batch, each item its own seed
    assert (["p2", "p3"], [12, 13]) in [c[:2] for c in edit.calls]  # the failed batch, then one by one
    assert (["p3"], [13]) in [c[:2] for c in edit.calls]
    assert {r["batch_size"] for r in records(out) if r["status"] == "ok"} == {1, 2}


def test_out_of_memory_retries_at_a_smaller_batch_then_records(tmp_path):
    class OutOfMemoryError(RuntimeError):
        pass

    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=4)
    items = [jobs.Item(i.index, i.source, i.output, i.label, {"prompt": f"p{i.index}"}) for i in items]

    def hook(prompts, backbone):
        if len(prompts) > 1 or prompts == ["p3"]:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    edit = FakeEdit(hook)
    summary = run(items, out, edit, batch_size=4)
    assert (summary.ok, summary.failed) == (3, 1)
    assert [c[0] for c in edit.calls] == [["p0", "p1", "p2", "p3"], ["p0"], ["p1"], ["p2"], ["p3"]]
    error = next(r for r in records(out) if r["status"] == "failed")["error"]
    assert "out of memory" in error and "\n" not in error
    edit = FakeEdit(hook)  # already alone: one retry at batch 1, then recorded
    summary = run(items, out, edit, batch_size=1)
    assert (summary.skipped, summary.failed) == (3, 1) and [c[0] for c in edit.calls] == [["p3"], ["p3"]]


def test_nan_output_is_retried_in_fp32_and_recorded_if_it_stays(tmp_path):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=2)
    items = [jobs.Item(i.index, i.source, i.output, i.label, {"prompt": f"p{i.index}"}) for i in items]
    backbone = FakeBackbone(torch.bfloat16)

    def half_overflows(prompts, bb):
        return [i for i, p in enumerate(prompts) if p == "p1" and bb.dtype != torch.float32]

    edit = FakeEdit(half_overflows)
    summary = run(items, out, edit, backbone=backbone, batch_size=2)
    assert (summary.ok, summary.failed) == (2, 0)
    assert edit.calls[-1] == (["p1"], [0], torch.float32)
    assert backbone.dtype == torch.bfloat16 and backbone.unet.weight.dtype == torch.bfloat16, "cast back"
    assert [r["retried_fp32"] for r in records(out)] == [False, True]

    out2 = tmp_path / "out2"
    always = FakeEdit(lambda prompts, bb: [0] if prompts == ["p0"] else [])
    summary = run(jobs.plan_folder(tmp_path / "in", out2, prompt="p0"), out2, always)
    assert summary.failed == 2 and "NaN" in records(out2)[0]["error"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_abandons_the_current_item_and_a_rerun_finishes(tmp_path, sig):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=4)
    items = [jobs.Item(i.index, i.source, i.output, i.label, {"prompt": f"p{i.index}"}) for i in items]

    def interrupt(prompts, backbone):
        if prompts == ["p2"]:
            os.kill(os.getpid(), sig)

    previous = signal.getsignal(sig)
    summary = run(items, out, FakeEdit(interrupt))
    assert signal.getsignal(sig) == previous, "handlers restored"
    assert summary.interrupted == sig and summary.exit_code == 130
    assert (summary.ok, summary.not_done) == (2, 2) and "run the same command again" in summary.line()
    assert [r["status"] for r in records(out)] == ["ok", "ok"]
    assert not [p for p in out.rglob("*.tmp")] and not (out / "p2.png").exists()
    rerun = run(items, out)
    assert (rerun.ok, rerun.skipped, rerun.exit_code) == (2, 2, 0)


def test_every_image_kind_is_handled_or_failed_in_one_line(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "green", "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20).save(folder / "deep16.png")
    noise(48, 48).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    noise(48, 48).convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("LA", (48, 48), (10, 50)).save(folder / "la.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    noise(64, 32).save(folder / "rot.jpg", exif=exif)
    (folder / "locked.png").write_bytes((folder / "la.png").read_bytes())
    os.chmod(folder / "locked.png", 0)
    summary = run(jobs.plan_folder(folder, out, prompt="p"), out)
    os.chmod(folder / "locked.png", 0o644)
    by_label = {r["label"]: r for r in records(out)}
    readable_as_root = os.geteuid() == 0
    assert summary.ok == 6 + readable_as_root
    if not readable_as_root:
        assert "Permission denied" in by_label["locked.png"]["error"]
    assert "first frame" in " ".join(by_label["animated.gif"]["notes"])
    assert "16-bit" in " ".join(by_label["deep16.png"]["notes"])
    assert "EXIF orientation 8" in " ".join(by_label["rot.jpg"]["notes"])
    with Image.open(out / "rot.png") as im:
        assert im.height > im.width


def test_a_second_run_on_the_same_out_is_refused_while_one_holds_it(tmp_path):
    out = tmp_path / "out"
    items = photo_items(tmp_path / "in", out, n=1)
    out.mkdir()
    with jobs._locked(out), pytest.raises(jobs.BatchError, match="another date-edit batch"):
        run(items, out)
    assert run(items, out).ok == 1


def test_batched_edit_with_per_item_seeds_equals_single_edits(tiny_backbone):
    from date_edit.pipeline import edit

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 32, 32, generator=g)
    config = EditConfig(steps=3, skip=1, date=None, mask=None, p2p=None)  # P2P edits one prompt pair per call
    both = edit(tiny_backbone, pixels, ["a dog", "a cat"], config=config, seeds=[3, 7])
    for i, (prompt, seed) in enumerate([("a dog", 3), ("a cat", 7)]):
        alone = edit(tiny_backbone, pixels[i:i + 1], prompt, config=replace(config, seed=seed))
        assert torch.allclose(both.latents[i:i + 1], alone.latents, atol=1e-4)


# ------------------------------------------------------------------------------- security: links inside --out


def outside_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_output_through_a_directory_link_never_leaves_out(tmp_path, kind):
    """A manifest row whose output runs through a directory symlink inside --out fails; nothing lands outside,
    and a rerun does not 'skip' a file that sits outside (real CLI)."""
    elsewhere, out = tmp_path / "elsewhere", tmp_path / "out"
    elsewhere.mkdir()
    out.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    noise(64, 64, 1).save(tmp_path / "a.png")
    noise(64, 64, 2).save(tmp_path / "b.png")
    if kind == "csv":
        (tmp_path / "m.csv").write_text("image,prompt,output\na.png,a dog,link/x.png\nb.png,a cat,fine/y.png\n")
    else:
        (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "prompt": "a dog", "output": "link/x.png"})
                                          + "\n" + json.dumps({"image": "b.png", "prompt": "a cat",
                                                               "output": "fine/y.png"}) + "\n")
    args = ("--manifest", tmp_path / f"m.{kind}", "--out", out, *FAST, "--no-date", "--quiet")
    for _ in range(2):  # the rerun must not call the outside file up to date either
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert outside_files(elsewhere) == []
        last = {r["label"].split(" (")[-1].rstrip(")"): r for r in records(out)[-2:]}
        assert last["a.png"]["status"] == "failed" and "outside --out" in last["a.png"]["error"]
        assert last["b.png"]["status"] in ("ok", "skipped") and (out / "fine" / "y.png").is_file()
    # an output planted outside beforehand is not taken for a finished one
    noise(64, 64, 3).save(elsewhere / "x.png")
    proc = run_cli(*args, cwd=tmp_path)
    assert records(out)[-2]["status"] == "failed" and outside_files(elsewhere) == ["x.png"]


def test_folder_mode_output_through_a_directory_link_never_leaves_out(tmp_path):
    photos, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    (photos / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    out.mkdir()
    noise(64, 64, 1).save(photos / "g1.png")
    noise(64, 64, 2).save(photos / "sub" / "g2.png")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    proc = run_cli(photos, "--prompt", "a dog", "--out", out, *FAST, "--no-date", "--quiet", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert outside_files(elsewhere) == []
    by_label = {r["label"]: r for r in records(out)}
    assert by_label["g1.png"]["status"] == "ok"
    assert by_label["sub/g2.png"]["status"] == "failed" and "symlink" in by_label["sub/g2.png"]["error"]
    assert not (out / jobs.LOCK_NAME).exists(), "the lock file is removed when the run ends"


def test_a_link_swapped_in_after_planning_is_refused_at_write_time(tmp_path):
    """The check at write time walks the folders without following links: a folder replaced by a link between
    planning and writing (a race) still cannot redirect the output."""
    from date_edit.imaging import OutputError, save_png

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    image = noise(16, 16)
    assert save_png(image, out / "sub" / "a.png", within=out).is_file()
    (out / "sub").rename(out / "old")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="symlink"):
        save_png(image, out / "sub" / "b.png", within=out)
    with pytest.raises(OutputError, match="not inside"):
        save_png(image, out / ".." / "escape.png", within=out)
    # a file link at the target is replaced (with overwrite), never written through
    (out / "f.png").symlink_to(elsewhere / "victim.png")
    (elsewhere / "victim.png").write_bytes(b"keep")
    save_png(image, out / "f.png", within=out, overwrite=True)
    assert (elsewhere / "victim.png").read_bytes() == b"keep" and not (out / "f.png").is_symlink()
    assert outside_files(elsewhere) == ["victim.png"]
    # --out itself may be a link: its real path is the root
    (tmp_path / "out-link").symlink_to(out, target_is_directory=True)
    assert save_png(image, tmp_path / "out-link" / "new" / "c.png", within=tmp_path / "out-link").is_file()
    assert (out / "new" / "c.png").is_file()


def test_results_file_link_is_refused(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / jobs.RESULTS_NAME).symlink_to(elsewhere / "r.jsonl")
    items = photo_items(tmp_path / "in", out, n=1)
    with pytest.raises(jobs.BatchError, match="symlink"):
        run(items, out)
    assert outside_files(elsewhere) == []
