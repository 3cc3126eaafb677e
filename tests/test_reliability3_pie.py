"""Issue 36, "Reliability, round three", the benchmark harness's part: PIE-Bench mappings as hostile data (keys
that are paths, links out of the data folder, nesting that breaks the parser, fields of the wrong type) and the
harness's own errors (on stderr, one line, the right exit status, ``--n-avg`` bounded before any model loads).

The loader's promises are checked in-process; one real ``python -m benchmarks`` process replays the issue's
traversal key end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.suites.pie import data as pie
from benchmarks.harness.checks import check_item_id
from benchmarks.harness import main, parse_method
from date_edit.errors import ConfigError
from date_edit.limits import MAX_N_AVG
from test_pie import make_pie

ROOT = Path(__file__).resolve().parents[1]
FIRST = "000000000000"  # make_pie's first key


@pytest.fixture(scope="module")
def pie_src(tmp_path_factory):
    return make_pie(tmp_path_factory.mktemp("pie3"))


def _copy(pie_src: Path, dst: Path, change=None) -> Path:
    """A copy of the PIE fixture (real files, no links) with ``change(mapping)`` written as its mapping."""
    shutil.copytree(pie_src, dst)
    if change is not None:
        mapping = json.loads((dst / pie.MAPPING).read_text())
        (dst / pie.MAPPING).write_text(change(mapping) if callable(change) else change)
    return dst


def _rekey(key: str):
    def change(mapping: dict) -> str:
        mapping[key] = mapping.pop(FIRST)
        return json.dumps(mapping)

    return change


def _one_line(err: pytest.ExceptionInfo, *words: str) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    for word in words:
        assert word in text, text
    return text


# ------------------------------------------------------------------------------ item 1: keys are data, not paths


BAD_KEYS = ["../../../../victim/important", "/tmp/victim/important", "a/b", "a\\b", "..", ".", "", " 1", "-rf",
            "x" * 100_000, "caf\u00e9", "\ud800", "a\u0000b"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_a_key_that_is_not_a_plain_name_is_a_refused_item(tmp_path, pie_src, key):
    root = _copy(pie_src, tmp_path / "pie", _rekey(key))
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, "plain name")
    assert [e.key for e in pie.load_pie(pie_src)][0] == FIRST  # the dataset's 12-digit keys still load


def test_nothing_is_written_outside_out_whatever_an_item_or_a_mapping_says(tmp_path):
    """The writers check what they are given too: an item id that is a path, an image_path that leaves the
    reference layout, a method slug that is a path."""
    out = tmp_path / "out"
    assert check_item_id(FIRST, out) == FIRST
    for bad in ("../../victim/important", "/abs/important", "a/b", "..", "x" * 10_000):
        with pytest.raises(ConfigError) as err:
            check_item_id(bad, out)
        _one_line(err, "plain file name")
    assert pie.reference_path(out, "fixed", "0_random_140/a.jpg") == \
        out / "reference" / "fixed" / pie.IMAGES / "0_random_140" / "a.jpg"
    for slug, rel in (("fixed", "../../../victim.jpg"), ("fixed", "/abs.jpg"), ("fixed", ""), ("..", "a.jpg"),
                      ("a/b", "a.jpg"), ("fixed", "a/../../b.jpg")):
        with pytest.raises(ConfigError) as err:
            pie.reference_path(out, slug, rel)
        _one_line(err, "inside")
    assert not out.exists()


# ------------------------------------------------------------------ item 4: files resolve inside --data


def test_a_photo_that_links_out_of_the_data_folder_is_refused(tmp_path, pie_src):
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    shutil.copy(pie.load_pie(pie_src)[0].image, outside)
    root = _copy(pie_src, tmp_path / "pie")
    photo = root / pie.IMAGES / pie.load_pie(root)[0].image_path
    photo.unlink()
    os.symlink(outside, photo)  # annotation_images/.../000000000000.jpg -> elsewhere
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, "outside", "--data")
    photo.unlink()
    os.symlink(os.path.relpath(outside, photo.parent), photo)  # relative links are followed the same way
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, "outside")
    photo.unlink()
    inside = root / "spare.jpg"
    shutil.copy(outside, inside)
    os.symlink(inside, photo)  # a link that stays inside the data folder is fine, and read through
    assert pie.load_pie(root)[0].image == inside.resolve()
    photo.unlink()
    os.symlink(photo, photo)  # a link to itself: not a photo
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, "not found")


def test_an_images_folder_that_links_out_of_the_data_folder_is_refused(tmp_path, pie_src):
    root = tmp_path / "pie"
    root.mkdir()
    shutil.copy(pie_src / pie.MAPPING, root / pie.MAPPING)
    os.symlink(pie_src / pie.IMAGES, root / pie.IMAGES)
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, "outside")
    linked = tmp_path / "linked"
    os.symlink(pie_src, linked)  # --data itself a link: its files are inside it
    assert len(pie.load_pie(linked)) == 3


# ------------------------------------------------------------------ item 10: the mapping's shape, deep nesting


def _with(field: str, value):
    return lambda m: json.dumps({k: v | {field: value} for k, v in m.items()})


DEEP = "[" * 200_000 + "]" * 200_000


@pytest.mark.parametrize("change, words", [
    (DEEP, ["nested too deeply"]),
    ('{"' + FIRST + '": ' + DEEP + "}", ["nested too deeply"]),
    ('{"' + FIRST + '": {"mask": ' + "[" * 100_000 + "]" * 100_000 + "}}", ["nested too deeply"]),
    (_with("mask", [[[[[[[[[[[1]]]]]]]]]], 2]), ["mask run"]),
    (_with("mask", [0, "x" * 100_000]), ["mask run"]),
    (_with("mask", {"0": 1}), ["mask", "list"]),
    (_with("mask", "0 5"), ["mask", "list"]),
    (_with("image_path", ["a.jpg"]), ["image_path", "string"]),
    (_with("image_path", None), ["image_path", "string"]),
    (_with("image_path", "../" * 50_000 + "etc/passwd"), ["inside"]),
    (_with("original_prompt", {"a": 1}), ["original_prompt", "string"]),
    (_with("editing_prompt", 7), ["editing_prompt", "string"]),
    (_with("editing_prompt", "a [red] \ud800"), ["editing_prompt", "Unicode"]),
    (_with("editing_type_id", True), ["editing_type_id"]),
    (_with("editing_type_id", [6]), ["editing_type_id"]),
    (_with("blended_word", ["a", "b"]), ["blended_word", "string"]),
    (_with("editing_instruction", 1.5), ["editing_instruction", "string"]),
    (lambda m: json.dumps({FIRST: [1, 2]}), ["expected an object"]),
    (lambda m: json.dumps({FIRST: "x" * 100_000}), ["expected an object"]),
], ids=range(19))
def test_a_mapping_of_the_wrong_shape_is_one_line(tmp_path, pie_src, change, words):
    root = _copy(pie_src, tmp_path / "pie", change)
    with pytest.raises(ConfigError) as err:
        pie.load_pie(root)
    _one_line(err, *words)


# ------------------------------------------------ items 15 and 6: the harness's errors, --n-avg bounded


def _main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", "--quiet", "--model", "tiny", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_harness_says_bad_input_on_stderr_in_one_line_before_anything_loads(tmp_path, pie_src, capsys,
                                                                                monkeypatch):
    def no_model(*_, **__):
        raise AssertionError("a model was loaded for a refused run")

    monkeypatch.setattr("date_edit.backbones.load_backbone", no_model)
    bad_key = _copy(pie_src, tmp_path / "badkey", _rekey("../../../../victim/important"))
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "out"
    cases = [
        (["--suite", "pie", "--data", str(pie_src), "--n-avg", "1000000000"], ["--n-avg", str(MAX_N_AVG)]),
        (["--suite", "pie", "--data", str(pie_src), "--n-avg", "0"], ["--n-avg"]),
        (["--suite", "toy", "--n-avg", "2"], ["--n-avg", "edit suite"]),
        (["--suite", "pie"], ["--data"]),
        (["--suite", "pie", "--data", str(bad_key)], ["plain name"]),
        (["--suite", "edit", "--methods", "date-clip@rho=abc"], ["rho"]),
        (["--suite", "edit", "--methods", "date-clip@rho=nan"], ["rho"]),
        (["--suite", "edit", "--methods", "fixed@ug=-inf"], ["ug"]),
        (["--suite", "edit", "--methods", "fixed-equal-compute@steps-factor=1e300"], ["steps-factor", "10"]),
        (["--suite", "edit", "--methods", "fixed@" + "x" * 100_000], ["cannot set"]),
        (["--suite", "toy", "--limit", "-1"], ["--limit"]),
        (["--suite", "toy", "--seeds", "0"], ["--seeds"]),
        (["--suite", "edit", "--methods", "date-clip", "--updates", "9" * 100_000], ["update_steps"]),
    ]
    for args, words in cases:
        code, stdout, stderr = _main(capsys, *args, "--out", str(out))
        assert code == 2 and stdout == "", (args, stdout, stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("benchmarks: error: ") and len(lines[0]) < 450, stderr
        assert all(w in lines[0] for w in words), (words, lines[0])
        assert not out.exists(), args
    for target in (tmp_path / "file", tmp_path / "file" / "sub"):  # a run folder that cannot be one
        code, stdout, stderr = _main(capsys, "--suite", "toy", "--out", str(target))
        assert code == 2 and stdout == "" and stderr.startswith("benchmarks: error: --out") and \
            len(stderr.splitlines()) == 1, stderr
    assert (tmp_path / "file").read_text() == "not a folder"

    def full_disk(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("benchmarks.harness.runner.load_items", full_disk)  # a runtime failure: exit 1, one line
    code, stdout, stderr = _main(capsys, "--suite", "toy", "--out", str(out))
    assert code == 1 and stdout == "" and stderr == "benchmarks: error: [Errno 28] No space left on device\n"


def test_the_harness_help_names_the_n_avg_bound(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--n-avg" in text and f"1 to {MAX_N_AVG}" in text


def test_n_avg_reaches_the_flowedit_config_and_is_refused_on_ddpm():
    from argparse import Namespace

    from benchmarks.suites.editing import check_methods, settings

    args = Namespace(suite="pie", preset=None, steps=None, cross_replace=None, self_replace=None, mask="none",
                     mask_threshold=0.5, mask_peak=0.9, p2p=False, n_avg=3)
    kw, _ = settings(args, parse_method("fixed"), "sd3")
    assert kw["n_avg"] == 3 and kw["method"] == "flowedit"

    from types import SimpleNamespace

    sd = SimpleNamespace(family="sd", name="tiny", schedule=SimpleNamespace(prediction_type="epsilon"))
    with pytest.raises(ConfigError) as err:  # before any image: what a DDPM run would do with it is nothing
        check_methods(args, [parse_method("fixed")], sd, "a photo")
    _one_line(err, "n_avg", "FlowEdit")


def test_a_traversal_key_writes_nothing_anywhere_and_says_so_on_stderr(tmp_path, pie_src):
    """The issue's run: a key ``../../../../victim/important`` replaced ``victim/important_s0.png`` (exit 0)."""
    victim = tmp_path / "victim" / "important_s0.png"
    victim.parent.mkdir()
    victim.write_bytes(b"the user's file")
    data = _copy(pie_src, tmp_path / "pie", _rekey("../../../../victim/important"))
    out = tmp_path / "a" / "b" / "c" / "out"  # images/<method>/<key>: four levels up is tmp_path
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    done = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quiet", "--suite", "pie", "--data",
                           str(data), "--model", "tiny", "--methods", "fixed", "--steps", "2", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("benchmarks: error: ") and "plain name" in done.stderr
    assert victim.read_bytes() == b"the user's file"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
