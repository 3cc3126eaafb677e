"""``date-edit batch``: edit a folder (one prompt for all) or a manifest (a prompt and options per image), resumably.

Thin: plan the items (:mod:`date_edit.batch`), turn options into configs with the helpers ``edit`` uses
(:mod:`.common`), and hand both to :func:`date_edit.batch.run_batch`. Only click-level modules are imported here,
so a rerun with nothing to do never loads torch.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import click

from date_edit.errors import ConfigError

from . import common, request
from .options import (
    checked, control_options, date_options, edit_options, image_options, model_options, seed_option,
)
from .running import EXIT_USAGE, CliError, run_command, say

_OWN = ("out", "overwrite", "as_json", "quiet", "seed")  # edit's options that batch defines with its own meaning
# options that do not change an output; every other option goes into the resume key (so a new one can only redo)
_NOT_OUTPUT = ("manifest", "prompt", "out", "globs", "force", "batch_size", "max_pixels", "as_json", "quiet",
               "device", "grad_checkpointing", "compile_unet", "compile_mode")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_dir", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--manifest", type=click.Path(dir_okay=False), default=None,
              help="A .csv (with a header), .jsonl or .json list of rows: image, prompt, and optional "
                   "source_prompt, seed, output, steps, skip, cfg_source, cfg_target, n_min, n_avg, "
                   "reference_compat, rho, rho_relative, update_steps, update_mode, grad_iters, no_date, size, "
                   "resize, mask, p2p, cross_replace, self_replace (empty: the command-line value; a schedule "
                   "setting left out everywhere is the model's default, as in `edit`). Image and mask paths are "
                   "relative to the manifest; at most 128 MiB.")
@click.option("--prompt", "-p", default=None,
              help="Target prompt of every image of INPUT_DIR (with --manifest: of rows without a prompt).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUT/<path relative to INPUT_DIR>.png, plus OUT/results.jsonl. May lie inside "
                   "INPUT_DIR (it is then left out of the input walk); may not be or contain INPUT_DIR.")
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Files to edit, matched case-insensitively against the name and the relative path (repeatable; "
                   "default: *.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif). Hidden files and folders are "
                   "skipped.")
@click.option("--force", is_flag=True,
              help="Redo items whose output is up to date, and replace files at output paths that date-edit batch "
                   "did not write (an input is never replaced).")
@click.option("--batch-size", type=int, default=None,
              help="Images per forward pass, among items of the same processed size and settings "
                   "(default: 4 on CUDA, 1 on CPU). After an out-of-memory error it halves.")
@click.option("--max-pixels", type=int, default=40_000_000, show_default=True, is_eager=True,
              callback=checked("check_max_pixels"),
              help="Inputs with more pixels fail (checked before decoding), and so do files over 16 bytes per pixel "
                   "of it (610 MiB by default); --size must fit it too (size x size pixels).")
@edit_options
@control_options
@date_options
@image_options
@model_options(exclude=_OWN)
@seed_option("Inversion seed of every item, 0 to 2**64-1 (a manifest's seed column overrides it); an item's "
             "noise maps do not depend on the batch it runs in.", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print each item's record on stdout as a JSON line.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar (it is also off when stderr is not a terminal).")
def batch(input_dir, **opts) -> None:
    """Edit every image in INPUT_DIR towards --prompt, or every row of --manifest, into --out.

    \b
      date-edit batch photos/ --prompt "a watercolor painting" --out edited/
      date-edit batch --manifest edits.csv --out edited/

    Outputs mirror the input tree; OUT/results.jsonl gets one record per item and run (status ok, failed
    or skipped, the edit's record, the input's sha256). A rerun skips items whose output is there with the
    same input content and settings, so an interrupted job resumes; --force redoes them. One bad file is
    recorded as failed with a one-line reason and never stops the batch.

    \b
    On several GPUs or nodes, start it with a launcher; the ranks share the work:
      torchrun --standalone --nproc-per-node 4 --no-python date-edit batch photos/ -p "..." -o edited/
    (srun: export MASTER_ADDR and MASTER_PORT; ranks wait DATE_EDIT_JOIN_TIMEOUT seconds, 900, for each other
    to start; a rank that dies is named by the others within DATE_EDIT_PEER_TIMEOUT seconds, 60, and they stop.)

    \b
    Exit codes: 0 every item ok or up to date; 3 some items failed (see results.jsonl);
    2 usage error (options, folder, manifest, launch environment); 1 the model could not be loaded, or a rank
    of the job died;
    130 interrupted by SIGINT/SIGTERM (rerun the same command to finish).
    """
    run_command(lambda: _body(input_dir, opts))  # SIGTERM while planning: one line and 130 (the run has its own)


def _body(input_dir, opts: dict) -> None:
    from pathlib import Path

    from date_edit import batch as jobs

    if (input_dir is None) == (opts["manifest"] is None):
        raise CliError("give INPUT_DIR (with --prompt) or --manifest FILE, not both", EXIT_USAGE)
    if input_dir is not None and opts["prompt"] is None:
        raise CliError("--prompt is required with INPUT_DIR (or use --manifest for per-image prompts)", EXIT_USAGE)
    if opts["batch_size"] is not None and opts["batch_size"] < 1:
        raise CliError("--batch-size must be >= 1", EXIT_USAGE)
    out = Path(opts["out"]).expanduser()
    _check_inputs_outside(opts.get("mask"), opts.get("manifest"), out)
    try:
        if input_dir is not None:
            items = jobs.plan_folder(Path(input_dir).expanduser(), out, prompt=opts["prompt"],
                                     globs=opts["globs"] or jobs.DEFAULT_GLOBS)
        else:
            items = jobs.plan_manifest(Path(opts["manifest"]).expanduser(), out, prompt=opts["prompt"],
                                       seed=opts["seed"])
    except jobs.BatchError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not items:
        if input_dir is not None:
            globs = " ".join(opts["globs"] or jobs.DEFAULT_GLOBS)
            raise CliError(f"nothing to do: no file in {input_dir} matches --glob {globs}", EXIT_USAGE)
        raise CliError(f"nothing to do: manifest {opts['manifest']} has no rows", EXIT_USAGE)

    base = {k: v for k, v in opts.items() if k not in _NOT_OUTPUT}
    on_record = (lambda rec: click.echo(json.dumps(rec))) if opts["as_json"] else None
    dist, opts["device"] = _join(opts["device"])  # a rank of a launch runs on its own device
    loader = _model_loader(request.ModelChoice.from_options(opts), common.scorer_spec(opts["scorer"], opts["model"]))
    tell = say if not dist.active else (lambda text: say(f"rank {dist.rank}: {text}"))
    try:
        summary = jobs.run_batch(
            items, out, base_options=base, resolve=_resolver(opts["max_pixels"], out), load_model=loader,
            make_record=_make_record, batch_size=opts["batch_size"], force=opts["force"],
            max_pixels=opts["max_pixels"], show_progress=not opts["quiet"] and sys.stderr.isatty(),
            say=tell, on_record=on_record, dist=dist, prepare=_captioner(out),
        )
    except jobs.BatchError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    finally:
        dist.close()
    if dist.main:
        say(summary.line() if not dist.active else f"{summary.line()} ({dist.world} processes)")
    sys.exit(summary.exit_code)


def _join(device: str):
    """``(this process's place in the job, the device it runs on)``: one process, or a rank of a torchrun /
    accelerate / srun launch (joined, on ``cuda:LOCAL_RANK`` when ``device`` asks for CUDA)."""
    from date_edit.distributed import Dist

    dist = Dist.from_env()
    if dist.active:
        device = dist.device(device)
        dist.init(device)
    return dist, device


def _check_inputs_outside(mask: Optional[str], manifest: Optional[str], out) -> None:
    """Before any work: the ``--mask`` file and the manifest are inputs, so neither may lie where the job writes (a
    mask inside ``--out`` would be replaced by ``--save-mask``, a manifest that is the results file appended to)."""
    import os

    from date_edit import batch as jobs
    from date_edit.choices import mask_file

    mask = mask_file(mask)
    if mask and jobs.stays_inside(mask, out):
        raise CliError(f"--mask {mask} is inside the output folder {out}; outputs are never inputs: keep the mask "
                       "elsewhere", EXIT_USAGE)
    results = out / jobs.RESULTS_NAME
    if manifest and os.path.exists(manifest) and os.path.exists(results) and os.path.samefile(manifest, results):
        raise CliError(f"--manifest {manifest} is the job's results file; give the manifest you wrote", EXIT_USAGE)


def _resolver(max_pixels: int, out):
    """Merged options -> ItemSettings, with the ``edit`` command's own config helpers; a manifest row's size is
    held to ``max_pixels`` as --size is, and a mask file inside the output folder ``out`` is refused (outputs are
    never inputs)."""

    def resolve(options: dict):
        from date_edit.batch import ItemSettings
        from date_edit.limits import check_size

        check_size(options["size"], max_pixels=max_pixels)
        req = request.edit_request(None, options["prompt"], options)  # the item's one request
        if req.mask not in (None, "auto", "default"):
            from date_edit.batch import sha256_file, stays_inside
            from date_edit.batch.items import MAX_MASK_BYTES

            if stays_inside(req.mask, out):
                raise ConfigError("mask", f"file {req.mask} is inside the output folder; outputs are never inputs: "
                                          "keep masks elsewhere")
            # the mask's content decides the output, so it is part of the resume key (a new mask redoes the item)
            try:
                options = dict(options, mask_sha256=sha256_file(req.mask, max_bytes=MAX_MASK_BYTES))
            except ValueError as exc:  # ImageError: missing, a folder, a device, too large
                raise ConfigError("mask", f"file: {exc}") from None
        # left-out schedule settings stay None: edit() resolves them for the model, as for `edit` and the API
        common.check_schedule_early(req.config)
        return ItemSettings(prompt=req.prompt, source_prompt=req.source_prompt, config=req.config,
                            model=req.model.name, model_config=req.model.config, dtype=req.model.dtype,
                            size=req.size, resize=req.resize, scorer=req.scorer, options=options, request=req)

    return resolve


def _captioner(out):
    """``(settings, loaded, backbone) -> settings``: an item without a source prompt (``--source-prompt auto``, the
    default, or an ``auto`` cell) gets the photo's caption, made once per image content and captioner and kept in
    ``OUT/captions.json`` (a resumed job captions nothing twice)."""
    captions = None

    def prepare(settings, loaded, backbone):
        nonlocal captions
        from dataclasses import replace

        req = settings.request
        if req is None or not req.needs_caption:
            return settings
        if captions is None:
            captions = request.Captions(out / "captions.json")
        req = request.resolve_source(req, loaded, backbone, captions)
        captions.save()
        return replace(settings, source_prompt=req.source_prompt, request=req)

    return prepare


def _model_loader(model, spec: str):
    """``(needs_date) -> (backbone, scorer)``: the ``model`` (a :class:`request.ModelChoice`) and the scorer
    ``spec``, loaded once, when the first item needs them."""

    def load(needs_date: bool):
        backbone = model.load()
        return backbone, request.build_scorer(None, backbone, needs_date, spec=spec, quiet=model.quiet)

    return load


def _make_record(result, settings, loaded, backbone, scorer) -> dict:
    """The record ``date-edit edit --json`` makes, for one item (from the request its settings came from)."""
    return request.edit_record(settings.request, result, backbone, scorer, loaded)
