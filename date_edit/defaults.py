"""One source of an edit's defaults: what each setting left unset (None) in an
:class:`~date_edit.edit_config.EditConfig` becomes for a given model.

:func:`resolve_edit_config` is what :func:`date_edit.pipeline.edit` calls, and so what the Python API, ``date-edit
edit``, ``date-edit batch`` and the benchmark harness all resolve through. The rules:

* the edit method: ``auto`` is FlowEdit on FLUX (no true CFG for DDPM editing to use), DDPM editing elsewhere;
* DDPM editing (edit-friendly inversion, any family): the paper's 100 steps, skip 36%, CFG 3.5 -> 15, the target
  CFG 7.5 instead when a structure control (a mask or Prompt-to-Prompt) is asked for;
* FlowEdit: its published settings for the family (:data:`FLOWEDIT_DEFAULTS`); given ``steps`` without ``skip``,
  the published share of skipped steps;
* the structure controls (``EditConfig.mask`` and ``.p2p`` left at :data:`MODEL_DEFAULT`): Prompt-to-Prompt where
  the model has cross-attention and the edit is DDPM editing; an automatic mask (DiffEdit) when the edit has a source
  prompt (given, or captioned: :mod:`date_edit.captioning`), a user mask when one is passed, and without either
  :data:`DEFAULT_MASK_WITHOUT_SOURCE`; ``mask=None, p2p=None`` is the plain edit of the papers;
* a value the user set is kept.

A light module (no torch): the CLI may call it before a model is loaded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Optional

from .errors import ConfigError

# the edit-friendly DDPM paper's settings (Huberman-Spiegelglas et al., CVPR 2024)
DDPM_DEFAULTS = {"steps": 100, "skip": "36%", "cfg_source": 3.5, "cfg_target": 15.0}
# DDPM editing's target CFG with a structure control: what won on the toy validation split with every control, and
# what published Prompt-to-Prompt settings use
CFG_TARGET_CONTROLLED = 7.5
# family -> FlowEdit's published settings (fallenshock/FlowEdit's FLUX_exp.yaml / SD3_exp.yaml), in EditConfig's
# terms: skip = T_steps - n_max; n_min the last steps run as plain sampling, n_avg the noise draws averaged per step
FLOWEDIT_DEFAULTS = {"flux": {"steps": 28, "skip": 4, "cfg_source": 1.5, "cfg_target": 5.5, "n_min": 0, "n_avg": 1},
                     "sd3": {"steps": 50, "skip": 17, "cfg_source": 3.5, "cfg_target": 13.5, "n_min": 0, "n_avg": 1}}
FLOW_FAMILIES = ("sd3", "flux")  # families on the rectified-flow path, the only ones FlowEdit runs on
# EditConfig.mask / .p2p: "the model's default control" (see the rules above; resolved by
# date_edit.controls.with_defaults, which builds the MaskConfig / P2PConfig)
MODEL_DEFAULT = "default"
# the default mask of an edit without a source prompt: None (no mask), or "auto" (the mask from where the target's
# prediction differs from the unconditional one, DiffEdit with an empty reference)
DEFAULT_MASK_WITHOUT_SOURCE = None
SETTINGS = ("steps", "skip", "cfg_source", "cfg_target", "n_min", "n_avg")  # what None stands for the default of
FLOWEDIT_ONLY = {"n_min": 0, "n_avg": 1}  # FlowEdit's own settings, with the value that leaves them out


def _describe(model) -> tuple[str, str, bool]:
    """``(family, name, is a flow model)`` of a Backbone, or of a family name."""
    if isinstance(model, str):
        return model, model, model in FLOW_FAMILIES
    return model.family, model.name, model.schedule.prediction_type == "flow"


def edit_method(method: str, model) -> str:
    """``ddpm`` or ``flowedit`` for ``model`` (a Backbone or a family name): ``auto`` is flowedit for FLUX.

    Raises:
        ConfigError: flowedit on a model that is not a flow model.
    """
    family, name, flow = _describe(model)
    resolved = ("flowedit" if family == "flux" else "ddpm") if method == "auto" else method
    if resolved == "flowedit" and not flow:
        raise ConfigError("edit_method", f"flowedit needs a flow model (SD3, FLUX); {name} is {family}: use ddpm")
    return resolved


def model_defaults(family: str, method: str, controlled: bool = False) -> dict:
    """The settings an edit of ``method`` takes on a model of ``family`` when the user gives none: ``steps``,
    ``skip``, ``cfg_source``, ``cfg_target``, ``n_min``, ``n_avg`` (the last two None for DDPM editing, where they
    mean nothing). ``controlled``: a structure control is asked for (DDPM's target CFG is then 7.5)."""
    if method == "flowedit":
        if family not in FLOWEDIT_DEFAULTS:
            raise ConfigError("edit_method", f"flowedit has no published settings for {family} models")
        return dict(FLOWEDIT_DEFAULTS[family])
    cfg_target = CFG_TARGET_CONTROLLED if controlled else DDPM_DEFAULTS["cfg_target"]
    return DDPM_DEFAULTS | {"cfg_target": cfg_target, "n_min": None, "n_avg": None}


def resolve_edit_config(config, model, given: Optional[Iterable[str]] = None):
    """``config`` with its method and every unset setting resolved for ``model`` (a Backbone, or a family name).

    Args:
        config: an :class:`~date_edit.edit_config.EditConfig`; None in a field of :data:`SETTINGS` is "the model's
            default".
        given: the settings the user set (default: those that are not None); the others take the model's
            default even when they hold a value.

    Raises:
        ConfigError: one line naming the parameter: a FlowEdit setting on a DDPM edit, ``reference_compat`` where
            it changes nothing, ``n_min`` that leaves no FlowEdit step, flowedit on a model that is not a flow model.
    """
    family, _, _ = _describe(model)
    method = edit_method(config.method, model)
    # a control asked for, or the default controls ("default": counted as one before they are made concrete)
    base = model_defaults(family, method, controlled=config.mask is not None or config.p2p is not None)
    kept = {k for k in SETTINGS if getattr(config, k) is not None} if given is None else \
        {k for k in given if k in SETTINGS and getattr(config, k) is not None}
    values = {k: getattr(config, k) if k in kept else base[k] for k in SETTINGS}
    if "steps" in kept and "skip" not in kept and isinstance(base["skip"], int):  # the published share
        values["skip"] = round(values["steps"] * base["skip"] / base["steps"])
    if method == "ddpm":
        for name, neutral in FLOWEDIT_ONLY.items():
            if values[name] not in (None, neutral):
                raise ConfigError(name, f"is a FlowEdit setting; this edit is DDPM editing (edit_method ddpm on "
                                        f"{family}): leave it unset or use edit_method flowedit")
            values[name] = None
    if config.reference_compat and method == "flowedit" and family != "flux":
        raise ConfigError("reference_compat", f"changes nothing for FlowEdit on {family}: its noise is already "
                                              "drawn in the official code's layout (only FLUX packs it)")
    return replace(config, method=method, **values)
