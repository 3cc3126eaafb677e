"""Issue 36, "Reliability, round three": the CLI and library items (inputs never overwritten, masks of every bit
depth, all-or-nothing writes, bounded ``--n-avg``, usage errors that were reported as bugs, non-finite sweep cells,
output paths checked before the model loads, explicit P2P options on models without cross-attention, short
messages). The PIE-Bench loader, the web app and ``DateCallback`` have their own ``test_reliability3_*`` modules.

Real ``date-edit`` processes where the behaviour is a process's; most of them stop before a model loads, so they
cost a fraction of a second. The library's promises in-process.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from date_edit.errors import ConfigError, DateEditError, NonFiniteError
from test_reliability2 import FAST, SAMPLE, cli, noise


def one_line(proc) -> str:
    """The one ``date-edit: error:`` line of a refused run (and no traceback, no "bug")."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and "bug" not in proc.stderr, proc.stderr
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def half_mask(path: Path, keep, change, mode: str) -> None:
    """A 64x64 mask file whose left half holds ``keep`` and right half ``change``, in ``mode``."""
    dtype = {"I;16": np.uint16, "F": np.float32, "L": np.uint8}[mode]
    arr = np.zeros((64, 64), dtype)
    arr[:, :32], arr[:, 32:] = keep, change
    Image.fromarray(arr, mode if mode != "I;16" else None).save(path)


# ------------------------------------------------------------- item 2: --overwrite never replaces an input


def test_overwrite_never_replaces_the_mask_file(tmp_path):
    """``--mask out/m.png -o out/m.png --overwrite`` replaced the user's mask with the edit, ``--save-mask`` with the
    computed mask, and ``sweep`` with its grid. Each is refused now, before any work, and the mask is untouched."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(SAMPLE, tmp_path / "photo.png")
    mask, mask2 = out / "m.png", out / "x.mask.png"
    for m in (mask, mask2):
        half_mask(m, 0, 255, "L")
    before = {m: m.read_bytes() for m in (mask, mask2)}
    runs = [("edit", "photo.png", "a dog", "--mask", mask, "-o", mask, "--overwrite"),
            ("edit", "photo.png", "a dog", "--mask", mask2, "--save-mask", "-o", out / "x.png", "--overwrite"),
            ("sweep", "photo.png", "a dog", "--mask", mask, "-o", mask, "--overwrite")]
    for args in runs:
        proc = cli(*args, *FAST, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "input" in one_line(proc) and "never overwritten" in proc.stderr
    assert {m: m.read_bytes() for m in (mask, mask2)} == before
    assert sorted(p.name for p in out.iterdir()) == ["m.png", "x.mask.png"]


def test_the_library_refuses_every_protected_input_by_name(tmp_path):
    """``save_png``'s ``protect`` guards every input, not only the first: the mask is named as an input."""
    from date_edit.errors import OutputError
    from date_edit.outputs import save_png

    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    noise().save(photo)
    half_mask(mask, 0, 255, "L")
    before = mask.read_bytes()
    with pytest.raises(OutputError, match="an input of this run"):
        save_png(noise(seed=1), mask, overwrite=True, protect=[photo, mask])
    assert mask.read_bytes() == before


def test_a_batch_never_writes_over_its_masks(tmp_path):
    """A batch's ``--mask`` inside ``--out`` is refused before any work (``--save-mask`` would replace it); a
    manifest row whose mask lies in the output folder fails alone, its mask untouched."""
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    out.mkdir()
    noise().save(photos / "a.png")
    half_mask(out / "a.mask.png", 0, 255, "L")
    before = (out / "a.mask.png").read_bytes()
    proc = cli("batch", photos, "-p", "a dog", "-o", out, "--mask", out / "a.mask.png", "--save-mask", *FAST,
               cwd=tmp_path)
    assert proc.returncode == 2 and "inside the output folder" in one_line(proc)
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "in/a.png", "prompt": "a dog", "mask": "out/a.mask.png"})
                                      + "\n")
    proc = cli("batch", "--manifest", tmp_path / "m.jsonl", "-o", out, "--save-mask", *FAST, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "inside the output folder" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "a.mask.png").read_bytes() == before


# ------------------------------------------------------------- item 3: masks of every bit depth


@pytest.mark.parametrize("mode,scale", [("L", 255), ("I;16", 65535), ("F", 1.0)])
def test_a_mask_means_the_same_at_the_same_grey_level_in_every_bit_depth(tmp_path, mode, scale):
    """A 16-bit half at 1000/65535 (1.5% grey: keep) counted as white, and one at 30% grey too: clipped to 8 bits
    instead of scaled. Now 1.5% and 30% grey keep, 70% grey and white change, in 8-bit, 16-bit and float files."""
    from date_edit.masks import load_mask

    ext = ".tif" if mode == "F" else ".png"
    for keep, change in ((0.015, 1.0), (0.30, 0.70)):
        path = tmp_path / f"m{keep}{ext}"
        half_mask(path, round(keep * scale) if mode != "F" else keep, round(change * scale) if mode != "F"
                  else change, mode)
        mask = load_mask(path, original_size=(64, 64), processed_size=(64, 64))
        assert float(mask[..., :32].max()) == 0.0, (mode, keep)
        assert float(mask[..., 32:].min()) == 1.0, (mode, change)


# ------------------------------------------------------------- item 5: everything an edit writes, or nothing


class _Result:
    """What ``write_outputs`` reads of an edit's result."""

    def __init__(self, finite: bool = True):
        self.latents = torch.zeros(1, 4, 8, 8) if finite else torch.full((1, 4, 8, 8), float("nan"))
        self.images = torch.rand(1, 3, 64, 64)
        self.mask = torch.ones(1, 1, 64, 64)


def test_save_mask_is_written_with_the_edit_or_not_at_all(tmp_path):
    """``--rho 1e30 --save-mask`` said "nothing was written" but had written ``X.mask.png`` (saved before the finite
    check), and a rerun was then refused because that file existed. Now a non-finite edit writes nothing; and when a
    later file cannot be written, the ones written before it in the same run are removed again."""
    from date_edit_cli import common
    from date_edit_cli.running import CliError

    path = tmp_path / "x.png"
    with pytest.raises(CliError, match="nothing was written"):
        common.write_outputs(_Result(finite=False), path, {"command": "edit"}, False, [], False, save_mask=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x.png.json").mkdir()  # the --json record cannot be written: a folder is in the way
    with pytest.raises(DateEditError):
        common.write_outputs(_Result(), path, {"command": "edit"}, False, [], True, save_mask=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png.json"]
    common.write_outputs(_Result(), tmp_path / "y.png", {"command": "edit"}, False, [], False, save_mask=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png.json", "y.mask.png", "y.png"]


# ------------------------------------------------------------- item 6: --n-avg is bounded everywhere


def test_n_avg_is_bounded_in_the_cli_the_manifest_and_the_library(tmp_path):
    """``--model tiny-flux --n-avg 1000000000`` ran until killed, and a manifest row with it blocked the batch."""
    from date_edit.edit_config import EditConfig
    from date_edit.limits import MAX_N_AVG

    assert EditConfig(n_avg=MAX_N_AVG).n_avg == MAX_N_AVG
    for bad in (MAX_N_AVG + 1, 10**9, 0, True, 2.0):
        with pytest.raises(ConfigError, match="n_avg"):
            EditConfig(n_avg=bad)
    noise().save(tmp_path / "a.png")
    proc = cli("edit", "a.png", "a dog", "--model", "tiny-flux", "--n-avg", 10**9, cwd=tmp_path)
    assert proc.returncode == 2 and f"at most {MAX_N_AVG}" in one_line(proc)
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "prompt": "a dog", "n_avg": 10**9}) + "\n")
    proc = cli("batch", "--manifest", tmp_path / "m.jsonl", "-o", tmp_path / "out", *FAST, "--no-date",
               cwd=tmp_path, timeout=60)
    assert proc.returncode == 3 and f"at most {MAX_N_AVG}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    help_text = cli("edit", "--help", cwd=tmp_path).stdout
    assert f"at most {MAX_N_AVG}" in " ".join(help_text.split())


# ------------------------------------------------------------- item 8: --skip inf% is a usage error


@pytest.mark.parametrize("skip", ["inf%", "-inf%", "nan%", "1e999%", "-5%", "101%"])
def test_a_percentage_skip_that_is_not_0_to_100_is_a_config_error(skip):
    from date_edit.edit_config import EditConfig
    from date_edit.sweep import parse_skips

    with pytest.raises(ConfigError, match="skip"):
        EditConfig(skip=skip)
    with pytest.raises(ConfigError, match="skips"):
        parse_skips(f"20%,{skip}")


def test_skip_inf_percent_is_refused_in_one_line_by_edit_and_sweep(tmp_path):
    """``--skip inf%`` and ``--skips inf%`` said "unexpected OverflowError ... This is a bug" (exit 1)."""
    for args in (("edit", SAMPLE, "a dog", "--skip", "inf%"), ("sweep", SAMPLE, "a dog", "--skips", "20%,inf%")):
        proc = cli(*args, *FAST, "-o", tmp_path / "x.png", cwd=tmp_path)
        assert proc.returncode == 2 and "inf%" in one_line(proc)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- items 11, 12: sweep


def test_a_sweep_with_a_non_finite_cell_writes_nothing(tmp_path):
    """``--cfgs 1e308`` wrote a grid with a black NaN cell and ``null`` scores, exit 0; ``edit`` refuses the same
    input. Now the sweep stops at that cell, writes neither the grid nor its record, and exits 1 in one line."""
    proc = cli("sweep", SAMPLE, "a dog", "--skips", "50%", "--cfgs", "1e308", "--date", "off", "-o",
               tmp_path / "g.png", "--json", tmp_path / "g.json", *FAST, cwd=tmp_path, timeout=180)
    assert proc.returncode == 1 and "non-finite" in one_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_cell_is_refused_by_the_library():
    from date_edit.sweep import check_finite_cell

    class R:
        latents, images = torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 64, 64)

    check_finite_cell(R, 0.3, "36%", 7.5, False)
    with pytest.raises(NonFiniteError, match="CFG 7.5 \\+ DATE"):
        check_finite_cell(R, math.nan, "36%", 7.5, True)
    R.latents = torch.full((1, 4, 8, 8), float("inf"))
    with pytest.raises(NonFiniteError, match="skip 36%"):
        check_finite_cell(R, 0.3, "36%", 7.5, False)


def test_sweep_json_on_a_dangling_link_is_refused_before_the_model_loads(tmp_path):
    """The early check used ``exists()``, false for a dangling link: the sweep ran and wrote its grid, then failed."""
    (tmp_path / "r.json").symlink_to(tmp_path / "nowhere.json")
    proc = cli("sweep", SAMPLE, "a dog", "-o", tmp_path / "g.png", "--json", tmp_path / "r.json", *FAST,
               cwd=tmp_path)
    assert proc.returncode == 2 and "exists" in one_line(proc)
    assert "note: --model" not in proc.stderr  # refused before the model loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ------------------------------------------------------------- item 13: explicit P2P options on SD3/FLUX


def test_every_explicit_p2p_option_asks_for_p2p():
    """``--reweight``, ``--local-blend`` and ``--cross-replace`` were dropped silently on SD3/FLUX (the default P2P
    is left out there): any of them now makes P2P required, so the model refuses it."""
    from date_edit_cli import request

    base = {"p2p": None, "mask": "none", "scorer": "clip", "model": "tiny", "no_date": True}
    assert request.edit_request(None, "a dog", base).config.p2p == "default"  # the model's default: optional
    for given in ({"cross_replace": 0.5}, {"self_replace": 0.8}, {"reweight": (("cat", 2.0),)},
                  {"local_blend": True}):
        config = request.edit_request(None, "a dog", {**base, **given}).config
        assert config.p2p is not None and config.optional_controls is False, given

    class SD3:
        family = "sd3"

    req = request.edit_request(None, "a dog", {**base, "cross_replace": 0.5})
    with pytest.raises(ConfigError, match="--cross-replace asks for Prompt-to-Prompt"):
        request.check_p2p_supported(req, req.config, SD3())


def test_reweight_on_sd3_is_refused_in_one_line(tmp_path):
    proc = cli("edit", SAMPLE, "a red dog", "--model", "tiny-sd3", "--steps", 4, "--no-date", "--reweight", "red=2",
               "-o", tmp_path / "x.png", "-q", cwd=tmp_path, timeout=180)
    assert proc.returncode == 2 and "--reweight asks for Prompt-to-Prompt" in one_line(proc)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- item 17: messages quote a short excerpt


def test_messages_quote_a_short_excerpt_of_user_text(tiny_backbone):
    """An unknown ``--reweight`` word with a 100,000-character prompt gave one error line 100 KB long."""
    from date_edit.errors import excerpt
    from date_edit.p2p import word_token_indices
    from date_edit_cli.running import MAX_LINE

    prompt = "a cat " * 16_667
    with pytest.raises(ConfigError) as err:
        word_token_indices(tiny_backbone.tokenizer, prompt, "zebra")
    assert len(str(err.value)) < 300 and "100,002 characters" in str(err.value)
    assert excerpt("short") == "'short'" and len(excerpt("x" * 10**6)) < 100
    assert MAX_LINE <= 1000


def test_a_huge_argument_in_an_error_stays_one_short_line(tmp_path):
    proc = cli("edit", SAMPLE, "a dog", "--reweight", "w" * 100_000 + "=x", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr) < 1000, len(proc.stderr)
