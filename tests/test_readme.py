"""The README and docs/: the Python examples run as written (in a scratch folder with the samples beside it), every
CLI option is documented, every relative link resolves, and the README stays short."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 160


def documentation_files():
    """README.md and every docs/*.md, README first."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def documentation_text():
    """The user documentation as one text: what a name must appear in to count as documented."""
    return "\n".join(path.read_text() for path in documentation_files())


def python_api_blocks():
    text = (DOCS / "python-api.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_python_api_example_runs(tmp_path):
    blocks = python_api_blocks()
    assert blocks, "docs/python-api.md has a Python example"
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[0, 3, 6]" in out.stdout
    assert (tmp_path / "dog.png").is_file()


def test_python_api_structure_control_example_runs(tmp_path):
    """The second and third examples (a captioned source prompt with the default controls; a user mask and
    Prompt-to-Prompt) continue the first; outside the mask it prints 0."""
    blocks = python_api_blocks()
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    out = subprocess.run([sys.executable, "-c", blocks[0] + blocks[1] + blocks[2]], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "outside the mask: 0.0" in out.stdout


def test_docs_list_every_cli_option():
    from click import Option

    from date_edit_cli.main import main

    docs = documentation_text()
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, Option):
                assert any(f"`{name}" in docs for name in param.opts), f"{param.opts} missing from README and docs/"


# ------------------------------------------------------------------------ links and length

CODE_BLOCK = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def without_code(text):
    """The text with fenced blocks and code spans blanked (a `# comment` in a bash block is no heading)."""
    return CODE_SPAN.sub("``", CODE_BLOCK.sub("", text))


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation other than hyphens and spaces dropped, spaces -> -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)        # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    """Every heading's anchor in a markdown file, numbered as GitHub numbers repeated headings (-1, -2, ...)."""
    seen, out = {}, set()
    for line in without_code(path.read_text()).splitlines():
        match = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            out.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return out


def relative_links(path):
    for target in LINK.findall(without_code(path.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):     # http:, https:, mailto: ... are not ours
            yield target


def test_slug_is_githubs():
    assert slug("How it works (and what is tested)") == "how-it-works-and-what-is-tested"
    assert slug("PIE-Bench: the editing scoreboard") == "pie-bench-the-editing-scoreboard"
    assert slug("Multi-concept prompts (Attend-and-Excite)") == "multi-concept-prompts-attend-and-excite"
    assert slug("`python -m benchmarks run`: quality tables") == "python--m-benchmarks-run-quality-tables"


def test_every_relative_link_resolves():
    checked, broken = 0, []
    for source in documentation_files():
        for target in relative_links(source):
            checked += 1
            file_part, _, anchor = target.partition("#")
            dest = (source.parent / file_part).resolve() if file_part else source
            where = f"{source.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no {file_part}")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
            elif not dest.is_relative_to(ROOT):
                broken.append(f"{where}: outside the repository")
    assert checked > 30, f"only {checked} relative links found: is the link pattern still right?"
    assert not broken, "\n".join(broken)


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## Second (part)\n\n```bash\n# not a heading\n```\n")
    assert anchors(page) == {"a-title", "second-part"}
    assert list(relative_links(page)) == []
    page.write_text("[x](other.md#a) ![y](ui.png) [z](https://example.com) `[no](code.md)` [w](#b)\n")
    assert list(relative_links(page)) == ["other.md#a", "ui.png", "#b"]


def test_readme_is_short_and_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert "make test" in readme, ".ci/run runs `make test`, the README's test command"
    assert "docs/ui.png" in readme, "the web app's screenshot"
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")}
    docs = sorted(DOCS.glob("*.md"))
    assert len(docs) >= 10
    for doc in docs:
        assert doc.resolve() in linked, f"README does not link {doc.relative_to(ROOT)}"
        head = doc.read_text().splitlines()[:3]
        assert head[0].startswith("# ") and "](../README.md)" in head[2], f"{doc.name}: title, then a back link"
