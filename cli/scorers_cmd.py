"""``date-edit scorers`` (list the registered scorers) and ``date-edit score`` (score existing images).

Register with ``main.add_command(scorers)`` and ``main.add_command(score)``. Heavy imports happen inside the
command bodies, so importing this module costs nothing beyond click.
"""

from __future__ import annotations

import json
from typing import Optional

import click

from .options import checked, device_option
from .running import run_command, say


def _finite(value: float) -> Optional[float]:
    """JSON has no NaN/inf: those become null."""
    return value if value == value and abs(value) != float("inf") else None


def _yes_no(value: Optional[bool]) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _cached(info) -> Optional[bool]:
    """The registry's cache probe, never failing the listing."""
    try:
        value = info.cached()
    except Exception:
        return None
    return None if value is None else bool(value)


@click.command("scorers")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array on stdout.")
def scorers(as_json: bool) -> None:
    """List every registered scorer: differentiable, backend, default weights, whether those are cached.

    \b
    Use one as --scorer NAME, NAME:VARIANT (e.g. clip:tiny, imagereward:tiny) or a weighted sum
    'clip=1,imagereward=0.5'. Every built-in scorer has a ':tiny' variant with random weights (offline, for tests).
    """
    def body() -> None:
        from date_edit.scorers import available_scorers

        rows = [
            {"name": info.name, "differentiable": bool(info.differentiable), "backend": info.backend,
             "default_weights": info.default_weights, "cached": _yes_no(_cached(info))}
            for info in sorted(available_scorers().values(), key=lambda i: i.name)
        ]
        if as_json:
            click.echo(json.dumps(rows))
            return
        header = ("name", "differentiable", "cached", "backend", "default weights")
        table = [header] + [(r["name"], _yes_no(r["differentiable"]), r["cached"], r["backend"], r["default_weights"])
                            for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header) - 1)]
        for row in table:
            click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + str(row[-1]))

    run_command(body)


def _longer_side(path: str) -> int:
    """The stored image's longer side (orientation does not change it); 64 if unreadable (load_image says why)."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            return max(im.size)
    except Exception:
        return 64


@click.command("score")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--prompt", "-p", required=True, help="The text every image is scored against.")
@click.option("--scorer", "-s", default="clip", show_default=True,
              help="A registered scorer (see `date-edit scorers`), NAME:VARIANT, or a weighted sum "
                   "'clip=1,imagereward=0.5'.")
@click.option("--size", type=int, default=None, callback=checked("check_size"),
              help="Resize the longer side to this many pixels before scoring (default: score the image as stored; "
                   "at least 64, size x size within 40,000,000 pixels).")
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every image's score on stdout.")
def score(images: tuple[str, ...], prompt: str, scorer: str, size: Optional[int], device: str, as_json: bool) -> None:
    """Score existing IMAGES against --prompt with a scorer (higher is better): one line per image."""
    def body() -> None:
        import torch

        from date_edit.backbones import resolve_device
        from date_edit.imaging import load_image
        from date_edit.scorers import build_scorer

        loaded = [load_image(path, size=size or _longer_side(path), multiple=1, resize="fit") for path in images]
        for item in loaded:
            for note in item.notes:
                say(f"note: {item.source_path}: {note}")
        target = resolve_device(device)
        built = build_scorer(scorer, device=target)
        parts = dict(getattr(built, "components", lambda: {})())
        results = []
        with torch.no_grad():
            for item in loaded:
                pixels = item.pixels.to(target)
                value = float(built(pixels, [prompt]).float()[0])
                record = {"image": item.source_path, "score": _finite(value),
                          "processed_size": list(item.processed_size)}
                if record["score"] is None:
                    say(f"warning: {item.source_path}: the score is not finite ({value})")
                if len(parts) > 1:
                    record["components"] = {name: _finite(float(s(pixels, [prompt]).float()[0]))
                                            for name, s in parts.items()}
                results.append(record)
        if as_json:
            click.echo(json.dumps({"scorer": built.name, "prompt": prompt, "size": size, "device": str(target),
                                   "results": results}))
            return
        for record in results:
            value = "nan" if record["score"] is None else f"{record['score']:.6g}"
            extra = "".join(f"\t{name}={v if v is None else format(v, '.6g')}"
                            for name, v in record.get("components", {}).items())
            click.echo(f"{value}\t{record['image']}{extra}")

    run_command(body)
