"""One source of an edit's defaults (issue 30, item 5): the Python API, ``date-edit edit``, ``date-edit batch`` and
the harness resolve the same steps / skip / CFG for a model, FlowEdit's published settings included.

The per-family comparison replaces the expensive loops (inversion, sampling, FlowEdit) with spies that record how
many steps they were asked to run, so that the default 100-step DDPM edits cost nothing; one real ``date-edit
batch`` subprocess runs a real FLUX FlowEdit with the defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from date_edit.defaults import FLOWEDIT_DEFAULTS, resolve_edit_config
from date_edit.edit_config import EditConfig
from date_edit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"tiny": "sd", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}
# what each family's default edit runs: (method, steps, skip, cfg_source, cfg_target, n_min, n_avg)
EXPECTED = {"tiny": ("ddpm", 100, 36, 3.5, 15.0, None, None), "tiny-sdxl": ("ddpm", 100, 36, 3.5, 15.0, None, None),
            "tiny-sd3": ("ddpm", 100, 36, 3.5, 15.0, None, None), "tiny-flux": ("flowedit", 28, 4, 1.5, 5.5, 0, 1)}
KEYS = ("method", "steps", "skip", "cfg_source", "cfg_target", "n_min", "n_avg")


def _settings(config: dict) -> tuple:
    return tuple(config[k] for k in KEYS)


def test_unset_settings_resolve_to_the_model_defaults_and_set_ones_are_kept():
    for model, want in EXPECTED.items():  # the plain edit (no structure control)
        plain = EditConfig(mask=None, p2p=None)
        assert _settings(resolve_edit_config(plain, FAMILIES[model]).to_dict()) == want, model
    # the default controls (EditConfig()'s) are structure controls: DDPM editing's target CFG is then 7.5
    assert resolve_edit_config(EditConfig(), "sd").cfg_target == 7.5
    sd3 = resolve_edit_config(EditConfig(method="flowedit"), "sd3")
    assert _settings(sd3.to_dict()) == ("flowedit", 50, 17, 3.5, 13.5, 0, 1)
    assert {k: getattr(sd3, k) for k in FLOWEDIT_DEFAULTS["sd3"]} == FLOWEDIT_DEFAULTS["sd3"]
    # steps without skip: the published share of skipped steps (4 of 28 -> 8 of 56); DDPM's 36% likewise
    assert resolve_edit_config(EditConfig(steps=56), "flux").skip == 8
    assert resolve_edit_config(EditConfig(steps=10), "sd").resolved_skip() == 3
    kept = resolve_edit_config(EditConfig(steps=12, skip=3, cfg_source=2.0, cfg_target=4.0, n_avg=2), "flux")
    assert _settings(kept.to_dict()) == ("flowedit", 12, 3, 2.0, 4.0, 0, 2)
    # `given` overrides what counts as set: a value not named there is replaced by the model's default
    assert resolve_edit_config(EditConfig(steps=12, skip=3), "flux", given=("steps",)).skip == 2
    # a structure control makes DDPM editing's target CFG 7.5 (the CLI's default edit), not FlowEdit's
    from date_edit.masks import MaskConfig

    assert resolve_edit_config(EditConfig(mask=MaskConfig("auto")), "sd").cfg_target == 7.5
    assert resolve_edit_config(EditConfig(mask=MaskConfig("auto")), "flux").cfg_target == 5.5
    assert EditConfig().steps is None and EditConfig().to_dict()["skip"] is None  # unresolved: the model's


@pytest.mark.parametrize("bad, name", [
    (dict(n_avg=0), "n_avg"), (dict(n_min=-1), "n_min"), (dict(steps=10, skip=2, n_min=8), "n_min"),
    (dict(n_avg=1.5), "n_avg"), (dict(reference_compat="yes"), "reference_compat"),
])
def test_bad_flowedit_settings_are_one_line_naming_the_parameter(bad, name):
    with pytest.raises(ConfigError) as info:
        EditConfig(**bad)
    assert str(info.value).startswith(f"{name} ") and "\n" not in str(info.value)


def test_settings_that_mean_nothing_for_the_model_are_refused():
    with pytest.raises(ConfigError, match="^n_min "):  # 28 - 4 = 24 steps: n_min 24 leaves no FlowEdit step
        resolve_edit_config(EditConfig(n_min=24), "flux")
    with pytest.raises(ConfigError, match="^n_avg .*FlowEdit setting"):
        resolve_edit_config(EditConfig(n_avg=2), "sd")
    with pytest.raises(ConfigError, match="^reference_compat .*sd3"):
        resolve_edit_config(EditConfig(method="flowedit", reference_compat=True), "sd3")
    assert resolve_edit_config(EditConfig(reference_compat=True), "sd3").reference_compat  # DDPM editing on SD3


@pytest.fixture
def spies(monkeypatch):
    """Replace inversion, sampling and FlowEdit by recorders of the steps they were given (the rest runs)."""
    import date_edit.flowedit
    import date_edit.pipeline
    from date_edit.inversion import Inversion

    calls = []

    def invert_image(backbone, pixels, *, steps, **kw):
        x0 = backbone.encode_image(pixels)
        calls.append(("invert", steps))
        return Inversion(x0=x0, x_ts=x0.expand(steps + 1, *x0.shape).clone(),
                         noise_maps=torch.zeros(steps, *x0.shape), timesteps=tuple(backbone.timesteps(steps)))

    def sample(denoiser, x_start, timesteps, schedule, **kw):
        calls.append(("sample", len(timesteps)))
        return x_start

    def flow_edit(denoiser, x_src, timesteps, schedule, **kw):
        calls.append(("flowedit", len(timesteps)))
        return x_src

    monkeypatch.setattr(date_edit.pipeline, "invert_image", invert_image)
    monkeypatch.setattr(date_edit.pipeline, "sample", sample)
    monkeypatch.setattr(date_edit.flowedit, "flow_edit", flow_edit)
    return calls


def _photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "photo.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(path)
    return path


def _expected_calls(want: tuple) -> list:
    method, steps, skip = want[:3]
    return [("flowedit", steps - skip)] if method == "flowedit" else [("invert", steps), ("sample", steps - skip)]


@pytest.mark.parametrize("model", list(EXPECTED))
def test_the_api_edit_and_batch_resolve_the_same_settings(model, spies, tmp_path):
    from click.testing import CliRunner

    from date_edit.backbones import load_backbone
    from date_edit.pipeline import edit
    from date_edit_cli.main import main

    want = EXPECTED[model]
    api = edit(load_backbone(model, device="cpu"), torch.rand(1, 3, 64, 64), "a dog",
               config=EditConfig(date=None, mask=None, p2p=None))
    assert _settings(api.config) == want and spies == _expected_calls(want)
    spies.clear()
    photo = _photo(tmp_path / "in")
    common = ["--model", model, "--no-date", "--no-p2p", "--mask", "none", "--size", "64", "--quiet", "--json"]
    out = CliRunner().invoke(main, ["edit", str(photo), "a dog", "-o", str(tmp_path / "e.png"), *common])
    assert out.exit_code == 0, out.output
    assert _settings(json.loads(out.output.strip().splitlines()[-1])["config"]) == want
    assert spies == _expected_calls(want)
    spies.clear()
    out = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "-p", "a dog", "-o", str(tmp_path / "b"), *common])
    assert out.exit_code == 0, out.output
    record = json.loads((tmp_path / "b" / "results.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "ok" and _settings(record["config"]) == want
    assert (record["cfg_source"], record["cfg_target"]) == want[3:5] and spies == _expected_calls(want)


def test_a_real_batch_runs_flowedit_with_its_published_settings_on_flux(tmp_path):
    """No spies: the `date-edit batch` command, in its own process, edits with FlowEdit's FLUX settings; a manifest
    row's n_avg column reaches the edit."""
    photo = _photo(tmp_path / "in")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,prompt,n_avg,output\n{photo},a dog,,a.png\n{photo},a dog,2,b.png\n")
    exe = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([exe, "batch", "--manifest", str(manifest), "-o", str(tmp_path / "out"), "--model",
                           "tiny-flux", "--no-date", "--size", "64", "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    got = {Path(r["output"]).name: _settings(r["config"]) for r in records}
    assert got == {"a.png": EXPECTED["tiny-flux"], "b.png": EXPECTED["tiny-flux"][:-1] + (2,)}


def test_the_new_settings_are_in_help_and_a_meaningless_one_is_a_usage_line(tmp_path):
    from click.testing import CliRunner

    from date_edit.batch.items import MANIFEST_COLUMNS
    from date_edit_cli.main import main

    for command in ("edit", "batch"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert all(flag in text for flag in ("--n-min", "--n-avg", "--reference-compat", "plain sampling",
                                             "average", "official")), command
    assert {"n_min", "n_avg", "reference_compat"} <= set(MANIFEST_COLUMNS)
    args = ["edit", str(_photo(tmp_path)), "a dog", "--model", "tiny-sd3", "--edit-method", "flowedit",
            "--reference-compat", "--no-date", "-q", "-o", str(tmp_path / "o.png")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2 and "--reference-compat" in out.output and "sd3" in out.output
