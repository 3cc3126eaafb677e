"""The toy world: a deterministic renderer of flat coloured shapes, an OpenCV judge, and a tiny trained SD model."""

from .judge import Detection, evaluate, judge
from .world import (
    COLOURS,
    SHAPES,
    Scene,
    ToyObject,
    caption,
    parse_prompt,
    random_scene,
    render,
    single_object_prompts,
    two_object_prompts,
)

__all__ = [
    "COLOURS",
    "SHAPES",
    "Detection",
    "Scene",
    "ToyObject",
    "caption",
    "evaluate",
    "judge",
    "parse_prompt",
    "random_scene",
    "render",
    "single_object_prompts",
    "two_object_prompts",
]
