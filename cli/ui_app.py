"""The handlers of ``date-edit ui``: plain methods of :class:`App` that take the form's values and return the named
outputs, so they are tested without a browser (the layout, with gradio, is :mod:`.ui_layout`).

A form becomes option values that each ``edit`` (or ``sweep``) option checks with its own type and callback, no
command line in between (:func:`options`), so its checks and one-line errors are the CLI's; those values build the
one :class:`~.request.EditRequest` the CLI builds, and the command line the app shows is rendered from them. The
model is loaded once (by the ``ui`` command); an inversion is kept per (image content, source prompt, steps, seed,
CFG source, model), so a new target prompt, CFG, skip, mask or DATE setting resamples without inverting again.
Imports no gradio, torch or numpy at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import click

from date_edit.errors import ConfigError, DateEditError, printable
from date_edit.limits import DEFAULT_MAX_PIXELS

from . import common, request
from .edit_cmd import edit as edit_command
from .running import EXIT_USAGE, CliError, flag_for, say
from .sweep_cmd import SweepGrid, run_sweep, sweep as sweep_command, sweep_record, sweep_scorers, write_grid

SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # a source checkout's sample photos (absent from a wheel)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_LAYER_PIXELS = DEFAULT_MAX_PIXELS  # a painted layer's budget: the photo's, checked before it is decoded
PAINTED_MASK = "the painted mask"  # how messages name the painted mask (never by its file on the server)
CACHE_SIZE = 8  # inversions kept (an SD inversion of 100 steps is about 13 MB)
# the Edit form: its fields in order, with their defaults (the CLI's: P2P and an automatic mask, so CFG 7.5)
FORM = {"source_prompt": "", "prompt": "", "steps": 100, "skip": "36%", "cfg_source": 3.5, "cfg_target": 7.5,
        "seed": 0, "edit_method": "auto", "date": True, "radius": "rho", "rho": 0.5, "update_steps": "every:10",
        "scorer": "clip", "mask": "auto", "p2p": True, "cross_replace": 0.8, "self_replace": 0.8}
MASK_MODES = ("auto", "painted", "none")
RADIUS_KINDS = ("rho", "rho-relative")
SWEEP_FORM = {"skips": "20%,36%,50%", "cfgs": "7.5,15", "date_mode": "both", "evaluator": ""}


def error_line(exc: BaseException) -> Optional[str]:
    """The CLI's one line for an expected failure (bad input, a model or memory problem), or None for a bug."""
    if isinstance(exc, click.UsageError):
        text = exc.format_message()
    elif isinstance(exc, ConfigError):
        text = exc.message_for(flag_for(exc.param))
    elif isinstance(exc, (CliError, DateEditError)):
        text = str(exc)
    elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        text = "out of memory; try fewer steps, fewer DATE update steps, or a smaller photo"
    else:
        return None
    return "error: " + printable((text.strip().splitlines() or [type(exc).__name__])[0])


def saved_traceback(exc: BaseException) -> str:
    """Save ``exc``'s traceback to a file for the server's log; where it is, as a phrase (never shown to a browser)."""
    try:
        fd, path = tempfile.mkstemp(prefix="date-edit-ui-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=f)
        return f"the traceback is in {path}"
    except OSError:
        return "the traceback could not be saved"


def bug_line(exc: BaseException) -> tuple[str, str]:
    """An unexpected failure: one line saying it is a bug, for the browser (no server path) and for the server's log
    (where its traceback was saved); never the traceback itself."""
    first = printable((str(exc).strip().splitlines() or [""])[0])
    head = f"error: unexpected {type(exc).__name__}: {first}. This is a bug, not bad input"
    return f"{head}: the server's log says where its traceback is; please report it", \
        f"{head}: {saved_traceback(exc)}; please report it"


def server_prefixes(*more) -> list[str]:
    """The server's folders a message may name (temporary folders, this checkout, Python's, the home folder),
    longest first."""
    found = {str(p) for p in (*more, tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR"), SAMPLES.parent,
                                sys.prefix, sys.base_prefix, os.path.expanduser("~")) if p}
    found |= {os.path.realpath(p) for p in found}
    return sorted((p.rstrip(os.sep) for p in found if len(p.rstrip(os.sep)) > 1), key=len, reverse=True)


def public(text: str, names: Optional[dict] = None, prefixes: Optional[list] = None) -> str:
    """``text`` as a browser may see it: each path in ``names`` replaced by its name (an upload's file name, or a
    role such as "the painted mask"), then any other path under a server folder (:func:`server_prefixes`) by
    its last part, so that no message shows where the server keeps anything."""
    for path, name in sorted((names or {}).items(), key=lambda kv: len(kv[0]), reverse=True):
        if path:
            text = text.replace(f"mask {path}", name) if name == PAINTED_MASK else text
            text = text.replace(path, name)
    for prefix in prefixes if prefixes is not None else server_prefixes():
        text = re.sub(re.escape(prefix) + r"(?![^/\\\s'\"`,;:()])(?:[/\\][^\s'\"`,;:()]*)?",
                      lambda m: os.path.basename(m.group().rstrip("/\\")) or "?", text)
    return text


def _number(value, integer: bool = False) -> str:
    """A form number as command-line text (30.0 -> "30" for an integer field; empty -> "")."""
    if value is None or value == "":
        return ""
    if integer and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _shared_values(form: dict, model: str, mask_file: Optional[str]) -> dict:
    """The options ``edit`` and ``sweep`` share, as the text a command line gives them (flags: True/False): source
    prompt, steps, CFG source, seed, method, model, DATE, controls."""
    values = {"source_prompt": str(form["source_prompt"] or "").strip() or None,  # an empty box: auto
              "steps": _number(form["steps"], True), "cfg_source": _number(form["cfg_source"]),
              "seed": _number(form["seed"], True), "edit_method": form["edit_method"], "model": model}
    if form.get("date", True) or "date_mode" in form:
        values["rho_relative" if form["radius"] == "rho-relative" else "rho"] = _number(form["rho"])
        values.update(update_steps=form["update_steps"], scorer=form["scorer"])
    mask = form["mask"]
    if mask not in MASK_MODES:
        raise ConfigError("mask", f"{mask!r}: choose one of {', '.join(MASK_MODES)}")
    values.update(mask=mask_file if mask == "painted" else mask, p2p=bool(form["p2p"]),
                  cross_replace=_number(form["cross_replace"]), self_replace=_number(form["self_replace"]))
    return values


def edit_values(photo: str, form: dict, model: str, mask_file: Optional[str] = None) -> dict:
    """The ``date-edit edit`` option values that do what the Edit form asks (by parameter name)."""
    values = {"image": photo, "prompt": form["prompt"], **_shared_values(form, model, mask_file),
              "skip": str(form["skip"]), "cfg_target": _number(form["cfg_target"])}
    return values if form["date"] else {**values, "no_date": True}


def sweep_values(photo: str, form: dict, grid: dict, model: str, mask_file: Optional[str] = None) -> dict:
    """The ``date-edit sweep`` option values that do what the Sweep tab asks (the Edit form's settings, its grid)."""
    values = {"image": photo, "prompt": form["prompt"],
              **_shared_values({**form, "date_mode": grid["date_mode"]}, model, mask_file),
              "skips": grid["skips"], "cfgs": grid["cfgs"], "date_mode": grid["date_mode"]}
    return values | ({"evaluator": grid["evaluator"]} if (grid.get("evaluator") or "").strip() else {})


def options(command: click.Command, values: dict) -> dict:
    """The parsed options of ``command`` for ``values`` (by parameter name; the rest take their defaults), checked
    by each option's own type and callback exactly as the CLI checks them (a click.UsageError naming the flag if
    not), with no command line in between."""
    ctx = click.Context(command, info_name=command.name)
    with ctx:
        for param in command.params:
            raw = values[param.name] if param.name in values else param.get_default(ctx)
            ctx.params[param.name] = param.process_value(ctx, raw)
    return dict(ctx.params)


def command_args(command: click.Command, values: dict) -> list[str]:
    """``values`` as ``command``'s arguments (in the order the command declares them): what the app shows as the
    command line that does the same edit."""
    args: list[str] = []
    for param in command.params:
        if param.name not in values:
            continue
        value = values[param.name]
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif isinstance(value, bool):
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            args += [flag] if flag else []
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


def command_line(name: str, args: list[str], photo: str, mask_file: Optional[str] = None) -> str:
    """``date-edit <name> ...`` as a shell line, the photo named by its file name and a painted mask as
    ``painted-mask.png`` (no server path)."""
    shown = [Path(a).name if a == photo else "painted-mask.png" if mask_file and a == mask_file else a
             for a in args]
    return shlex.join(["date-edit", name, *shown])


def layer_size(layer) -> tuple[int, int]:
    """A painted layer's (width, height), read without decoding it (a PIL image as opened: its header; an array),
    refused in one line (a :class:`CliError`, exit 2) over :data:`MAX_LAYER_PIXELS` or not an image."""
    if hasattr(layer, "shape") and len(layer.shape) >= 2:
        h, w = int(layer.shape[0]), int(layer.shape[1])
    elif hasattr(layer, "size") and len(getattr(layer, "size", ())) == 2:
        w, h = layer.size
    else:
        raise CliError(f"{PAINTED_MASK} is not an image (a {type(layer).__name__}); reload the photo and paint again",
                       EXIT_USAGE)
    if w * h > MAX_LAYER_PIXELS:
        raise CliError(f"{PAINTED_MASK} is {w}x{h} = {w * h:,} pixels, over the limit of {MAX_LAYER_PIXELS:,} (the "
                       "photo's); paint on the photo as the app shows it", EXIT_USAGE)
    return w, h


def is_local(host: str) -> bool:
    """Whether ``host`` serves this machine only."""
    return host in LOCAL_HOSTS


class App:
    """One loaded model and what the app keeps between requests: inversions, scorers, the output folder."""

    def __init__(self, backbone, model: str, out_dir: Optional[str] = None) -> None:
        self.backbone, self.model = backbone, model
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="date-edit-ui-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.inversions: OrderedDict = OrderedDict()
        self.captions = request.Captions()  # one caption per photo content (the source-prompt box on upload)
        self.scorers: dict = {}
        self.lock = threading.Lock()  # one request at a time on the model (gradio's queue does it too)
        self._masks = 0

    # ------------------------------------------------------------------------------------------ small helpers

    def samples(self) -> list[str]:
        """The sample photos of the checkout, relative to samples/ (toy ones first for the toy model)."""
        if not SAMPLES.is_dir():
            return []
        found = sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*")
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        return sorted(found, key=lambda s: (not s.startswith("toy/")) if self.model == "toy" else s.startswith("toy/"))

    def default_sample(self) -> Optional[str]:
        """The sample picked at start: the toy red circle for the toy model, else none."""
        return "toy/red_circle.png" if self.model == "toy" and (SAMPLES / "toy/red_circle.png").is_file() else None

    def methods(self) -> list[str]:
        """The edit methods this model has (FlowEdit only for flow models)."""
        return ["auto", "ddpm"] + (["flowedit"] if self.backbone.schedule.prediction_type == "flow" else [])

    def method_defaults(self, method: str) -> dict:
        """The published steps/skip/CFG of FlowEdit for this model's family when ``method`` is flowedit, else
        nothing (the form keeps its values)."""
        from date_edit.defaults import FLOWEDIT_DEFAULTS

        published = FLOWEDIT_DEFAULTS.get(self.backbone.family)
        if method != "flowedit" and not (method == "auto" and self.backbone.family == "flux") or not published:
            return {}
        return {k: published[k] for k in ("steps", "skip", "cfg_source", "cfg_target") if k in published}

    @staticmethod
    def default_cfg_target(p2p: bool, mask: str) -> float:
        """The CLI's default target CFG for these controls (DDPM editing): 7.5 with a structure control, 15 without."""
        from date_edit.defaults import CFG_TARGET_CONTROLLED, DDPM_DEFAULTS

        controlled = bool(p2p) or mask in ("auto", "painted")
        return CFG_TARGET_CONTROLLED if controlled else DDPM_DEFAULTS["cfg_target"]

    def _scorer(self, req, backbone, for_date: bool, spec: Optional[str] = None):
        """:func:`request.build_scorer`, built once per resolved spec."""
        spec = spec or req.scorer
        if (spec, for_date) not in self.scorers:
            self.scorers[(spec, for_date)] = request.build_scorer(req, backbone, for_date, spec=spec)
        return self.scorers[(spec, for_date)]

    def _load(self, photo: Optional[str], req=None):
        """The photo at the model's size (the request's size and resize, or the defaults), as the CLI loads it."""
        from date_edit.imaging import load_image

        if not photo:
            raise CliError("no photo: upload one or pick a sample")
        b = self.backbone
        size, resize = (req.size, req.resize) if req is not None else (None, "fit")
        return load_image(photo, size=size or b.native_size, multiple=b.size_multiple, resize=resize,
                          min_side=b.min_side)

    def _key(self, loaded, req) -> tuple:
        """The inversion cache's key: what an inversion depends on."""
        digest = hashlib.sha256(loaded.pixels.numpy().tobytes()).hexdigest()
        return digest, req.source_prompt, req.config.steps, req.seed, float(req.config.cfg_source), self.model

    def _cached(self, key: tuple):
        inversion = self.inversions.get(key)
        if inversion is not None:
            self.inversions.move_to_end(key)
        return inversion

    def _remember(self, key: tuple, inversion) -> None:
        if inversion is None:
            return
        self.inversions[key] = inversion
        self.inversions.move_to_end(key)
        while len(self.inversions) > CACHE_SIZE:
            self.inversions.popitem(last=False)

    @contextlib.contextmanager
    def _painted(self, painted, form: dict):
        """The painted layers as a mask file for the request (None unless the form's mask is 'painted'), removed
        after it: the app's folder keeps no mask, and a refused layer is never written."""
        path = self._painted_mask(painted, form)
        try:
            yield path
        finally:
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _painted_mask(self, painted, form: dict) -> Optional[str]:
        """The painted layers (any stroke, any colour) as a mask file, white where painted; None unless the form's
        mask is 'painted'. Each layer's size is checked before it is decoded (a layer over the photo's pixel budget
        is refused unread)."""
        if form.get("mask") != "painted":
            return None
        import numpy as np
        from PIL import Image

        layers = [] if not painted else [la for la in (painted.get("layers") or []) if la is not None]
        sizes = {layer_size(layer) for layer in layers}
        if len(sizes) > 1:
            raise CliError(f"{PAINTED_MASK}'s layers differ in size ({', '.join(f'{w}x{h}' for w, h in sizes)}); "
                           "reload the photo and paint again", EXIT_USAGE)
        alpha = None
        for layer in layers:
            a = np.asarray(Image.fromarray(layer) if isinstance(layer, np.ndarray) else layer.convert("RGBA"))
            a = a[..., 3] > 0 if a.ndim == 3 and a.shape[-1] == 4 else a.reshape(a.shape[:2] + (-1,)).any(-1)
            alpha = a if alpha is None else alpha | a
        if alpha is None or not alpha.any():
            raise CliError("the mask is set to 'painted' but nothing is painted: paint over the part of the photo "
                           "to change, or choose mask auto or none")
        self._masks += 1
        path = self.out_dir / f"painted_mask_{self._masks}.png"
        Image.fromarray(alpha.astype(np.uint8) * 255, "L").save(path)
        return str(path)

    def _guarded(self, what: str, photo: Optional[str], fn: Callable[[], dict]) -> dict:
        """Run ``fn`` under the model's lock; an expected failure becomes ``{"status": one line}`` naming the
        photo by its file name and the painted mask by its role (no server path), a bug one line saying so; either
        is logged as one line on the server's stderr."""
        try:
            with self.lock:
                return fn()
        except Exception as exc:  # noqa: BLE001 - the app never shows a traceback
            line = error_line(exc)
            shown, logged = (line, line) if line is not None else bug_line(exc)
            masks = re.findall(re.escape(str(self.out_dir / "painted_mask_")) + r"\d+\.png", shown + logged)
            names = {p: PAINTED_MASK for p in masks}
            if photo:
                names[str(photo)] = Path(photo).name
            shown = public(shown, names, server_prefixes(self.out_dir))
            say(f"{what}: {shown if line is not None else public(logged, names, [])}")
            return {"status": shown}

    # ------------------------------------------------------------------------------------------ the handlers

    def load_photo(self, path: Optional[str]) -> dict:
        """Check an uploaded (or sample) photo as the CLI would and show it at the size it will be edited."""

        def run():
            from date_edit.imaging import to_pil

            loaded = self._load(path)
            image = to_pil(loaded.pixels)[0]
            (w, h), (ow, oh) = loaded.processed_size, loaded.original_size
            notes = "".join(f"; {n}" for n in loaded.notes)
            caption, said = request.photo_caption(self.captions, self.backbone, loaded)  # fills the box
            return {"photo": str(path), "editor": {"background": image, "layers": [], "composite": image},
                    "source_prompt": caption,
                    "status": f"photo {Path(path).name}: {w}x{h} (from {ow}x{oh}){notes}; {said}"}

        out = self._guarded("photo", path, run)
        return out if "photo" in out else {**out, "photo": None, "editor": None}

    def load_sample(self, name: Optional[str]) -> dict:
        """:meth:`load_photo` of a sample by its name under samples/."""
        if not name:
            return {}
        return self.load_photo(str(SAMPLES / name))

    def edit(self, photo: Optional[str], painted, form: dict, progress=None) -> dict:
        """Edit the photo as the form asks; outputs ``result``, ``status``, ``record``, ``download``, ``plot``
        (DATE's objective per update: ``[(step, score), ...]``) and ``command`` (the same edit as a command)."""
        return self._guarded("edit", photo, lambda: self._edit(photo, painted, {**FORM, **form}, progress))

    def _edit(self, photo, painted, form: dict, progress) -> dict:
        if not str(form["prompt"]).strip():
            raise CliError("the target prompt is empty: type what the edited photo should show")
        with self._painted(painted, form) as mask_file:
            return self._edit_with(photo, mask_file, form, progress)

    def _edit_with(self, photo, mask_file: Optional[str], form: dict, progress) -> dict:
        from date_edit.imaging import to_pil

        values = edit_values(photo or "", form, self.model, mask_file)
        req = request.edit_request(photo, form["prompt"], options(edit_command, values))  # the form's one request
        request.precheck_mask(req, photo)
        loaded = self._load(photo, req)
        req = request.resolve_source(req, loaded, self.backbone, self.captions)
        scorer = self._scorer(req, self.backbone, True) if req.config.date is not None else None
        key = self._key(loaded, req)
        ddpm = req.config.resolved_method(self.backbone) == "ddpm"
        inversion = self._cached(key) if ddpm else None
        result, config = request.run(req, self.backbone, scorer, loaded, inversion=inversion, progress=progress)
        self._remember(key, result.inversion)
        state = "none (FlowEdit inverts nothing)" if config.method != "ddpm" else \
            "cached" if inversion is not None else "computed"
        line = command_line("edit", command_args(edit_command, values), photo, mask_file)
        record = request.edit_record(req, result, self.backbone, scorer, loaded, input=Path(photo).name,
                                     mask=form["mask"], inversion=state, command_line=line)
        path = self._write(result, record, photo, req.prompt, req.seed)
        trace = result.trace
        return {"result": to_pil(result.images)[0], "status": status_line(record), "record": record,
                "download": str(path), "command": line,
                "plot": list(zip(result.update_steps, trace.scores)) if trace else []}

    def _write(self, result, record: dict, photo: str, prompt: str, seed: int) -> Path:
        """The edit as a PNG carrying its record (the CLI's writer and metadata key) in the output folder."""
        from date_edit.outputs import json_safe
        from date_edit.imaging import default_output_name, save_png, to_pil

        path = self.out_dir / default_output_name(photo, prompt, seed)
        common.check_finite(result, record)
        record["output"] = path.name
        metadata = {"date-edit": json.dumps(json_safe(record), allow_nan=False)}
        return save_png(to_pil(result.images)[0], path, metadata=metadata, overwrite=True, protect=[photo])

    def reconstruct(self, photo: Optional[str], form: dict, progress=None) -> dict:
        """Invert and resample with the source prompt (no DATE): how exact the inversion is, as an image."""
        return self._guarded("reconstruct", photo,
                             lambda: self._reconstruct(photo, {**FORM, **form, "prompt": "-"}, progress))

    def _reconstruct(self, photo, form: dict, progress) -> dict:
        from date_edit.imaging import to_pil
        from date_edit.metrics import psnr_db
        from date_edit.pipeline import EditConfig, reconstruct

        req = request.edit_request(photo, "-", options(edit_command, edit_values(photo or "", form, self.model, None)))
        edit = req.config
        config = EditConfig(steps=edit.steps, skip=edit.skip, cfg_source=edit.cfg_source, cfg_target=edit.cfg_source,
                            seed=req.seed, date=None)
        loaded = self._load(photo, req)
        req = request.resolve_source(req, loaded, self.backbone, self.captions)
        result = reconstruct(self.backbone, loaded.pixels, source_prompt=req.source_prompt, config=config,
                             progress=progress)
        psnr = psnr_db(result.images, loaded.pixels)
        return {"reconstruction": to_pil(result.images)[0],
                "status": f"reconstruction: PSNR {psnr:.2f} dB vs the input; inversion "
                          f"{result.timings['inversion_s']:.2f} s, total {result.timings['total_s']:.2f} s"}

    def sweep(self, photo: Optional[str], painted, form: dict, grid: dict, progress=None) -> dict:
        """The Sweep tab: ``date-edit sweep`` with the Edit form's settings over the grid asked; outputs ``grid``
        (the labelled image), ``rows`` (one per cell), ``status``, ``record`` and ``download``."""
        return self._guarded("sweep", photo, lambda: self._sweep(photo, painted, {**FORM, **form},
                                                                 {**SWEEP_FORM, **grid}, progress))

    def _sweep(self, photo, painted, form: dict, grid: dict, progress) -> dict:
        if not str(form["prompt"]).strip():
            raise CliError("the target prompt is empty: type what the edited photo should show")
        with self._painted(painted, form) as mask_file:
            return self._sweep_with(photo, mask_file, form, grid, progress)

    def _sweep_with(self, photo, mask_file: Optional[str], form: dict, grid: dict, progress) -> dict:
        from date_edit.imaging import default_output_name

        values = sweep_values(photo or "", form, grid, self.model, mask_file)
        opts = options(sweep_command, values)
        req, cells = request.edit_request(photo, form["prompt"], opts), SweepGrid.from_options(opts)
        request.precheck_mask(req, photo)
        loaded = self._load(photo, req)
        req = request.resolve_source(req, loaded, self.backbone, self.captions)
        scorer, evaluator = sweep_scorers(req, cells, self.backbone, self._scorer)
        key = self._key(loaded, req)
        inversion = self._cached(key)
        result = run_sweep(req, cells, self.backbone, loaded, scorer=scorer, evaluator=evaluator,
                           inversion=inversion, progress=progress)
        self._remember(key, result.inversion)
        record = sweep_record(result, self.backbone, req, cells, Path(photo).name, loaded)
        record["command_line"] = command_line("sweep", command_args(sweep_command, values), photo, mask_file)
        path = self.out_dir / default_output_name(photo, req.prompt, req.seed, suffix="_sweep.png")
        write_grid(result, loaded, path, record, True, [photo])
        from PIL import Image

        with Image.open(path) as im:
            image = im.convert("RGB")
        t = result.timings
        status = (f"sweep of {len(result.cells)} edits: inversion: {record['inversion']} "
                  f"({t['inversion_s']:.2f} s), total {t['total_s']:.2f} s")
        rows = [[c.skip, c.skip_steps, c.cfg_target, "on" if c.date else "off", round(c.clip, 4),
                 round(c.mean_abs_diff, 2), round(c.psnr_db, 2)] for c in result.cells]
        return {"grid": image, "rows": rows, "status": status, "record": record, "download": str(path)}


SWEEP_COLUMNS = ["skip", "steps skipped", "CFG target", "DATE", "CLIP to target", "mean |diff| 0-255", "PSNR dB"]


def status_line(record: dict) -> str:
    """One line: whether the inversion was cached, and the times."""
    t = record["timings"]
    date = f" (DATE {t['date_s']:.2f} s)" if t.get("date_s") else ""
    return (f"edit '{record['prompt']}': inversion: {record['inversion']} ({t['inversion_s']:.2f} s), sampling "
            f"{t['sampling_s']:.2f} s{date}, total {t['total_s']:.2f} s; saved {record['output']}")
