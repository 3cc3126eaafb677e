"""The methods a run compares: their names, the ``@`` overrides a label may carry, and ``--sweep``'s variants.

``date-clip@rho=1.0@updates=20%`` is the DATE method with CLIP's objective, rho 1 and a fifth of the steps
updated; the edit suites also take ``@p2p``, ``@blend``, ``@mask=...``, ``@preset=NAME``, ``@editor=...`` and
``@source=given|auto|none`` (the item's own source prompt, the photo's caption, or none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from benchmarks.harness.checks import MAX_STEPS_FACTOR, method_slug, number
from benchmarks.suites.pie.data import check_preset, excerpt
from date_edit.date import DateConfig
from date_edit.errors import ConfigError

# per-method options of the edit suites (``fixed@p2p@mask=bench@preset=pie-ef-p2p``): name -> allowed values
EDIT_OPTIONS = {"p2p": ("on", "off", "default"), "blend": ("on", "off"), "mask": ("none", "auto", "bench", "default"),
                "preset": None, "editor": ("auto", "ddpm", "flowedit"), "source": ("given", "auto", "none")}

# name -> (DATE settings or None, objective scorer or None, universal guidance strength)
BASE_METHODS: dict[str, tuple[Optional[dict], Optional[str], float]] = {
    "fixed": (None, None, 0.0),
    "fixed-equal-compute": (None, None, 0.0),
    "date-clip": ({}, "clip", 0.0),
    "date-ir": ({}, "imagereward", 0.0),
    "date-clip-ir": ({}, "clip=1,imagereward=1", 0.0),
    "date-min-concept": ({}, "min-concept", 0.0),
    "date-random": ({"direction": "random"}, "clip", 0.0),
    "date-noisy": ({"objective": "xt"}, "clip", 0.0),
    "date-unnormalized": ({"normalize": False}, "clip", 0.0),
    "ug": (None, "clip", 1.0),
}


@dataclass(frozen=True)
class Method:
    """A resolved method: its label, DATE config, objective spec and Universal Guidance strength."""

    label: str
    base: str
    date: Optional[DateConfig]
    scorer: Optional[str]
    ug: float
    steps_factor: float = 1.0  # fixed-equal-compute: more steps, set from a measured DATE/plain ratio
    edit: tuple[tuple[str, str], ...] = ()  # edit suites: (option, value) pairs from EDIT_OPTIONS

    def option(self, name: str) -> Optional[str]:
        """The value of an edit option this method sets (``@p2p`` -> ``on``), or None."""
        return dict(self.edit).get(name)

    @property
    def slug(self) -> str:
        """The label as a folder name (``images/<slug>``, ``reference/<slug>``)."""
        return method_slug(self.label)


def parse_method(text: str, default_updates: str = "10%") -> Method:
    """``date-clip@rho=1.0@updates=20%`` -> Method (unknown names and keys are one-line errors)."""
    base, *overrides = text.strip().split("@")
    if base not in BASE_METHODS:
        raise ConfigError(None, f"unknown method {excerpt(base)}: known are {', '.join(BASE_METHODS)}")
    date_kw, scorer, ug = BASE_METHODS[base]
    date_kw = dict(date_kw) if date_kw is not None else None
    factor = 1.0
    edit: dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in EDIT_OPTIONS:
            edit[key] = _edit_option(text, key, value)
        elif key == "rho" and date_kw is not None:
            date_kw["rho"] = number(text, key, value)
        elif key == "updates" and date_kw is not None:
            date_kw["update_steps"] = value
        elif key == "mode" and date_kw is not None:
            date_kw["mode"] = value
        elif key == "ug":
            ug = number(text, key, value)
        elif key == "steps-factor":
            factor = number(text, key, value, MAX_STEPS_FACTOR)
        else:
            raise ConfigError(None, f"method {excerpt(text)}: cannot set {excerpt(key)} here")
    date = None
    if date_kw is not None:
        date = DateConfig(**({"update_steps": default_updates} | date_kw))
    return Method(label=text.strip(), base=base, date=date, scorer=scorer, ug=ug, steps_factor=factor,
                  edit=tuple(sorted(edit.items())))


def _edit_option(text: str, key: str, value: str) -> str:
    """One checked ``@key=value`` edit option (``@p2p`` alone means ``on``)."""
    value = value.strip() or ("on" if key in ("p2p", "blend") else "")
    if key == "preset":
        check_preset(value)
    elif value not in EDIT_OPTIONS[key]:
        raise ConfigError(None, f"method {excerpt(text)}: {key} takes {', '.join(EDIT_OPTIONS[key])}, got "
                                f"{excerpt(value)}")
    return value


def expand_sweep(methods: list[str], sweep: Optional[str]) -> list[str]:
    """Add ``name@key=v`` for each DATE method and each sweep value (``rho=0.25,0.5`` or ``updates=10%,20%``)."""
    if not sweep:
        return methods
    key, _, values = sweep.partition("=")
    out = list(methods)
    for m in methods:
        if BASE_METHODS.get(m.split("@")[0], (None,))[0] is not None:
            out += [f"{m}@{key}={v}" for v in values.split(",") if f"{m}@{key}={v}" not in out]
    return out
