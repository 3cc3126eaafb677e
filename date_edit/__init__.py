"""date-edit: text-guided image editing and generation with edit-friendly DDPM inversion and DATE.

The Python API (heavy libraries load lazily, on first use)::

    from date_edit import load_backbone, load_image, build_scorer, edit, EditConfig, DateConfig
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_backbone": "date_edit.backbones",
    "Backbone": "date_edit.backbones",
    "BackboneError": "date_edit.backbones",
    "DateConfig": "date_edit.date",
    "DateHook": "date_edit.date",
    "parse_update_steps": "date_edit.date",
    "invert": "date_edit.inversion",
    "Inversion": "date_edit.inversion",
    "sample": "date_edit.sampling",
    "EditConfig": "date_edit.pipeline",
    "GenerateConfig": "date_edit.pipeline",
    "Result": "date_edit.pipeline",
    "edit": "date_edit.pipeline",
    "generate": "date_edit.pipeline",
    "reconstruct": "date_edit.pipeline",
    "invert_image": "date_edit.pipeline",
    "build_scorer": "date_edit.scorers",
    "load_image": "date_edit.imaging",
    "save_png": "date_edit.imaging",
    "to_pil": "date_edit.imaging",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    """Import public names on first use, so ``import date_edit`` stays cheap."""
    if name == "__version__":  # from the package metadata (pyproject.toml is the one place it is written)
        from .choices import version

        return version()
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'date_edit' has no attribute {name!r}")
