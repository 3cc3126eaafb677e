"""What the edit suites (``edit``: the sample photos; ``pie``: PIE-Bench) share: the settings a method resolves to
(a named preset, the method's ``@`` options, the command line), the check of every method before any edit, and the
edit of one item.

Method options (after ``@``, any order): ``p2p`` (Prompt-to-Prompt with the preset's windows; ``p2p=default``: the
model's default, as the CLI runs it), ``blend`` (P2P's
local blend: a mask from the cross-attention of the words that differ between the prompts, which for PIE are its
bracketed words; the record keeps both), ``mask=auto`` (an
automatic mask from where the prompts' predictions differ), ``mask=bench`` (PIE only: the benchmark's hand-drawn
mask as a user mask: an oracle, label it so when you report it), ``mask=none``, ``mask=default`` (the model's
default: automatic with a source prompt), ``preset=NAME`` (:data:`benchmarks.suites.pie.data.PRESETS`),
``editor=ddpm|flowedit``, ``source=given|auto|none`` (the item's hand-written source prompt, the default; the
photo's caption by ``--captioner``, as the bare ``date-edit photo.png PROMPT`` runs; none). Without a control
option a method runs the plain edit of the papers (no mask, no Prompt-to-Prompt).
"""

from __future__ import annotations

from typing import Optional

from benchmarks.suites.pie.data import bench_mask, check_preset, default_preset
from date_edit.errors import ConfigError

DEFAULT_STEPS = 100

def settings(args, method, family: str) -> tuple[dict, Optional[str]]:
    """``(EditConfig keyword arguments, preset name or None)`` for ``method`` on a model of ``family``.

    Precedence: the method's ``@preset`` over ``--preset`` over the suite's default (PIE: the published runner of
    the model's editor; the sample-photo suite: none, i.e. ``EditConfig``'s defaults with ``--steps``);
    ``--steps`` rescales a preset's skip to the same share; ``--cross-replace``/``--self-replace`` given on the
    command line override a preset's windows.
    """
    from date_edit.masks import MaskConfig

    preset = method.option("preset") or getattr(args, "preset", None)
    if preset is None and args.suite == "pie":
        preset = default_preset(family)
    cross, self_ = 0.8, 0.8  # P2PConfig's defaults
    if preset:
        p = check_preset(preset)
        kw = {k: p[k] for k in ("steps", "skip", "cfg_source", "cfg_target", "method")}
        if args.steps and args.steps != p["steps"]:
            kw["steps"] = args.steps
            if not str(p["skip"]).endswith("%"):
                kw["skip"] = round(args.steps * p["skip"] / p["steps"])
        cross, self_ = p.get("cross", cross), p.get("self", self_)
    else:  # the model's defaults (date_edit.defaults, as `date-edit edit` and the API resolve them)
        kw = {"steps": args.steps} if args.steps else {}
    if method.option("editor"):
        kw["method"] = method.option("editor")
    if getattr(args, "n_avg", None) is not None:  # checked against date_edit.limits.MAX_N_AVG by EditConfig too
        kw["n_avg"] = args.n_avg
    cross = args.cross_replace if args.cross_replace is not None else cross
    self_ = args.self_replace if args.self_replace is not None else self_
    mask = method.option("mask") or args.mask
    kw["mask"] = None  # the plain edit of the papers unless the method or the command line asks for a control
    if mask == "default":
        kw["mask"] = "default"
    elif mask == "auto":
        kw["mask"] = MaskConfig("auto", threshold=args.mask_threshold, peak=getattr(args, "mask_peak", 0.9))
    elif mask == "bench":
        if args.suite != "pie":
            raise ConfigError("mask", f"method {method.label!r}: mask=bench needs --suite pie (its items carry "
                                      "hand-drawn masks)")
        kw["mask"] = MaskConfig("user")
    blend = method.option("blend") == "on"
    p2p = method.option("p2p") or ("on" if args.p2p or blend else "off")
    kw["p2p"] = "default" if p2p == "default" else None
    if p2p == "on":
        from date_edit.p2p import P2PConfig

        kw["p2p"] = P2PConfig(cross_replace=cross, self_replace=self_, local_blend=blend)
    return kw, preset


def check_methods(args, methods, backbone, source_prompt: str) -> None:
    """Refuse, before any image is edited, a method this model cannot run (P2P on FlowEdit, FlowEdit on SD, a
    FlowEdit setting such as ``--n-avg`` on DDPM editing)."""
    from date_edit.controls import check as check_controls
    from date_edit.defaults import resolve_edit_config
    from date_edit.pipeline import EditConfig

    for method in methods:
        kw, _ = settings(args, method, backbone.family)
        try:
            config = EditConfig(date=method.date, **kw)
            resolve_edit_config(config, backbone)
            check_controls(backbone, config, [source_prompt])
        except ConfigError as exc:
            raise ConfigError(None, f"method {method.label!r} on {backbone.name}: {str(exc).splitlines()[0]}") \
                from None


def edit_item(runner, method, item, seed: int, steps: Optional[int] = None):
    """Edit one item with ``method``: ``(Result, source pixels, record fields)``.

    The edit is an :class:`~date_edit_cli.request.EditRequest` run by :func:`date_edit_cli.request.run`, the path
    ``date-edit edit``, ``batch``, ``sweep`` and the web app take; PIE-Bench's hand-drawn mask (``mask=bench``) is
    handed to it as a tensor."""
    from date_edit.controls import ran_controls
    from date_edit.defaults import resolve_edit_config
    from date_edit.masks import coverage
    from date_edit.pipeline import EditConfig
    from date_edit_cli import request

    args, backbone = runner.args, runner.backbone
    kw, preset = settings(args, method, backbone.family)
    if steps is not None:  # fixed-equal-compute: more steps, the same share skipped
        base = resolve_edit_config(EditConfig(**kw), backbone)
        kw["skip"] = round(steps * base.resolved_skip() / base.steps)
        kw["steps"] = steps
    loaded = runner.loaded(item.image)
    source_from = method.option("source") or "given"
    mask = bench_mask(item, tuple(loaded.pixels.shape[-2:])) if method.option("mask") == "bench" or (
        args.mask == "bench" and not method.option("mask")) else None
    req = request.EditRequest(
        image=item.image, prompt=item.prompt, source_prompt=item.source_prompt if source_from == "given" else "",
        source_from=source_from, captioner=getattr(args, "captioner", None) or None, seed=seed,
        config=EditConfig(seed=seed, date=method.date, **kw), mask=None,
        model=request.ModelChoice(name=args.model, dtype=args.dtype, device=args.device or "auto", quiet=True),
        scorer=runner.scorer_spec(method) or "", size=args.size)
    if req.needs_caption and runner.captions is None:  # kept in the run folder: a resumed run captions nothing twice
        runner.captions = request.Captions(runner.out / "captions.json")
    req = request.resolve_source(req, loaded, backbone, runner.captions)
    if runner.captions is not None:
        runner.captions.save()
    result, config = request.run(req, backbone, runner._scorer(method), loaded, mask=mask)
    ran = result.config  # resolved: the model's defaults filled in
    fields = {"preset": preset, "steps": ran["steps"], "skip": ran["skip"],
              "cfg_source": ran["cfg_source"], "cfg_target": ran["cfg_target"],
              "editor": ran["method"], "controls": ran_controls(result.config),
              "mask_coverage": coverage(result.mask), "source_prompt": req.source_prompt,
              "source_prompt_from": req.source_from, "given_source_prompt": item.source_prompt}
    if req.source_from == "auto":
        fields.update(captioner=req.captioner, caption_s=req.caption_s)
    if result.config.get("p2p"):  # the words P2P treats as changed (local blend's words), beside PIE's own
        from date_edit.p2p import changed_words

        fields["p2p_words"] = [w for side in changed_words(req.source_prompt, item.prompt) for w in side]
    return result, loaded.pixels, fields


def check(args, methods, backbone, items) -> None:
    """:func:`check_methods` with the first item's source prompt."""
    check_methods(args, methods, backbone, items[0].source_prompt)


def run_item(runner, method, item, seed: int, steps: int):
    """Edit ``item`` with ``method``: ``(Result, source pixels, record fields, steps run)``; ``steps`` counts only
    for fixed-equal-compute (more steps, the same share skipped), else the settings' steps run."""
    equal = steps if method.base == "fixed-equal-compute" else None
    result, source, fields = edit_item(runner, method, item, seed, steps=equal)
    return result, source, fields, fields.pop("steps")
