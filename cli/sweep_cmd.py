"""``date-edit sweep``: one photo and prompt edited over a grid of skip x target CFG (and DATE off / on), one
inversion shared by every cell; writes the labelled grid and prints each cell's CLIP-to-target and distance to the
source. The web app's Sweep tab checks its form with this command's options and runs :func:`run_sweep`, so both
give the same numbers for the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from date_edit.choices import EDIT_METHODS

from . import common, request
from .options import image_options, model_options, source_options
from .running import EXIT_USAGE, CliError, progress, run_command, say

SWEEP_DATE = ("both", "off", "on")  # --date: the columns with a fixed embedding, with DATE, or both


@click.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.argument("prompt")
@source_options
@click.option("--skips", default="20%,36%,50%", show_default=True,
              help="Skips to try (the grid's rows): counts or percentages of --steps, comma-separated.")
@click.option("--cfgs", default="7.5,15", show_default=True,
              help="Target CFG scales to try (the grid's columns), comma-separated.")
@click.option("--date", "date_mode", type=click.Choice(SWEEP_DATE), default="both", show_default=True,
              help="Columns with a fixed embedding (off), with DATE (on), or both side by side.")
@click.option("--steps", type=int, default=None,
              help="Steps of the schedule  [default: the model's, as for `edit`: 100 for DDPM editing].")
@click.option("--cfg-source", type=float, default=None,
              help="Guidance scale of the source prompt  [default: the model's, as for `edit`: 3.5].")
@click.option("--edit-method", type=click.Choice(EDIT_METHODS), default="auto", show_default=True,
              help="As for `edit`: ddpm, flowedit (SD3, FLUX) or auto.")
@click.option("--rho", type=float, default=None, help="DATE radius of the DATE cells  [default: 0.5].")
@click.option("--rho-relative", type=float, default=None, help="DATE radius relative to the prompt's embedding.")
@click.option("--update-steps", default="every:10", show_default=True, help="DATE's update steps (as for `edit`).")
@click.option("--scorer", "-s", default="clip", show_default=True, help="DATE's objective (as for `edit`).")
@click.option("--evaluator", default=None,
              help="Scorer reported per cell, against PROMPT  [default: clip:toy-heldout with --model toy (the toy "
                   "world's second CLIP, never DATE's objective), clip:tiny with the other offline models, clip].")
@click.option("--mask", default=None, metavar="auto|none|FILE",
              help="As for `edit`  [default: auto when there is a source prompt, given or captioned; none with "
                   "--source-prompt none].")
@click.option("--p2p/--no-p2p", "p2p", default=None, help="Prompt-to-Prompt, as for `edit`  [default: on where "
                                                          "the model has cross-attention].")
@click.option("--cross-replace", type=click.FloatRange(0.0, 1.0), default=None,
              help="--p2p: share of the steps whose cross-attention maps are the source's  [default: 0.8; giving "
                   "it asks for Prompt-to-Prompt, refused on SD3/FLUX].")
@click.option("--self-replace", type=click.FloatRange(0.0, 1.0), default=None,
              help="--p2p: share of the steps whose self-attention maps are the source's  [default: 0.8].")
@click.option("--json", "json_out", type=click.Path(), default=None,
              help="Also write the sweep's record (settings and every cell's numbers) to this JSON file.")
@image_options
@model_options(exclude=("as_json",))
def sweep(image: str, prompt: str, **opts) -> None:
    """Edit IMAGE towards PROMPT over a grid of --skips x --cfgs (x DATE off/on), inverting once; write the
    labelled grid (--out) and print each cell's CLIP-to-target and distance to the source."""
    def body():
        import json

        req = request.edit_request(image, prompt, opts, output="_sweep")  # --out checked with it
        json_target = json_path(opts["json_out"], opts["overwrite"], list(req.inputs)) if opts["json_out"] else None
        grid = SweepGrid.from_options(opts)  # a bad grid is refused before the model loads
        request.precheck(req)
        backbone = req.model.load()
        loaded = common.prepare_image(image, backbone, req.size, req.resize)
        req = request.resolve_source(req, loaded, backbone)
        scorer, evaluator = sweep_scorers(req, grid, backbone, request.build_scorer)
        result = run_sweep(req, grid, backbone, loaded, scorer=scorer, evaluator=evaluator,
                           progress=progress(opts["quiet"]))
        record = sweep_record(result, backbone, req, grid, image, loaded)
        files = [grid_file(result, loaded, req.out, record)]
        if json_target is not None:
            files.append((json.dumps(record, indent=2, allow_nan=False) + "\n", json_target, None))
        with common.running.SIGNALS.held():  # the grid and its record: both or neither; a signal waits
            common.write_all(files, req.overwrite, list(req.inputs))
        click.echo(table(result))
        say(f"wrote {req.out}" + (f" and {json_target}" if json_target else ""))

    run_command(body)


def json_path(out: str, overwrite: bool, inputs: list[str]):
    """Check ``--json`` before any work: a .json name, none of the ``inputs``, not a folder, nothing there yet (a
    dangling link counts; unless ``overwrite``), in a folder that can take it."""
    import os
    from pathlib import Path

    path = Path(out).expanduser()
    if path.suffix.lower() != ".json":
        raise CliError(f"--json {out}: the record is a JSON file; use a name ending in .json", EXIT_USAGE)
    for src in inputs:
        if path.exists() and Path(src).exists() and path.resolve() == Path(src).resolve():
            raise CliError(f"--json {out} is an input of this run ({src}); inputs are never overwritten", EXIT_USAGE)
    if path.is_dir():
        raise CliError(f"--json {out} is a folder; give a file name ending in .json", EXIT_USAGE)
    if os.path.lexists(path) and not overwrite:
        raise CliError(f"{out} exists; pass --overwrite or choose another --json", EXIT_USAGE)
    common.check_can_create(path.parent, path.name)
    return path


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep varies over one edit request: skips (rows), target CFG scales (columns), DATE off/on, and the
    evaluator reported per cell."""

    skips: tuple[str, ...]
    cfgs: tuple[float, ...]
    date_mode: str  # off, on or both
    evaluator: str  # the resolved spec

    @classmethod
    def from_options(cls, opts: dict) -> "SweepGrid":
        """The grid of parsed ``sweep`` options, checked (before any model loads)."""
        from date_edit.sweep import default_evaluator, parse_cfgs, parse_skips

        evaluator = common.scorer_spec(opts["evaluator"], opts["model"]) if opts.get("evaluator") \
            else default_evaluator(opts["model"])
        return cls(skips=parse_skips(opts["skips"]), cfgs=parse_cfgs(opts["cfgs"]), date_mode=opts["date_mode"],
                   evaluator=evaluator)


def sweep_scorers(req, grid: SweepGrid, backbone, build):
    """``(DATE's objective or None, the evaluator)``; ``build(req, backbone, for_date, spec=None)`` builds a scorer
    (:func:`request.build_scorer`, or the app's cached one)."""
    scorer = build(req, backbone, True) if grid.date_mode != "off" else None
    return scorer, build(req, backbone, False, spec=grid.evaluator)


def run_sweep(req, grid: SweepGrid, backbone, loaded, *, scorer, evaluator, inversion=None, progress=None):
    """The sweep of ``grid`` over the edit request ``req`` on the loaded image (the CLI and the app): each cell
    sets its own skip, target CFG and DATE on the request's config."""
    from date_edit.sweep import DATE_CHOICES, sweep as run

    config = request.resolve(req, backbone)
    return run(backbone, loaded.pixels, req.prompt, source_prompt=req.source_prompt, skips=grid.skips,
               cfgs=grid.cfgs, dates=DATE_CHOICES[grid.date_mode], base=config, scorer=scorer,
               evaluator=evaluator, evaluator_name=grid.evaluator, mask=request.user_mask(req, loaded),
               inversion=inversion, progress=progress)


def sweep_record(result, backbone, req, grid: SweepGrid, image: str, loaded) -> dict:
    """The record of a sweep (the --json file, the grid PNG's metadata, the app's record)."""
    from date_edit.outputs import json_safe

    scorer = req.scorer if grid.date_mode != "off" else None
    source = {"source_prompt_from": req.source_from} | ({"captioner": req.captioner, "caption_s": req.caption_s}
                                                        if req.source_from == "auto" else {})
    return json_safe({"command": "sweep", "model": backbone.name, "input": image,
                      "processed_size": list(loaded.processed_size), "scorer": scorer, **result.to_dict(), **source})


def grid_file(result, loaded, path, record: dict) -> tuple:
    """The labelled grid as ``(image, path, metadata)`` for :func:`common.write_all`, the record in its PNG
    metadata."""
    import json

    from date_edit.sweep import grid_image

    return grid_image(result, loaded.pixels), path, {"date-edit": json.dumps({**record, "output": str(path)},
                                                                             allow_nan=False)}


def write_grid(result, loaded, path, record: dict, overwrite: bool, protect: list[str]):
    """Save the labelled grid as ``path`` with the record in its PNG metadata; returns the path."""
    with common.running.SIGNALS.held():  # a signal waits until the file is whole
        common.write_all([grid_file(result, loaded, path, record)], overwrite, protect)
    return path


def table(result) -> str:
    """The cells as a plain table (one line each)."""
    lines = [f"{'skip':>6} {'steps':>5} {'cfg':>6} {'DATE':>4} {'CLIP':>7} {'diff':>6} {'PSNR':>6}"]
    for c in result.cells:
        lines.append(f"{c.skip:>6} {c.skip_steps:>5} {c.cfg_target:>6g} {'on' if c.date else 'off':>4} "
                     f"{c.clip:>7.3f} {c.mean_abs_diff:>6.1f} {c.psnr_db:>6.1f}")
    return "\n".join(lines)

