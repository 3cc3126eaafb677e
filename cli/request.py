"""One edit request: what a front end asks for, built once from whatever it has (Click options, a manifest row
merged with the job's options, the web form), then checked, run and recorded by the same functions for ``edit``,
``batch``, ``sweep`` and the web app.

:func:`edit_request` is the one place an option dict becomes an edit: the seed, the structure controls, the mask,
the scorer spec and the inputs that are never overwritten are resolved there, once. Everything below it takes the
:class:`EditRequest`, never the option dict.

Imports click and the standard library at module level (no torch), like every CLI module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from date_edit.errors import ConfigError

from . import common
from .running import say

if TYPE_CHECKING:
    from date_edit.edit_config import EditConfig

# what an edit does with no control flag is the library's default (date_edit.defaults: Prompt-to-Prompt where the
# model has cross-attention, an automatic mask when there is a source prompt, given or captioned), so the CLI, batch,
# sweep, the web app, the harness and the Python API make the same edit from the same inputs
SOURCE_MODES = ("auto", "none")  # --source-prompt's words; any other text is the source prompt itself
MASK_TUNING = {"mask_dilate": None, "mask_feather": 2, "mask_threshold": 0.5, "mask_peak": 0.9}  # MaskConfig's


@dataclass(frozen=True)
class ModelChoice:
    """The model options: which backbone, in what precision, on which device, how DATE's backward pass runs."""

    name: str
    dtype: str = "fp32"
    device: str = "auto"
    config: Optional[str] = None  # --model-config: the configs of a single-file checkpoint
    grad_checkpointing: str = "auto"
    grad_decoder: str = "vae"
    compile: Optional[str] = None  # --compile's mode, or None without --compile
    quiet: bool = False

    @classmethod
    def from_options(cls, opts: dict) -> "ModelChoice":
        """The model options of a parsed command (or a merged batch row)."""
        return cls(name=opts["model"], dtype=opts.get("dtype") or "fp32", device=opts.get("device") or "auto",
                   config=opts.get("model_config"), grad_checkpointing=opts.get("grad_checkpointing") or "auto",
                   grad_decoder=opts.get("grad_decoder") or "vae",
                   compile=(opts.get("compile_mode") or "auto") if opts.get("compile_unet") else None,
                   quiet=bool(opts.get("quiet")))

    def load(self):
        """The backbone, loaded (library progress bars on a terminal only, a note for random weights)."""
        from date_edit.backbones import load_backbone
        from date_edit.hub import library_progress_bars

        with library_progress_bars(common.bars_wanted(self.quiet)):
            backbone = load_backbone(self.name, dtype=self.dtype, device=self.device, config=self.config,
                                     grad_checkpointing=self.grad_checkpointing, grad_decoder=self.grad_decoder,
                                     compile=self.compile)
        if backbone.random_weights:
            say(f"note: --model {backbone.name} has random weights; its images are noise (for tests and smoke runs)")
        return backbone


@dataclass(frozen=True)
class EditRequest:
    """One edit as a front end asked for it, resolved once (:func:`edit_request`)."""

    image: Optional[str]  # the photo (None for a batch's settings, whose items carry their own)
    prompt: str
    source_prompt: str  # the source prompt: given, or once resolved (resolve_source) the caption; "" for none
    seed: int
    config: "EditConfig"  # schedule left None = the model's default; DATE, mask and P2P settings included
    mask: Optional[str]  # "auto", a mask file, or None
    model: ModelChoice
    scorer: str  # the --scorer spec, resolved for the model (offline models use their own scorers)
    size: Optional[int] = None
    resize: str = "fit"
    update_mode: Optional[str] = None  # DATE's update mode as given (None without DATE), for the record
    p2p_options: tuple[str, ...] = ()  # the Prompt-to-Prompt options given (--reweight, ...), each asks for P2P
    p2p_asked: bool = False  # --p2p given
    save_mask: bool = False
    out: Optional[Path] = None  # the checked output path (None where the front end decides: batch, the web app)
    overwrite: bool = False
    as_json: bool = False
    inputs: tuple[str, ...] = ()  # every file the edit reads, never overwritten (the photo first)
    source_from: str = "given"  # "given", "auto" (caption the photo: resolve_source), "none" (the empty source)
    captioner: Optional[str] = None  # the --captioner spec (None: the model's default captioner)
    caption_s: Optional[float] = None  # seconds the caption took (0.0 when it came from the cache)

    @property
    def needs_caption(self) -> bool:
        """The source prompt is still to be captioned from the photo (``--source-prompt auto``)."""
        return self.source_from == "auto" and not self.source_prompt


def edit_request(image: Optional[str], prompt: str, opts: dict, *, output: Optional[str] = None) -> EditRequest:
    """The :class:`EditRequest` of parsed edit options ``opts`` (Click's, a manifest row merged with the job's, the
    web form's): the one place an option dict becomes an edit. With ``output`` (a suffix for the automatic name:
    ``""`` for an edit, ``"_sweep"`` for a sweep's grid) the output path is resolved and checked (``--out``,
    ``--save-mask``, ``--json``) before anything loads.

    Raises:
        ConfigError / CliError: one line naming the option (exit 2), before any model loads.
    """
    seed = 0 if opts.get("seed") is None else opts["seed"]
    source_from, source_prompt = source_choice(opts.get("source_prompt"))
    mask = resolved_mask(opts)
    config = edit_config(opts, controls(opts, mask, source_from), seed)
    model = ModelChoice.from_options(opts)
    req = EditRequest(image=image, prompt=prompt, source_prompt=source_prompt, source_from=source_from,
                      captioner=opts.get("captioner") or None, seed=seed,
                      config=config, mask=mask, model=model, scorer=common.scorer_spec(opts["scorer"], model.name),
                      size=opts.get("size"), resize=opts.get("resize") or "fit",
                      update_mode=None if opts.get("no_date") else opts.get("update_mode", "accumulate"),
                      p2p_options=tuple(explicit_p2p_options(opts)), p2p_asked=bool(opts.get("p2p")),
                      save_mask=bool(opts.get("save_mask")), overwrite=bool(opts.get("overwrite")),
                      as_json=bool(opts.get("as_json")),
                      inputs=tuple(input_files(image, mask, (opts.get("scorer"), opts.get("evaluator")))))
    if output is None:
        return req
    from dataclasses import replace

    from date_edit.outputs import default_output_name

    name = default_output_name(image, prompt, seed, suffix=f"{output}.png")
    path = common.output_path(opts.get("out"), name, req.overwrite, list(req.inputs), as_json=req.as_json,
                              photo=image)
    if req.save_mask:
        common.output_path(str(common.mask_path(path)), "", req.overwrite, list(req.inputs), as_json=False,
                           photo=image)
    return replace(req, out=path)


def date_config(opts: dict):
    """The :class:`~date_edit.date.DateConfig` the DATE options ask for, or None with ``--no-date``."""
    from date_edit.date import DateConfig, ablation_changes

    if opts.get("no_date", False):
        return None
    if opts.get("rho") is not None and opts.get("rho_relative") is not None:
        raise ConfigError(None, "--rho and --rho-relative are exclusive: give the DATE radius one way")
    # an option the command does not have (sweep has no --update-mode) is its default
    return DateConfig(rho=opts["rho"], rho_relative=opts.get("rho_relative"), update_steps=opts["update_steps"],
                      mode=opts.get("update_mode", "accumulate"), iterations=opts.get("grad_iters", 1),
                      targets=opts.get("date_targets") or "tokens", norm=opts.get("date_norm") or "joint",
                      **ablation_changes(opts.get("ablation", "none")))


def edit_config(opts: dict, control_keywords: dict, seed: int):
    """The :class:`~date_edit.edit_config.EditConfig` the edit options ask for: a schedule option left out is None,
    the model's default, which :func:`common.resolved_config` (once the model is loaded) and ``edit()`` fill in
    through :func:`date_edit.defaults.resolve_edit_config`, as the Python API does."""
    from date_edit.edit_config import EditConfig

    return EditConfig(steps=opts.get("steps"), skip=opts.get("skip"), cfg_source=opts.get("cfg_source"),
                      cfg_target=opts.get("cfg_target"), seed=seed, date=date_config(opts),
                      method=opts.get("edit_method") or "auto", n_min=opts.get("n_min"), n_avg=opts.get("n_avg"),
                      reference_compat=bool(opts.get("reference_compat")), **control_keywords)


def source_choice(value: Optional[str]) -> tuple[str, str]:
    """``(source_from, source_prompt)`` of a ``--source-prompt`` value: left out or ``auto`` -> ``("auto", "")``
    (caption the photo), ``none`` or empty -> ``("none", "")``, any other text -> ``("given", text)``."""
    if value is None:
        return "auto", ""
    word = str(value).strip()
    if word.lower() in SOURCE_MODES:
        return word.lower(), ""
    return ("given", str(value)) if word else ("none", "")


def resolved_mask(opts: dict) -> Optional[str]:
    """What ``--mask`` means for this run: ``"auto"``, a file path, ``"default"`` (not given: the model's default,
    an automatic mask when there is a source prompt, given or captioned) or None (``--mask none``)."""
    from date_edit.choices import mask_file
    from date_edit.defaults import MODEL_DEFAULT

    mask = opts.get("mask")
    if mask is None:  # a mask setting given without --mask asks for the automatic mask
        tuned = any(opts.get(k) is not None and opts.get(k) != v for k, v in MASK_TUNING.items())
        return "auto" if tuned else MODEL_DEFAULT
    return mask_file(mask) or ("auto" if str(mask).strip().lower() == "auto" else None)


def controls(opts: dict, mask: Optional[str], source_from: str = "given") -> dict:
    """The ``EditConfig`` keywords of the control options: ``mask`` and ``p2p`` (``"default"`` where no option
    asks otherwise: the model's default, resolved by the library as for the Python API)."""
    from date_edit.defaults import DEFAULT_MASK_WITHOUT_SOURCE, MODEL_DEFAULT
    from date_edit.masks import MaskConfig

    mask_config = MODEL_DEFAULT if mask == MODEL_DEFAULT else None
    if mask not in (None, MODEL_DEFAULT):
        tuning = {k: _or(opts.get(k), v) for k, v in MASK_TUNING.items()}
        mask_config = MaskConfig(source="auto" if mask == "auto" else "user", dilate=tuning["mask_dilate"],
                                 feather=tuning["mask_feather"], threshold=tuning["mask_threshold"],
                                 peak=tuning["mask_peak"])
    if opts.get("save_mask") and (mask is None or (mask == MODEL_DEFAULT and source_from == "none"
                                                   and DEFAULT_MASK_WITHOUT_SOURCE is None)):
        raise ConfigError(None, "--save-mask needs a mask: --mask FILE or --mask auto (or a source prompt, given "
                                "or captioned, for the default automatic mask)")
    wanted = opts.get("p2p")
    p2p_config = None
    if wanted or (wanted is None and explicit_p2p_options(opts)):
        from date_edit.p2p import P2PConfig

        defaults = P2PConfig()
        p2p_config = P2PConfig(cross_replace=_or(opts.get("cross_replace"), defaults.cross_replace),
                               self_replace=_or(opts.get("self_replace"), defaults.self_replace),
                               reweight=tuple(opts.get("reweight") or ()), local_blend=bool(opts.get("local_blend")))
    elif wanted is None:
        p2p_config = MODEL_DEFAULT  # where the model cannot run it, the default is left out; asked for, refused
    elif opts.get("reweight") or opts.get("local_blend"):
        raise ConfigError(None, "--reweight and --local-blend are Prompt-to-Prompt controls: drop --no-p2p")
    return {"mask": mask_config, "p2p": p2p_config}


def _or(value, default):
    return default if value is None else value


def explicit_p2p_options(opts: dict) -> list[str]:
    """The Prompt-to-Prompt options a run gave (``--cross-replace 0.5``, ``--reweight``, ...): each asks for P2P, so
    a model without cross-attention refuses the run instead of dropping them silently."""
    given = [name for name in ("cross_replace", "self_replace") if opts.get(name) is not None]
    given += [name for name in ("reweight", "local_blend") if opts.get(name)]
    return ["--" + name.replace("_", "-") for name in given]


def input_files(image: Optional[str], mask: Optional[str], scorer_specs=()) -> list[str]:
    """Every file a run reads that an output could be pointed at: the photo first, then the mask file and weights
    files named by scorer specs (``name:PATH``). ``--overwrite`` never replaces one."""
    import os

    files = [image] if image else []
    if mask and mask != "auto":
        files.append(mask)
    for spec in scorer_specs:
        for term in str(spec or "").split(","):
            _, sep, variant = term.partition(":")
            variant = variant.rsplit("=", 1)[0].strip() if sep else ""
            if variant and os.path.lexists(variant):
                files.append(variant)
    return files


# ----------------------------------------------------------------------------------------- checking and running


def precheck(req: EditRequest) -> None:
    """Before a model loads: the DATE schedule as far as it is known, the photo and the mask file are readable (or
    ``--mask auto`` has a source prompt)."""
    common.check_schedule_early(req.config)
    if req.image is not None:
        common.precheck_image(req.image)
        precheck_mask(req, req.image)


def precheck_mask(req: EditRequest, image: str) -> None:
    """Fail on an unreadable mask file before a model loads."""
    if req.mask in (None, "auto", "default"):
        return
    from date_edit.imaging import load_image

    user_mask(req, load_image(image, size=64, multiple=8, resize=req.resize))


def user_mask(req: EditRequest, loaded, max_pixels=None):
    """The request's mask file as a ``(1, 1, H, W)`` tensor over the processed image ``loaded``, or None."""
    if req.mask in (None, "auto", "default"):
        return None
    from date_edit.masks import load_mask

    return load_mask(req.mask, original_size=loaded.original_size, processed_size=loaded.processed_size,
                     resize=req.resize, max_pixels=max_pixels)


class Captions:
    """The captions a front end has made: one per image content and captioner spec
    (:class:`date_edit.captioning.CaptionCache`; each captioner is built once per process). ``path``: a JSON file
    that keeps them across runs (a batch's output folder, so a resumed job captions nothing twice)."""

    def __init__(self, path=None) -> None:
        from date_edit.captioning import CaptionCache

        self.cache = CaptionCache(path)

    def caption(self, spec: str, pixels, device, quiet: bool = False) -> tuple[str, float]:
        """``(caption, seconds)`` of the ``(1, 3, H, W)`` image ``pixels`` by captioner ``spec`` (0 s when cached).

        Raises:
            CaptionerError: the captioner cannot load (one line: how to get it, and that ``--source-prompt TEXT``
                or ``none`` avoids it).
        """
        from date_edit.captioning import cached_captioner
        from date_edit.hub import library_progress_bars

        with library_progress_bars(common.bars_wanted(quiet)):
            captioner = cached_captioner(spec, device=device)  # built once per process
        text, seconds, cached = self.cache.get_or_caption(captioner, pixels)
        return text, 0.0 if cached else seconds

    def save(self) -> None:
        """Keep the captions in the cache file, if there is one."""
        self.cache.save()


def resolve_source(req: EditRequest, loaded, backbone, captions: Optional[Captions] = None) -> EditRequest:
    """The request with its source prompt resolved: with ``--source-prompt auto`` (the default) the photo's caption
    by the request's captioner (the model's default: :func:`date_edit.captioning.default_captioner`), once per image
    content; a given or ``none`` source is kept. A captioner that returns no text leaves the edit without a source
    prompt, saying so, and its default mask is the one from the target alone."""
    if not req.needs_caption:
        return req
    from dataclasses import replace

    from date_edit.captioning import default_captioner

    spec = req.captioner or default_captioner(backbone.name, backbone.family)
    captions = captions if captions is not None else Captions()
    text, seconds = captions.caption(spec, loaded.pixels[:1], backbone.device, quiet=req.model.quiet)
    text = " ".join(str(text).split())
    config = req.config
    if not text:  # the library's rule for an empty caption: the default mask is the target's alone
        from date_edit.controls import with_defaults

        say(f"note: the captioner {spec} gave no caption; editing without a source prompt")
        config = with_defaults(backbone, config, [""], user_mask=req.mask not in (None, "auto", "default"),
                               uncaptioned=True)
    return replace(req, source_prompt=text, captioner=spec, caption_s=seconds, config=config)


def photo_caption(captions: Captions, backbone, loaded) -> tuple[str, str]:
    """``(caption, what a status line says of it)`` of a photo by the model's default captioner: what fills the web
    app's source-prompt box on upload. A captioner that cannot load gives no caption, and the line says why."""
    from date_edit.captioning import default_captioner
    from date_edit.errors import CaptionerError

    spec = default_captioner(backbone.name, backbone.family)
    try:
        text, _ = captions.caption(spec, loaded.pixels[:1], backbone.device, quiet=True)
    except CaptionerError as exc:
        return "", f"no caption: {exc}"
    return text, f"source prompt captioned by {spec} (edit it if it is wrong)"


def source_note(req: EditRequest) -> str:
    """What the summary line says of a captioned source prompt (empty otherwise)."""
    if req.source_from != "auto" or not req.source_prompt:
        return ""
    from date_edit.errors import excerpt

    return f"source prompt {excerpt(req.source_prompt, 120)} captioned by {req.captioner}"


def resolve(req: EditRequest, backbone) -> "EditConfig":
    """The request's config for ``backbone`` (its default controls made concrete for the model and the resolved
    source prompt, the model's defaults filled in, the DATE schedule checked), with Prompt-to-Prompt that was asked
    for refused in one line on a model without cross-attention."""
    from date_edit.controls import with_defaults

    # the default controls made concrete for this model and source prompt first (what runs decides the target CFG)
    config = with_defaults(backbone, req.config, [req.source_prompt],
                           user_mask=req.mask not in (None, "auto", "default"))
    config = common.resolved_config(config, backbone)
    check_p2p_supported(req, config, backbone)
    return config


def check_p2p_supported(req: EditRequest, config, backbone) -> None:
    """Prompt-to-Prompt that was asked for (``--p2p`` or a P2P option) on a model without cross-attention is
    refused in one line naming what was given (the default P2P is left out there instead)."""
    if config.p2p in (None, "default") or config.optional_controls:
        return
    from date_edit.p2p import check_supported

    try:
        check_supported(backbone)
    except ConfigError as exc:
        given = [] if req.p2p_asked else list(req.p2p_options)
        if not given:
            raise
        raise ConfigError(None, f"{', '.join(given)} asks for Prompt-to-Prompt, which {exc.problem[0].lower()}"
                                f"{exc.problem[1:]}; drop {'it' if len(given) == 1 else 'them'}") from None


def build_scorer(req: Optional[EditRequest], backbone, for_date: bool, spec: Optional[str] = None,
                 quiet: Optional[bool] = None):
    """The scorer ``spec`` (default: the request's, resolved for its model) names, on the backbone's device; with
    ``for_date`` a differentiable one (DATE's objective)."""
    from date_edit.hub import library_progress_bars
    from date_edit.scorers import build_scorer as build

    spec = spec or req.scorer
    if for_date:
        from date_edit.scorers.aesthetic import warn_if_aesthetic_alone

        warn_if_aesthetic_alone(spec)
    with library_progress_bars(common.bars_wanted(req.model.quiet if quiet is None else quiet)):
        return build(spec, device=backbone.device, require_differentiable=for_date)


def run(req: EditRequest, backbone, scorer, loaded, *, inversion=None, progress=None, mask=None):
    """Edit the loaded photo as the request asks; ``(result, the resolved config)``. ``mask``: a ``(1, 1, H, W)``
    user mask tensor made by the front end (the harness's PIE-Bench masks) instead of the request's mask file."""
    from date_edit.pipeline import edit

    config = resolve(req, backbone)
    result = edit(backbone, loaded.pixels, req.prompt, source_prompt=req.source_prompt, config=config,
                  scorer=scorer, inversion=inversion, progress=progress,
                  mask=mask if mask is not None else user_mask(req, loaded))
    return result, config


def edit_record(req: EditRequest, result, backbone, scorer, loaded, **extra) -> dict:
    """The JSON record of an edit (``--json``, the PNG's metadata, a batch's results line, the app's record)."""
    ran = result.config.get("mask") or {}
    mask = req.mask if req.mask not in ("auto", "default") else ran.get("source") if ran else None
    fields = {"input": loaded.source_path if req.image is None else req.image, "source_prompt": req.source_prompt,
              "source_prompt_from": req.source_from,
              "processed_size": list(loaded.processed_size), "cfg_source": result.config.get("cfg_source"),
              "cfg_target": result.config.get("cfg_target"), "mask": mask, **common.control_record(result)}
    if req.source_from == "auto":
        fields["captioner"] = req.captioner
    if req.save_mask and req.out is not None and getattr(result, "mask", None) is not None:
        fields["mask_output"] = str(common.mask_path(req.out))
    scores = common.score_images(scorer, result.images, result.prompts)
    if req.caption_s is not None:  # the caption's cost, beside the inversion's and the edit's
        result.timings = {**result.timings, "caption_s": req.caption_s}
    return common.record("edit", result, backbone, scorer=req.scorer if scorer is not None else None,
                         update_mode=req.update_mode, scores=scores, extra={**fields, **extra})


def write(req: EditRequest, result, record: dict) -> None:
    """Write what the request asks (the edit, its mask with ``--save-mask``, its record with ``--json``): every
    file or none."""
    common.write_outputs(result, req.out, record, req.overwrite, list(req.inputs), req.as_json,
                         save_mask=req.save_mask, note=source_note(req))
