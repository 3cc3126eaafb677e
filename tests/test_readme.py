"""The README's Python example runs as written (in a scratch folder with the samples beside it)."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has a Python example"
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[0, 3, 6]" in out.stdout
    assert (tmp_path / "dog.png").is_file()


def test_readme_structure_control_example_runs(tmp_path):
    """The second example (a user mask and Prompt-to-Prompt) continues the first; outside the mask it prints 0."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    out = subprocess.run([sys.executable, "-c", blocks[0] + blocks[1]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "outside the mask: 0.0" in out.stdout


def test_readme_lists_every_cli_option():
    from click import Option

    from date_edit_cli.main import main

    readme = (ROOT / "README.md").read_text()
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, Option):
                assert any(f"`{name}" in readme for name in param.opts), f"{param.opts} missing from README"
