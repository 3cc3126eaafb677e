"""The scenes, edits and measures of the two-object toy edit study (:mod:`benchmarks.studies.toy_edit_controls`):
which scenes each split holds, what each edit asks for, the user mask, and how one output is judged (right, in
place, the other object kept, the background unchanged)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from date_edit.toy import world
from date_edit.toy.judge import box_iou, evaluate

SPLIT_SEEDS = {"val": 9100, "test": 9300}
KINDS = ("colour", "shape")
DEFAULT_CONTROLS = ("none", "p2p", "mask-auto", "mask-user", "p2p+mask-auto", "p2p+mask-user")
SWEEP_CONTROLS = ("none", "p2p", "mask-auto", "mask-user")
SWEEP_SKIPS = ("25%", "36%", "50%")
SWEEP_CFGS = (7.5, 15.0)
IN_PLACE_IOU = 0.5  # edited object: IoU of its detected box with its source box
OTHER_KEPT_IOU = 0.7  # other object: IoU of its detected box with its source box
BG_MARGIN = 2  # px: the source boxes (and the edited object's new box) are dilated this much before masking out
BG_THRESHOLD = 8.0  # background MAD (0-255) at or below which the background counts as kept
USER_MASK_DILATE = 3  # px: the user mask is the edited object's source box dilated this much (a rectangle)

METRICS = {
    "right": "the judge detects an object with the edited object's target colour and shape (anywhere)",
    "correct": "evaluate(out, target)['correct']: the judge finds exactly the two target objects, nothing extra",
    "in_place": f"IoU of the best-matching detection of the target object (highest IoU among detections of that "
                f"colour and shape) with the edited object's source box >= {IN_PLACE_IOU}",
    "other_kept": f"a detection with the other object's colour and shape has IoU >= {OTHER_KEPT_IOU} with its "
                  f"source box",
    "background_mad": f"mean |out - input| (0-255, all 3 channels) over the pixels outside both objects' source "
                      f"boxes dilated {BG_MARGIN} px and outside the edited object's detected box (the best-matching "
                      f"detection, if any) dilated {BG_MARGIN} px",
    "clip_target": "held-out toy CLIP (clip:toy-heldout, never a DATE objective) of the output with the target prompt",
    "success": "correct and in_place and other_kept and background_mad <= the threshold (correct implies right)",
    "outside_mask_exact": "mask-user runs: fraction of the pixels outside the user mask (the dilated source box) "
                          "whose RGB equals the input's exactly; mask-auto runs: the same outside result.mask == 0",
}


@dataclass(frozen=True)
class Case:
    """One source scene and its two edits."""

    index: int
    scene: world.Scene
    caption: str
    order: tuple[world.ToyObject, ...]  # the objects in the caption's order
    edited: int  # position of the edited object in ``order``
    colour_target: tuple[str, str]  # (colour, shape) the edited object becomes
    shape_target: tuple[str, str]

    @property
    def edited_obj(self) -> world.ToyObject:
        return self.order[self.edited]

    @property
    def other_obj(self) -> world.ToyObject:
        return self.order[1 - self.edited]

    def target(self, kind: str) -> tuple[str, str]:
        """The edited object's (colour, shape) after the edit of ``kind``."""
        return self.colour_target if kind == "colour" else self.shape_target

    def prompt(self, kind: str) -> str:
        """The target prompt: the caption with the edited object changed, in the caption's order."""
        pairs = [(o.colour, o.shape) for o in self.order]
        pairs[self.edited] = self.target(kind)
        return world.phrase(pairs)


def _caption_order(scene: world.Scene) -> tuple[world.ToyObject, ...]:
    return tuple(sorted(scene.objects, key=lambda o: (world.COLOURS.index(o.colour), world.SHAPES.index(o.shape))))


def make_cases(split: str, n: int) -> list[Case]:
    """The first ``n`` scenes of ``split`` (a prefix: scene i is the same for every ``n``) with their edits."""
    rng = np.random.default_rng(SPLIT_SEEDS[split])
    cases = []
    for i in range(n):
        scene = world.random_scene(rng, 2, distinct=True)
        order = _caption_order(scene)
        edited = i % 2
        obj = order[edited]
        free_colours = [c for c in world.COLOURS if c not in {o.colour for o in order}]
        new_colour = free_colours[int(rng.integers(len(free_colours)))]
        (new_shape,) = [s for s in world.SHAPES if s not in {o.shape for o in order}]
        cases.append(Case(i, scene, world.caption(scene), order, edited, (new_colour, obj.shape),
                          (obj.colour, new_shape)))
    return cases


def _box_mask(box, margin: int, size: int = world.IMAGE_SIZE) -> np.ndarray:
    """Boolean (size, size) mask of ``box`` (x0, y0, x1, y1; x1/y1 exclusive) grown by ``margin`` px, clipped."""
    x0, y0, x1, y1 = box
    m = np.zeros((size, size), bool)
    m[max(0, int(np.floor(y0)) - margin):min(size, int(np.ceil(y1)) + margin),
      max(0, int(np.floor(x0)) - margin):min(size, int(np.ceil(x1)) + margin)] = True
    return m


def user_mask(case: Case, dilate: int = USER_MASK_DILATE) -> np.ndarray:
    """The user's mask: the edited object's source box dilated ``dilate`` px, boolean (64, 64), True = may change."""
    return _box_mask(case.edited_obj.box, dilate)


def measure(out: np.ndarray, source: np.ndarray, case: Case, kind: str,
            bg_threshold: float = BG_THRESHOLD) -> dict:
    """The judge's and the pixels' verdict on one edited image ``out`` (64x64x3 uint8) of ``source`` (see METRICS)."""
    verdict = evaluate(out, case.prompt(kind))
    dets = verdict["objects"]
    target = case.target(kind)
    edited, other = case.edited_obj, case.other_obj
    hits = [d for d in dets if (d.colour, d.shape) == target]
    best = max(hits, key=lambda d: box_iou(edited.box, d.box), default=None)
    iou = box_iou(edited.box, best.box) if best else 0.0
    other_iou = max([box_iou(other.box, d.box) for d in dets if (d.colour, d.shape) == (other.colour, other.shape)],
                    default=0.0)
    excluded = _box_mask(edited.box, BG_MARGIN) | _box_mask(other.box, BG_MARGIN)
    if best is not None:
        excluded |= _box_mask(best.box, BG_MARGIN)
    diff = np.abs(out.astype(np.int16) - source.astype(np.int16))[~excluded]
    mad = float(diff.mean()) if diff.size else 0.0
    right, in_place, other_kept = best is not None, iou >= IN_PLACE_IOU, other_iou >= OTHER_KEPT_IOU
    return {"right": right, "correct": bool(verdict["correct"]), "in_place": bool(in_place), "iou": round(iou, 3),
            "other_kept": bool(other_kept), "other_iou": round(other_iou, 3), "background_mad": round(mad, 3),
            "success": bool(verdict["correct"] and in_place and other_kept and mad <= bg_threshold),
            "detections": [[d.colour, d.shape, list(d.box)] for d in dets]}
