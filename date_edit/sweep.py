"""A sweep: one photo and one prompt edited over a small grid of skip x target CFG (and DATE off / on), so the
trade-off between following the prompt and keeping the photo can be seen and a cell picked.

One inversion serves every cell (the cells differ only in where resampling starts, its CFG and DATE, none of which
the inversion depends on). Each cell is scored by a held-out evaluator (CLIP to the target prompt, never DATE's
own objective: :func:`default_evaluator`) and by its distance to the source: the mean absolute pixel difference on
the 0-255 scale and the PSNR, both on the 8-bit images a PNG holds. ``date-edit sweep`` and the web app's Sweep tab
both call :func:`sweep` and :func:`grid_image`, so they give the same grid for the same settings.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from .errors import ConfigError, NonFiniteError, excerpt

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .backbones import Backbone
    from .inversion import Inversion
    from .pipeline import EditConfig

MAX_CELLS = 48  # a sweep is a glance at a trade-off, not a benchmark: 48 edits at most
DATE_CHOICES = {"off": (False,), "on": (True,), "both": (False, True)}  # --date of `date-edit sweep`


def parse_skips(text: str | Sequence) -> tuple[str, ...]:
    """``"20%,36%,50%"`` (or a sequence) as skip values an :class:`~date_edit.pipeline.EditConfig` takes.

    Raises:
        ConfigError: naming ``skips``: an empty list or an item that is neither a count nor a percentage.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    items = [s for s in items if s]
    if not items:
        raise ConfigError("skips", f"{excerpt(text)} names no skip: give a comma-separated list such as 20%,36%,50%")
    for item in items:
        number = item[:-1] if item.endswith("%") else item
        try:
            ok = 0 <= float(number) <= 100 if item.endswith("%") else int(number) >= 0  # nan% and inf% fail too
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError("skips", f"{excerpt(item)} is not a step count (36) or a percentage from 0% to 100% "
                                       "(36%)")
    return tuple(dict.fromkeys(items))


def parse_cfgs(text: str | Sequence) -> tuple[float, ...]:
    """``"7.5,15"`` (or a sequence) as target CFG scales.

    Raises:
        ConfigError: naming ``cfgs``: an empty list, or an item that is not a finite number.
    """
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    items = [s for s in items if str(s).strip()]
    if not items:
        raise ConfigError("cfgs", f"{excerpt(text)} names no scale: give a comma-separated list such as 7.5,15")
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError("cfgs", f"{excerpt(item)} is not a finite number")
        values.append(value)
    return tuple(dict.fromkeys(values))


def default_evaluator(model: str) -> str:
    """The held-out scorer a sweep reports for ``model``: the toy world's second CLIP (never a DATE objective)
    for ``toy``, the random-weight ``clip:tiny`` for the other offline models, CLIP ViT-L/14 otherwise."""
    from .choices import OFFLINE_MODELS

    if model == "toy":
        return "clip:toy-heldout"
    return "clip:tiny" if model in OFFLINE_MODELS else "clip"


@dataclass
class Cell:
    """One edit of the grid and its numbers."""

    skip: str  # as given ("36%")
    skip_steps: int  # the resolved step count
    cfg_target: float
    date: bool
    clip: float  # the evaluator's score of the edit against the target prompt
    mean_abs_diff: float  # mean |edit - source| over pixels and channels, 0-255 (8-bit images)
    psnr_db: float  # PSNR of the edit against the source (8-bit images)
    update_steps: list[int]
    date_scores: list[float]
    image: "torch.Tensor" = field(repr=False, default=None)  # (1, 3, H, W) in [0, 1]
    seconds: float = 0.0  # wall time of the cell's edit (not part of to_dict: numbers only)

    def to_dict(self) -> dict:
        """The cell's settings and numbers (JSON-ready; no image, no time)."""
        return {"skip": self.skip, "skip_steps": self.skip_steps, "cfg_target": self.cfg_target, "date": self.date,
                "clip": self.clip, "mean_abs_diff": self.mean_abs_diff, "psnr_db": self.psnr_db,
                "update_steps": list(self.update_steps), "date_scores": list(self.date_scores)}


@dataclass
class Sweep:
    """A sweep's cells (skip-major, then CFG, then DATE off before on), its settings and times."""

    cells: list[Cell]
    prompt: str
    source_prompt: str
    evaluator: str
    config: dict  # the base EditConfig, resolved (skip and cfg_target are each cell's)
    timings: dict  # inversion_s, total_s, cells_s
    inversion: Optional["Inversion"] = field(repr=False, default=None)
    inversion_cached: bool = False

    def to_dict(self) -> dict:
        """The record ``date-edit sweep --json`` writes and the app shows."""
        return {"prompt": self.prompt, "source_prompt": self.source_prompt, "evaluator": self.evaluator,
                "steps": self.config["steps"], "cfg_source": self.config["cfg_source"], "seed": self.config["seed"],
                "method": self.config["method"], "date": self.config["date"], "mask": self.config["mask"],
                "p2p": self.config["p2p"], "inversion": "cached" if self.inversion_cached else "computed",
                "cells": [c.to_dict() for c in self.cells], "timings": dict(self.timings)}


def _quantised(images: "torch.Tensor") -> "torch.Tensor":
    return (images.detach().float().cpu().clamp(0, 1) * 255.0).round()


def distances(image: "torch.Tensor", source: "torch.Tensor") -> tuple[float, float]:
    """``(mean absolute difference on 0-255, PSNR in dB)`` between two ``(1, 3, H, W)`` images in [0, 1], both
    taken as the 8-bit images a PNG holds."""
    from .metrics import psnr_db

    a, b = _quantised(image), _quantised(source)
    return float((a - b).abs().mean()), psnr_db(a / 255.0, b / 255.0)


def sweep(backbone: "Backbone", pixels: "torch.Tensor", prompt: str, *, source_prompt: str = "",
          skips: Sequence = ("20%", "36%", "50%"), cfgs: Sequence[float] = (7.5, 15.0),
          dates: Sequence[bool] = (False,),
          base: Optional["EditConfig"] = None, scorer=None, evaluator, evaluator_name: str = "",
          mask: Optional["torch.Tensor"] = None, inversion: Optional["Inversion"] = None,
          progress: Optional[Callable[[str, int, int], None]] = None) -> Sweep:
    """Edit ``pixels`` ``(1, 3, H, W)`` towards ``prompt`` for every skip x CFG x DATE on/off, inverting once.

    Args:
        base: steps, CFG source, seed, method, the DATE settings of the DATE cells and the structure controls
            (unset ones: the model's defaults); each cell replaces its skip, its target CFG and (DATE off) its DATE.
        scorer: DATE's objective (needed when ``dates`` holds True).
        evaluator: a scorer ``(images, prompts) -> (B,)`` reported per cell; ``evaluator_name`` names it.
        inversion: an inversion of ``pixels`` with ``base``'s steps, CFG source, seed and ``source_prompt`` (the
            app's cache); None: computed here (DDPM editing; FlowEdit inverts nothing).
        progress: ``progress(phase, i, n)``, phase ``"cell k/n: invert"`` or ``"cell k/n: edit"``.

    Raises:
        ConfigError: an empty or oversized grid, or a cell whose settings the edit refuses.
        NonFiniteError: a cell's output is NaN or infinite (the sweep stops at it).
    """
    import torch

    from .date import parse_update_steps
    from .pipeline import EditConfig, edit, invert_image

    from .controls import with_defaults

    # the model's defaults for what base leaves unset, its default controls made concrete (the record says what ran)
    base = with_defaults(backbone, base or EditConfig(), [source_prompt], user_mask=mask is not None)
    base = base.resolved(backbone)
    skips, cfgs, dates = parse_skips(skips), parse_cfgs(cfgs), tuple(dict.fromkeys(bool(d) for d in dates))
    if not dates:
        raise ConfigError("dates", "is empty: give DATE off, on or both")
    if len(skips) * len(cfgs) * len(dates) > MAX_CELLS:
        raise ConfigError("skips", f"x cfgs x dates is {len(skips) * len(cfgs) * len(dates)} cells, over "
                                   f"{MAX_CELLS}: a sweep is a glance; use fewer values")
    if True in dates and base.date is None:
        raise ConfigError("dates", "asks for DATE cells but base.date is None; give a DateConfig")
    plans = [(s, c, d, replace(base, skip=s, cfg_target=c, date=base.date if d else None))
             for s in skips for c in cfgs for d in dates]  # each replace() checks its cell (a skip past the steps)
    for _, _, use_date, config in plans:  # an update step past a cell's last step fails now, not mid-sweep
        if use_date:
            parse_update_steps(config.date.update_steps, config.run_steps())
    started = time.perf_counter()
    if base.resolved_method(backbone) != "ddpm":
        inversion = None  # FlowEdit inverts nothing
    cached = inversion is not None
    if inversion is None and base.resolved_method(backbone) == "ddpm":
        inversion = invert_image(backbone, pixels, source_prompt=source_prompt, steps=base.steps,
                                 cfg_source=base.cfg_source, seed=base.seed,
                                 progress=(lambda i, n: progress("invert", i, n)) if progress else None)
    inversion_s = time.perf_counter() - started
    cells = []
    for k, (skip, cfg, use_date, config) in enumerate(plans):
        t0 = time.perf_counter()
        tag = f"cell {k + 1}/{len(plans)}"
        result = edit(backbone, pixels, prompt, source_prompt=source_prompt, config=config,
                      scorer=scorer if use_date else None, inversion=inversion, mask=mask,
                      progress=(lambda phase, i, n, tag=tag: progress(f"{tag}: {phase}", i, n)) if progress else None)
        with torch.no_grad():
            score = float(evaluator(result.images, [prompt]).float()[0])
        check_finite_cell(result, score, skip, cfg, use_date)
        mad, psnr = distances(result.images, pixels)
        cells.append(Cell(skip=skip, skip_steps=config.resolved_skip(), cfg_target=cfg, date=use_date, clip=score,
                          mean_abs_diff=mad, psnr_db=psnr, update_steps=list(result.update_steps),
                          date_scores=[float(s) for s in (result.trace.scores if result.trace else [])],
                          image=result.images, seconds=time.perf_counter() - t0))
    timings = {"inversion_s": 0.0 if cached else inversion_s, "cells_s": [c.seconds for c in cells],
               "total_s": time.perf_counter() - started}
    return Sweep(cells=cells, prompt=prompt, source_prompt=source_prompt, evaluator=evaluator_name,
                 config=base.to_dict() | {"method": base.resolved_method(backbone)}, timings=timings,
                 inversion=inversion, inversion_cached=cached)


def check_finite_cell(result, score: float, skip: str, cfg: float, use_date: bool) -> None:
    """Refuse a cell whose output latents, image or evaluator score are NaN or infinite (a CFG of 1e308, a DATE
    radius of 1e30), as ``edit`` refuses such an edit: the sweep stops there and writes nothing.

    Raises:
        NonFiniteError: naming the cell and what to try.
    """
    import torch

    finite = (bool(torch.isfinite(result.latents.float()).all()) and bool(torch.isfinite(result.images.float()).all())
              and math.isfinite(score))
    if not finite:
        raise NonFiniteError(f"the cell skip {skip}, CFG {cfg:g}{' + DATE' if use_date else ''} has non-finite "
                             "values (NaN/Inf) in its output; nothing was written. Try smaller --cfgs, a smaller "
                             "--rho (or --rho-relative), or --dtype fp32")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fitted(pixels: "torch.Tensor", side: int) -> "Image.Image":
    """The first image of ``pixels`` scaled to fit ``side`` x ``side`` (nearest neighbour: a 64 px toy image
    stays sharp)."""
    from PIL import Image

    from .outputs import to_pil

    image = to_pil(pixels)[0]
    scale = side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.NEAREST)


def grid_image(result: Sweep, source: "torch.Tensor", cell_px: int = 160) -> "Image.Image":
    """The sweep as one labelled image: the source in the first column, then a row per skip and a column per CFG
    (x DATE off/on); under each edit its evaluator score, mean absolute difference to the source and PSNR."""
    from PIL import Image, ImageDraw

    skips = list(dict.fromkeys(c.skip for c in result.cells))
    columns = list(dict.fromkeys((c.cfg_target, c.date) for c in result.cells))
    label_w, head_h, text_h = 96, 24, 34
    width = label_w + cell_px * (len(columns) + 1)
    canvas = Image.new("RGB", (width, head_h + (cell_px + text_h) * len(skips)), "white")
    draw, font = ImageDraw.Draw(canvas), _font(12)
    draw.text((label_w + 4, 6), "source", fill="black", font=font)
    canvas.paste(_fitted(source, cell_px), (label_w, head_h))
    for j, (cfg, date) in enumerate(columns, start=1):
        draw.text((label_w + j * cell_px + 4, 6), f"CFG {cfg:g}{' + DATE' if date else ''}", fill="black", font=font)
    for i, skip in enumerate(skips):
        y = head_h + i * (cell_px + text_h)
        steps = next(c.skip_steps for c in result.cells if c.skip == skip)
        draw.text((4, y + 4), f"skip {skip}\n({steps} steps)", fill="black", font=font)
        for j, (cfg, date) in enumerate(columns, start=1):
            cell = next(c for c in result.cells if c.skip == skip and (c.cfg_target, c.date) == (cfg, date))
            x = label_w + j * cell_px
            canvas.paste(_fitted(cell.image, cell_px), (x, y))
            draw.text((x + 4, y + cell_px + 2), f"CLIP {cell.clip:.3f}\ndiff {cell.mean_abs_diff:.1f}  "
                                                f"{cell.psnr_db:.1f} dB", fill="black", font=font)
    return canvas
