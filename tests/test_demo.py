"""`make demo`'s program: a toy sample inverted and edited with and without DATE, grid and summary written."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_grid_and_summary(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "date_edit.demo", "--out", str(tmp_path / "demo")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["model"] == "toy"
    assert len(summary["edits"]) == 4 and {e["date"] for e in summary["edits"]} == {True, False}
    assert summary["source_judge"]["correct"]
    # the bare command's edit (issue 38): the photo captioned, the default controls, the white background kept:
    # every pixel outside the automatic mask is the input's
    assert summary["source_prompt"] == "a red circle" and summary["source_prompt_from"] == "caption"
    for e in summary["edits"]:
        assert (tmp_path / "demo" / e["image"]).is_file() and "correct" in e["judge"]
        assert "mask-auto" in e["controls"] and e["outside_mask_exact"] == 1.0
    from PIL import Image

    grid = Image.open(tmp_path / "demo" / "grid.png")
    assert grid.width > grid.height and "grid.png" in out.stdout
