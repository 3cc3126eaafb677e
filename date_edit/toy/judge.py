"""The toy world's judge: OpenCV colour segmentation in HSV, contours and shape classification (no learning).

Each saturated pixel is given the palette colour nearest in hue; each colour's mask is closed (3x3) and split
into contours. A contour's shape comes from how well it fills each shape's minimal enclosing figure:
``area / minEnclosingCircle`` (circle 1.0, square 0.64, triangle 0.41), ``area / minAreaRect`` (square 1.0, circle
0.79, triangle 0.5), ``area / minEnclosingTriangle`` (triangle 1.0, circle 0.60, square 0.5). Each fit is rescaled so
that its own shape's ideal is 1 and the best other shape's ideal is 0, and the largest rescaled fit wins: a lumpy
generated circle fills its bounding rectangle more than an ideal one (0.83 rather than 0.79), which a raw argmax
would call a square. Rotation-invariant, and tolerant of the soft edges and slightly noisy colours of a diffusion
model's output. Blobs below ``MIN_AREA``, ragged blobs (best raw fit below ``MIN_FIT``: tinted background halos)
and weakly saturated blobs (median saturation below ``MIN_OBJECT_SATURATION``) are not objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import BACKGROUND, COLOURS, PALETTE, parse_prompt

MIN_SATURATION = 70  # of 255: the white background has 0; half-covered edge pixels of every palette colour exceed ~90
MIN_VALUE = 50  # of 255: very dark pixels have unreliable hue
MIN_AREA = 60  # pixels at 64x64: smaller blobs are specks (the smallest toy object, a 14-px triangle, has ~98)
MIN_FIT = 0.45  # a real object, even a lumpy generated one, fills one of its enclosing figures at least this well
MIN_OBJECT_SATURATION = 120  # of 255, median over the blob: palette colours have ~195-220, tinted backgrounds ~50-80
# Each fit's value for the best *other* ideal shape: the point where the fit stops being evidence for its shape.
_FIT_BASELINE = {"circle": 0.637, "square": 0.785, "triangle": 0.605}


@dataclass(frozen=True)
class Detection:
    """One object the judge found: colour and shape names, box ``(x0, y0, x1, y1)`` (x1/y1 exclusive), pixel area."""

    colour: str
    shape: str
    box: tuple[int, int, int, int]
    area: float


def _hue_deg(rgb: tuple[int, int, int]) -> float:
    import cv2

    hsv = cv2.cvtColor(np.array([[rgb]], np.uint8), cv2.COLOR_RGB2HSV_FULL)
    return float(hsv[0, 0, 0]) * 360.0 / 256.0


_REF_HUES = np.array([_hue_deg(PALETTE[c]) for c in COLOURS])  # degrees


def colour_masks(image: np.ndarray) -> dict[str, np.ndarray]:
    """Per-colour uint8 masks (0/255) of an ``(H, W, 3)`` uint8 RGB image: saturated pixels by nearest palette hue."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV_FULL)
    hue = hsv[..., 0].astype(np.float32) * (360.0 / 256.0)
    sat, val = hsv[..., 1], hsv[..., 2]
    diff = np.abs(hue[..., None] - _REF_HUES[None, None, :])
    diff = np.minimum(diff, 360.0 - diff)  # circular hue distance
    nearest = np.argmin(diff, axis=-1)
    saturated = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    kernel = np.ones((3, 3), np.uint8)  # symmetric, so closing does not shift boxes
    out = {}
    for k, name in enumerate(COLOURS):
        mask = ((nearest == k) & saturated).astype(np.uint8) * 255
        # Closing fills pinholes of noisy generated colours; specks are dropped later by area.
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        out[name] = mask
    return out


def shape_scores(contour: np.ndarray) -> dict[str, float]:
    """How well a contour fills each shape's minimal enclosing figure (1.0 = a perfect fit)."""
    import cv2

    area = float(cv2.contourArea(contour))
    pts = contour.astype(np.float32)
    _, radius = cv2.minEnclosingCircle(pts)
    (_, (w, h), _) = cv2.minAreaRect(pts)
    tri_area, _ = cv2.minEnclosingTriangle(pts)
    eps = 1e-6
    return {
        "circle": area / (np.pi * radius**2 + eps),
        "square": area / (w * h + eps),
        "triangle": area / (float(tri_area) + eps),
    }


def classify_shape(scores: dict[str, float]) -> str:
    """The shape whose fit, rescaled between the best other shape's ideal (0) and its own (1), is largest."""
    return max(scores, key=lambda k: (scores[k] - _FIT_BASELINE[k]) / (1.0 - _FIT_BASELINE[k]))


def judge(image: np.ndarray, min_area: int = MIN_AREA) -> list[Detection]:
    """Detect the toy objects of an ``(H, W, 3)`` uint8 RGB image (any size; ``min_area`` is in 64x64 pixels)."""
    import cv2

    scale2 = (image.shape[0] * image.shape[1]) / (64 * 64)
    masks = colour_masks(image)  # validates the image
    sat = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV_FULL)[..., 1]
    found = []
    for colour, mask in masks.items():
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for cnt in contours:
            pixel_area = float(np.count_nonzero(_fill(mask.shape, cnt) & mask))
            if pixel_area < min_area * scale2 or len(cnt) < 3:
                continue
            scores = shape_scores(cnt)
            if max(scores.values()) < MIN_FIT:
                continue
            filled = _fill(mask.shape, cnt) > 0
            if np.median(sat[filled & (mask > 0)]) < MIN_OBJECT_SATURATION:
                continue
            shape = classify_shape(scores)
            x, y, w, h = cv2.boundingRect(cnt)
            found.append(Detection(colour, shape, (int(x), int(y), int(x + w), int(y + h)), pixel_area))
    found.sort(key=lambda d: (d.box[0], d.box[1]))
    return found


def _fill(shape: tuple[int, int], contour: np.ndarray) -> np.ndarray:
    import cv2

    canvas = np.zeros(shape, np.uint8)
    cv2.drawContours(canvas, [contour], -1, 255, thickness=-1)
    return canvas


def evaluate(image: np.ndarray, prompt: str) -> dict:
    """Judge ``image`` against a toy prompt: ``objects``, ``per_object`` hits, ``correct`` (exact, nothing extra),
    and ``both_correct`` for two-object prompts."""
    wanted = parse_prompt(prompt)
    dets = judge(image)
    remaining = list(dets)
    per_object = []
    for colour, shape in wanted:
        hit = next((d for d in remaining if d.colour == colour and d.shape == shape), None)
        per_object.append(hit is not None)
        if hit is not None:
            remaining.remove(hit)
    correct = all(per_object) and not remaining
    out = {"objects": dets, "per_object": per_object, "correct": correct, "n_extra": len(remaining)}
    if len(wanted) == 2:
        out["both_correct"] = correct
    return out


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


__all__ = ["BACKGROUND", "Detection", "box_iou", "classify_shape", "colour_masks", "evaluate", "judge", "shape_scores"]
