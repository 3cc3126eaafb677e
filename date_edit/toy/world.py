"""The toy world: a deterministic renderer of one to three flat shapes on a plain white background, with captions.

Images are 64x64 RGB by default. Colours are flat and far apart in hue; shapes are axis-aligned circles, squares
and upward-pointing triangles whose bounding box is ``size`` pixels wide and tall. Edges are antialiased by 4x
supersampling, and the judge (``date_edit.toy.judge``) is tested on exactly these images.

Captions: ``caption`` lists a scene's objects in the canonical order of ``COLOURS`` (then ``SHAPES``), so it is a
function of the scene's multiset of (colour, shape); ``phrase`` keeps a given order, the way a user types it
("a blue square and a red circle" describes the same scene as "a red circle and a blue square"). Three objects read
"a red circle, a blue square and a green triangle". The model is trained on captions in every order, and
``parse_prompt`` accepts any order and either list grammar ("a, b and c" or "a and b and c").
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np

from ..errors import excerpt

COLOURS: tuple[str, ...] = ("red", "yellow", "green", "blue", "purple")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Flat RGB, hues (degrees) about 0, 51, 134, 222, 285: at least 51 degrees apart.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (230, 200, 30),
    "green": (40, 170, 70),
    "blue": (30, 90, 230),
    "purple": (160, 40, 200),
}
# White, not grey: against white every palette colour is a drop in at least two channels, so two colours of one
# shape at one place share most of their difference from the background. Against the old grey (200) they were
# nearly orthogonal, and the toy autoencoder put "red circle here" closer to "blue circle elsewhere" than to "blue
# circle here" for 60% of colour pairs: a recolouring edit then moved the object (benchmarks/results/toy_edit.md).
BACKGROUND: tuple[int, int, int] = (255, 255, 255)  # saturation 0: the judge separates it by hue/saturation
IMAGE_SIZE = 64
MIN_SIZE, MAX_SIZE = 14, 26  # bounding-box side in pixels at 64x64
MARGIN = 2  # pixels kept free at the image border
GAP = 4  # pixels kept free between two objects' bounding boxes
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class ToyObject:
    """One flat shape: colour and shape names, centre ``(cx, cy)`` and bounding-box side ``size``, in 64-px units."""

    colour: str
    shape: str
    cx: float
    cy: float
    size: float

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}: use one of {', '.join(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}: use one of {', '.join(SHAPES)}")
        if self.size <= 0:
            raise ValueError(f"size must be positive, got {self.size}")

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Bounding box ``(x0, y0, x1, y1)`` in pixels of a 64-px image (x1/y1 exclusive)."""
        half = self.size / 2
        return (self.cx - half, self.cy - half, self.cx + half, self.cy + half)


@dataclass(frozen=True)
class Scene:
    """A toy image's content: one or more non-overlapping objects."""

    objects: tuple[ToyObject, ...]


def _sort_key(obj: ToyObject | tuple[str, str]) -> tuple[int, int]:
    colour, shape = (obj.colour, obj.shape) if isinstance(obj, ToyObject) else obj
    return (COLOURS.index(colour), SHAPES.index(shape))


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """Render ``scene`` as an ``(size, size, 3)`` uint8 RGB image (antialiased, deterministic)."""
    import cv2

    big = size * _SUPERSAMPLE
    scale = big / IMAGE_SIZE
    canvas = np.empty((big, big, 3), np.uint8)
    canvas[:] = BACKGROUND
    for obj in scene.objects:
        colour = PALETTE[obj.colour]
        x0, y0, x1, y1 = (v * scale for v in obj.box)
        if obj.shape == "circle":
            # Pixel i covers [i, i+1): a disc of diameter size*scale centred at cx*scale covers the box exactly.
            centre = (obj.cx * scale - 0.5, obj.cy * scale - 0.5)
            shift = 4
            c = (round(centre[0] * 2**shift), round(centre[1] * 2**shift))
            r = round((obj.size * scale / 2 - 0.5) * 2**shift)
            cv2.circle(canvas, c, r, colour, thickness=-1, lineType=cv2.LINE_8, shift=shift)
        else:
            if obj.shape == "square":
                pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            else:  # isosceles triangle, apex up, base = height = size
                pts = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
            # Polygon vertices on pixel corners map to pixel-centre coordinates minus half a pixel.
            arr = np.array([[(px - 0.5) * 16, (py - 0.5) * 16] for px, py in pts], np.int32)
            cv2.fillPoly(canvas, [arr], colour, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


EMPTY_CAPTION = "an empty white image"  # what the toy CLIP learns for a scene with no object (never a prompt)


def caption(scene: Scene) -> str:
    """Caption ``scene`` canonically: ``"a red circle"``, ``"a red circle and a blue square"`` (COLOURS order)."""
    if not scene.objects:
        raise ValueError("an empty scene has no caption")
    return prompt_for([(o.colour, o.shape) for o in scene.objects])


def phrase(objects: list[tuple[str, str]] | tuple[tuple[str, str], ...], and_chain: bool = False) -> str:
    """``(colour, shape)`` pairs in the given order as English: ``a x``, ``a x and a y``, ``a x, a y and a z``
    (``and_chain``: ``a x and a y and a z``)."""
    parts = [f"a {c} {s}" for c, s in objects]
    if not parts:
        raise ValueError("no objects to phrase")
    if and_chain or len(parts) == 1:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def prompt_for(objects: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    """The canonical caption of a list of ``(colour, shape)`` pairs (COLOURS, then SHAPES order)."""
    return phrase(sorted(objects, key=_sort_key))


_OBJ_RE = re.compile(r"^(?:a|an|one)\s+(\w+)\s+(\w+)$")
_LIST_SEP = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+")


def parse_prompt(prompt: str) -> list[tuple[str, str]]:
    """``"a red circle and a blue square"`` -> ``[("red", "circle"), ("blue", "square")]``, in the prompt's order
    (``"a, b and c"``, ``"a, b, and c"`` and ``"a and b and c"`` all read as lists); ValueError otherwise."""
    text = " ".join(prompt.strip().lower().rstrip(".").split())
    if not text:
        raise ValueError("empty prompt is not a toy-world prompt")
    out = []
    for part in _LIST_SEP.split(text):
        m = _OBJ_RE.match(part.strip())
        if not m or m.group(1) not in COLOURS or m.group(2) not in SHAPES:
            raise ValueError(
                f"{excerpt(prompt)} is not a toy-world prompt: expected 'a <colour> <shape>[ and a <colour> <shape>]' "
                f"with "
                f"colour in {COLOURS} and shape in {SHAPES}"
            )
        out.append((m.group(1), m.group(2)))
    return out


def single_object_prompts() -> list[str]:
    """The 15 one-object prompts, ``"a red circle"`` ... ``"a purple triangle"`` (COLOURS x SHAPES order)."""
    return [f"a {c} {s}" for c in COLOURS for s in SHAPES]


def two_object_prompts(order: str = "canonical") -> list[str]:
    """The 60 two-object evaluation prompts: two different colours AND two different shapes, unordered.

    ``order="canonical"`` lists the objects in COLOURS order (the historical set); ``"swapped"`` names the same 60
    scenes the other way round ("a blue square and a red circle").
    """
    if order not in ("canonical", "swapped"):
        raise ValueError(f"order must be 'canonical' or 'swapped', got {order!r}")
    out = []
    for c1, c2 in itertools.combinations(COLOURS, 2):
        for s1, s2 in itertools.permutations(SHAPES, 2):
            objs = [(c1, s1), (c2, s2)]
            out.append(phrase(objs if order == "canonical" else objs[::-1]))
    return out


def three_object_prompts() -> list[str]:
    """The 60 three-object evaluation prompts: three different colours and all three shapes, canonical order
    (10 colour triples x 6 shape assignments)."""
    out = []
    for cs in itertools.combinations(COLOURS, 3):
        for ss in itertools.permutations(SHAPES, 3):
            out.append(prompt_for(list(zip(cs, ss))))
    return out


def _boxes_apart(a: ToyObject, b: ToyObject, gap: float) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def random_scene(
    rng: np.random.Generator,
    n_objects: int,
    *,
    distinct: bool = False,
    min_size: int = MIN_SIZE,
    max_size: int = MAX_SIZE,
    max_tries: int = 1000,
) -> Scene:
    """A random scene of ``n_objects`` non-overlapping objects (integer centres/sizes); ``distinct``: all colours
    and all shapes differ (the two-object evaluation set's rule)."""
    if n_objects < 0 or (distinct and n_objects > len(SHAPES)):
        raise ValueError(f"n_objects must be 0..{len(SHAPES) if distinct else 'N'}, got {n_objects}")
    for _ in range(max_tries):
        if distinct:
            colours = rng.choice(len(COLOURS), n_objects, replace=False)
            shapes = rng.choice(len(SHAPES), n_objects, replace=False)
        else:
            colours = rng.integers(0, len(COLOURS), n_objects)
            shapes = rng.integers(0, len(SHAPES), n_objects)
        objects: list[ToyObject] = []
        for k in range(n_objects):
            size = int(rng.integers(min_size, max_size + 1))
            lo = MARGIN + size / 2
            hi = IMAGE_SIZE - MARGIN - size / 2
            # Integer box corners: centre at half-integers when size is odd.
            x0 = int(rng.integers(int(np.ceil(lo - size / 2)), int(np.floor(hi - size / 2)) + 1))
            y0 = int(rng.integers(int(np.ceil(lo - size / 2)), int(np.floor(hi - size / 2)) + 1))
            obj = ToyObject(COLOURS[colours[k]], SHAPES[shapes[k]], x0 + size / 2, y0 + size / 2, float(size))
            if all(_boxes_apart(obj, other, GAP) for other in objects):
                objects.append(obj)
            else:
                break
        if len(objects) == n_objects:
            return Scene(tuple(objects))
    raise RuntimeError(f"could not place {n_objects} objects without overlap in {max_tries} tries")
