"""The shape of the code: dependencies run one way, each module imports on its own, one source of truth for the
names the library and the CLI share, library errors name parameters, and bugs are reported as bugs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"date_edit": ROOT / "date_edit", "date_edit_cli": ROOT / "cli"}
GRAPHED = PACKAGES | {"benchmarks": ROOT / "benchmarks"}  # the import graph covers the benchmarks too
# modules over the size goal (about 500 lines) today, with the most lines they may have: a ratchet, not a licence
OVERSIZE: dict[str, int] = {}
# (module, function) allowed over 80 lines: in the library and the CLI none; two benchmark scripts' main() today
LONG_FUNCTIONS: set[tuple[str, str]] = {("benchmarks.cost.date_cost", "main"), ("benchmarks.studies.toy_edit", "main")}


def _modules(packages: dict[str, Path] = PACKAGES) -> dict[str, Path]:
    out = {}
    for package, root in packages.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _import_statements(name: str, path: Path):
    """Each import statement of module ``name`` (at module level and inside functions) as ``(node, base, names)``:
    ``import a.b`` gives ``(node, None, ["a.b"])``, ``from ..x import y`` gives ``(node, "<package>.x",
    ["<package>.x.y"])`` with the relative base made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield node, None, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            yield node, base, [f"{base}.{alias.name}" for alias in node.names]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports anywhere: at module level and inside functions (a lazy import that
    closes a loop is still a loop: `main` registering commands that import `main` was one)."""
    found: set[str] = set()
    for _, base, names in _import_statements(name, path):
        found.update(names + ([base] if base is not None else []))
    return {m for m in found if m in known and m != name}


def test_imports_run_one_way():
    """A cycle is what made `import date_edit_cli.batch_cmd` fail with a partially initialised module; the
    benchmarks' modules are in the graph too (the harness and its edit suite imported each other)."""
    modules = _modules(GRAPHED)
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


# date_edit's layers, lowest first: a module imports from its own layer or one below it, never from one above.
# Names are relative to date_edit; a module sits in the layer of its longest listed prefix ("backbones" holds
# date_edit.backbones.sd); "__init__" is date_edit/__init__.py, the lazy facade over the whole package.
LAYERS = (
    # foundations: errors, names and bounds, model files, writing outputs, summary numbers
    ("errors", "choices", "limits", "defaults", "hub", "tokenizer", "t5_tokenizer", "outputs", "stats", "metrics"),
    ("imaging", "schedule", "flow", "conditioning", "p2p"),  # images, noise schedules, prompts: no model
    ("cfg", "sampling", "inversion", "guidance", "flowedit", "masks"),  # the denoising loop and what rides on it
    ("backbones", "scorers", "stock_edit", "captioning"),  # the models, the objectives, the captioners
    # DATE (its settings, objective, update rule) and the settings of an edit
    ("date", "date_config", "date_objective", "date_update", "controls", "edit_config", "timing", "callback_checks"),
    ("pipeline", "sweep", "multiconcept", "callback"),  # invert / edit / generate, and what runs them
    ("batch", "distributed"),  # jobs of many edits, on one GPU or many
    ("toy",),  # the toy world, its training and evaluation
    ("demo", "__init__"),
)
LAYER_OF = {entry: level for level, names in enumerate(LAYERS) for entry in names}
ABOVE_THE_LIBRARY = ("date_edit_cli", "benchmarks")  # date_edit imports neither


def _layer(module: str) -> int | None:
    parts = (module.removeprefix("date_edit").removeprefix(".") or "__init__").split(".")
    return next((LAYER_OF[".".join(parts[:n])] for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in LAYER_OF),
                None)


def _climbing_imports(modules: dict[str, Path], known: set[str]) -> list[str]:
    """Each import in ``modules`` (date_edit's) that goes up a layer or out to the CLI or the benchmarks, as
    ``file:line `statement`: why``."""
    bad = []
    for name, path in sorted(modules.items()):
        for node, base, names in _import_statements(name, path):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            where = f"{shown}:{node.lineno} `{ast.unparse(node)}`"
            raw = names if base is None else [base]
            for target in raw:
                if target.split(".")[0] in ABOVE_THE_LIBRARY:
                    bad.append(f"{where}: date_edit imports {target}")
            # ``from .pkg import x``: the submodule x when it is one, else the package that holds the name x
            targets = [m for m in names if m in known]
            if base is not None and len(targets) < len(names) and base in known:
                targets.append(base)
            here = _layer(name)
            for target in targets:
                there = _layer(target) if target.split(".")[0] == "date_edit" else None
                if here is not None and there is not None and there > here:
                    bad.append(f"{where}: {name} (layer {here}: {', '.join(LAYERS[here])}) imports {target} from "
                               f"layer {there} ({', '.join(LAYERS[there])})")
    return bad


def _library() -> dict[str, Path]:
    return _modules({"date_edit": PACKAGES["date_edit"]})


def test_every_library_module_has_a_layer_and_every_layer_entry_a_module():
    modules = _library()
    unplaced = sorted(m for m in modules if _layer(m) is None)
    assert not unplaced, f"add to LAYERS (the layer of what they import, or above): {unplaced}"
    stale = sorted(e for e in LAYER_OF if e != "__init__" and f"date_edit.{e}" not in modules)
    assert not stale, f"LAYERS names modules that are gone: {stale}"


def test_imports_run_down_the_library_layers():
    """Nothing in date_edit imports from a layer above its own (scorers.minconcept imported multiconcept, the
    batch results writer's json_safe was reached from the CLI, pipeline held psnr_db), nor the CLI or benchmarks."""
    modules = _library()
    bad = _climbing_imports(modules, set(_modules(GRAPHED)))
    assert not bad, "imports that climb:\n" + "\n".join(bad)


def test_the_layer_check_names_the_import_that_climbs(tmp_path):
    low = tmp_path / "fake.py"
    low.write_text("import json\n\n\ndef f():\n    from ..multiconcept import mean_ci95\n    import benchmarks.pie\n")
    known = set(_modules(GRAPHED))
    bad = _climbing_imports({"date_edit.scorers.fake": low}, known)
    assert len(bad) == 2, bad
    assert "fake.py:5 `from ..multiconcept import mean_ci95`" in bad[0] and "imports date_edit.multiconcept" in bad[0]
    assert "fake.py:6 `import benchmarks.pie`: date_edit imports benchmarks.pie" in bad[1]


CLI_MODULES = sorted(m for m in _modules() if m.startswith("date_edit_cli."))
LIGHT = ["date_edit", "date_edit.errors", "date_edit.choices", "date_edit.limits"]


@pytest.mark.parametrize("module", CLI_MODULES + LIGHT)
def test_each_light_module_imports_first_and_alone_without_torch(module):
    """Every CLI module imports on its own in a fresh interpreter (no test-order luck), and pulls in no torch."""
    probe = (f"import sys, {module}; heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy') "
             "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_modules_and_functions_stay_small():
    modules = _modules(GRAPHED)  # the benchmarks too
    for name, path in modules.items():
        lines = len(path.read_text().splitlines())
        assert lines <= OVERSIZE.get(name, 500), f"{name} has {lines} lines"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (name, node.name) not in LONG_FUNCTIONS:
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{name}.{node.name} has {length} lines"


# ------------------------------------------------------------------------------------- one source of truth


def test_choices_are_the_ones_the_library_and_the_cli_use():
    import click

    from date_edit import choices
    from date_edit.backbones import DTYPES
    from date_edit.date import UpdateMode, ablation_changes
    from date_edit.imaging import ResizeMode
    from date_edit_cli.main import main

    assert tuple(m.value for m in UpdateMode) == choices.UPDATE_MODES
    assert tuple(m.value for m in ResizeMode) == choices.RESIZE_MODES
    assert tuple(DTYPES) == choices.DTYPE_NAMES
    for name in choices.ABLATIONS:
        ablation_changes(name)
    expected = {"dtype": choices.DTYPE_NAMES, "update_mode": choices.UPDATE_MODES, "resize": choices.RESIZE_MODES,
                "ablation": choices.ABLATIONS, "grad_checkpointing": choices.CHECKPOINTING_MODES,
                "compile_mode": choices.COMPILE_MODES}
    seen = set()
    for command in main.commands.values():
        for param in command.params:
            if param.name in expected and isinstance(param.type, click.Choice):
                assert tuple(param.type.choices) == expected[param.name], (command.name, param.name)
                seen.add(param.name)
            if param.name == "model" and command.name != "ane":
                assert param.default == choices.DEFAULT_MODEL
    assert seen == set(expected)


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    from click.testing import CliRunner

    import date_edit
    from date_edit_cli.main import main

    out = CliRunner().invoke(main, ["--version"])
    assert out.exit_code == 0 and version("date-edit") in out.output
    assert date_edit.__version__ == version("date-edit")


def test_offline_scorer_spec_is_one_function_for_the_cli_and_the_harness():
    """`--model toy --scorer min-concept` was min-concept=1 (ViT-L weights, unavailable offline) in the CLI but
    min-concept:toy in the harness; imagereward likewise. Now both resolve through one function."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import harness
    finally:
        sys.path.remove(str(ROOT))
    from date_edit.scorers import offline_scorer_spec
    from date_edit_cli import common

    assert harness.offline_scorer_spec is offline_scorer_spec
    cases = {
        ("min-concept", "toy"): "min-concept:toy=1",
        ("clip", "toy"): "clip:toy=1",
        ("imagereward", "toy"): "imagereward:tiny=1",
        ("clip=1,imagereward=0.5", "tiny"): "clip:tiny=1,imagereward:tiny=0.5",
        ("clip:toy-heldout", "toy"): "clip:toy-heldout=1",
        ("min-concept", "stable-diffusion-v1-5/stable-diffusion-v1-5"): "min-concept",
    }
    for (spec, model), want in cases.items():
        assert offline_scorer_spec(spec, model) == want, (spec, model)
        assert common.scorer_spec(spec, model) == want


def test_min_concept_on_the_toy_model_builds_offline():
    """The spec the CLI resolves for `--model toy --scorer min-concept` builds without any download."""
    from date_edit.scorers import build_scorer, offline_scorer_spec

    scorer = build_scorer(offline_scorer_spec("min-concept", "toy"), require_differentiable=True)
    assert scorer.name == "min-concept:toy"


# ----------------------------------------------------------------------------------------- errors


def test_library_errors_name_parameters_and_the_cli_names_flags(capsys):
    from date_edit.date import DateConfig, parse_update_steps
    from date_edit.errors import ConfigError
    from date_edit.pipeline import EditConfig
    from date_edit_cli.running import run_command

    with pytest.raises(ConfigError) as info:
        parse_update_steps("0,200", 100)
    assert str(info.value).startswith("update_steps ") and "--" not in str(info.value)
    with pytest.raises(ConfigError, match="^iterations "):
        DateConfig(iterations=0)
    with pytest.raises(ConfigError, match="^skip "):
        EditConfig(steps=10, skip=10)
    from date_edit.pipeline import GenerateConfig

    for bad in ({"guidance_scale": float("nan")}, {"universal_guidance": -1.0}, {"steps": 0},
                {"universal_guidance_steps": "every:0"}):
        with pytest.raises(ConfigError):
            GenerateConfig(**bad)

    def body():
        DateConfig(iterations=0)

    with pytest.raises(SystemExit) as exit_info:
        run_command(body)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "date-edit: error: --grad-iters must be >= 1, got 0"


def test_a_bug_is_exit_1_and_says_where_its_traceback_went(capsys, monkeypatch, tmp_path):
    """A ValueError from inside a library used to be reported as bad input (exit 2), hiding bugs."""
    from date_edit_cli.running import DEBUG_ENV, run_command

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    def body():
        raise ValueError("shapes (3, 4) and (5,) do not match")

    with pytest.raises(SystemExit) as exit_info:
        run_command(body)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1
    assert len(err.splitlines()) == 1 and "bug" in err and "ValueError: shapes (3, 4)" in err
    saved = list(tmp_path.glob("date-edit-error-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in err
    assert "Traceback" in saved[0].read_text() and "body" in saved[0].read_text()
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="shapes"):
        run_command(body)


def test_library_errors_are_one_family_that_imports_no_torch():
    from date_edit import errors
    from date_edit.backbones import BackboneError
    from date_edit.batch import BatchError
    from date_edit.imaging import ImageError, OutputError
    from date_edit.scorers import ScorerError

    for cls in (BackboneError, BatchError, ImageError, OutputError, ScorerError, errors.ConfigError):
        assert issubclass(cls, errors.DateEditError)
    assert BackboneError.usage is False and ImageError.usage is True


# ------------------------------------------------------------------------------- the float32 retry


def test_the_float32_retry_moves_the_gradient_decoder_too(tiny_scorer):
    """batch retries an item in float32 after a non-finite result; the approximate gradient decoder stayed in
    bf16, so the retry itself failed (`--dtype bf16 --grad-decoder tiny`)."""
    import torch

    from date_edit.backbones import load_backbone
    from date_edit.batch import as_float32
    from date_edit.date import DateConfig
    from date_edit.pipeline import EditConfig, edit

    backbone = load_backbone("tiny", device="cpu", dtype="bf16", grad_decoder="tiny")
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = EditConfig(steps=6, skip=0, date=DateConfig(update_steps="0,3"))
    with as_float32(backbone):
        assert all(p.dtype == torch.float32 for m in backbone.modules() for p in m.parameters())
        result = edit(backbone, pixels, "a dog", scorer=tiny_scorer, config=config)
    assert torch.isfinite(result.images).all() and len(result.update_steps) == 2
    assert all(p.dtype == torch.bfloat16 for m in backbone.modules() for p in m.parameters())


if os.name != "posix":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX only")


def test_only_warnings_about_the_run_reach_the_user(capsys):
    """A dependency's deprecation (huggingface_hub's local_dir_use_symlinks, on every model load) is not the
    user's business; a warning date-edit raises (a truncated prompt) is."""
    import warnings

    from date_edit.backbones import PromptTruncatedWarning
    from date_edit_cli.running import run_command

    def body():
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn_explicit("The `local_dir_use_symlinks` argument is deprecated", UserWarning,
                                   "/venv/lib/python3.11/site-packages/huggingface_hub/utils/_validators.py", 205)
            warnings.warn_explicit("old API", FutureWarning, "/venv/lib/python3.11/site-packages/diffusers/x.py", 1)
            warnings.warn("prompt truncated to 77 tokens", PromptTruncatedWarning, stacklevel=1)

    run_command(body)
    err = capsys.readouterr().err
    assert err.strip() == "date-edit: warning: prompt truncated to 77 tokens", err


def test_library_modules_import_first_and_alone():
    """Every scorer module (and the rest of the library) imports on its own in a fresh interpreter."""
    from concurrent.futures import ThreadPoolExecutor

    modules = sorted(m for m in _modules() if m.startswith("date_edit.scorers."))

    def probe(module: str):
        out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                             timeout=300, cwd=ROOT)
        return module, out.returncode, out.stderr[-1000:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, code, err in pool.map(probe, modules) if code != 0]
    assert not failed, failed


def test_every_library_package_is_in_the_wheel():
    """pyproject's explicit package list names every package under date_edit/ (a missing one installs from a
    source checkout but not from a wheel)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "date_edit").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
