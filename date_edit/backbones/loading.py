"""Loading a backbone: ``tiny``/``tiny-sdxl`` (random, built offline), ``toy`` (shipped), a diffusers folder, a
single ``.safetensors``/``.ckpt`` file, or a hub id; the family is read from ``model_index.json`` (a folder or
hub id) or from the checkpoint's tensor names (a single file)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import torch

from ..choices import DEFAULT_MODEL
from ..errors import BackboneError, ConfigError, ModelFileError, printable
from ..limits import MAX_CONFIG_BYTES, check_file_size, read_capped
from ..hub import hub_reachable
from .base import Backbone, resolve_device, resolve_dtype
from .family import FAMILIES, detect_family, family_of_components
from .sd import StableDiffusion  # noqa: F401  (each family module registers itself in family.FAMILIES)
from .sdxl import StableDiffusionXL  # noqa: F401
from .components import tiny_components, tiny_sdxl_components
from .components_flow import tiny_flux_components, tiny_sd3_components
from .flux import Flux  # noqa: F401
from .sd3 import StableDiffusion3  # noqa: F401

TOY_DIR = Path(__file__).resolve().parents[1] / "assets" / "toy"
# the family classes' tables by family name (read from their class attributes)
COMPONENT_NAMES = {name: kind.component_names for name, kind in FAMILIES.items()}  # what a component dict holds
PIPELINE_CLASSES = {name: kind.pipeline_classes[0] for name, kind in FAMILIES.items()}  # what a folder is saved as
PIPELINE_FAMILIES = {cls: name for name, kind in FAMILIES.items() for cls in kind.pipeline_classes}  # _class_name
TINY = {"tiny": (tiny_components, "sd"), "tiny-sdxl": (tiny_sdxl_components, "sdxl"),
        "tiny-sd3": (tiny_sd3_components, "sd3"), "tiny-flux": (tiny_flux_components, "flux")}


def family_of(index: dict, where: str = "the model") -> str:
    """The family (``sd``, ``sdxl``, ``sd3`` or ``flux``) a ``model_index.json`` describes.

    Raises:
        BackboneError: a pipeline class date-edit does not run.
    """
    if not isinstance(index, dict):
        raise ModelFileError(f"{where}: model_index.json holds a JSON {type(index).__name__}, not an object; it is "
                             "not a diffusers model folder")
    name = str(index.get("_class_name", ""))
    if name in PIPELINE_FAMILIES:
        return PIPELINE_FAMILIES[name]
    kind = FAMILIES[family_of_components(dict.fromkeys(index, True))]
    if kind.denoiser_name in index and _pins_every_class(kind):  # a custom pipeline class on SD's or SDXL's modules
        return kind.family
    raise BackboneError(f"{where} is a {name or 'pipeline of unknown class'}; date-edit runs StableDiffusion, "
                        "StableDiffusionXL, StableDiffusion3 and Flux pipeline folders")


def read_model_index(path: Path) -> dict:
    """A folder's ``model_index.json``, refused over :data:`~date_edit.limits.MAX_CONFIG_BYTES` before it is read,
    and when it is not a JSON object (:class:`ModelFileError`, one line)."""
    try:
        index = json.loads(read_capped(path, MAX_CONFIG_BYTES, "model config").decode("utf-8"))
    except ConfigError as e:
        raise ModelFileError(str(e)) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelFileError(f"{path} is not JSON ({str(e)[:120]})") from None
    family_of(index, str(path.parent))  # a dict of a family date-edit runs
    return index


def check_configs(folder: Path) -> None:
    """Refuse a diffusers folder whose JSON files (``model_index.json``, ``*/config.json``, tokenizer files) are over
    :data:`~date_edit.limits.MAX_CONFIG_BYTES`, by their size, before diffusers reads any of them whole."""
    for path in [*folder.glob("*.json"), *folder.glob("*/*.json")]:
        try:
            check_file_size(path, MAX_CONFIG_BYTES, "model config")
        except ConfigError as e:
            raise ModelFileError(str(e)) from None
        except OSError:
            continue  # a broken link: the loader names it if it needs it


def _pins_every_class(kind: type[Backbone]) -> bool:
    """Whether each of the family's components loads with a class it names (SD, SDXL), not model_index.json's."""
    return set(kind.component_names) <= set(kind.folder_classes)


def _model_index(path: str, *, local_only: bool) -> dict:
    """``model_index.json`` of a folder or hub id (a folder without one, but with ``unet/``, is SD-shaped: its
    subfolders name the components)."""
    folder = Path(path)
    if folder.is_dir():
        check_configs(folder)
    if (folder / "model_index.json").is_file():
        return read_model_index(folder / "model_index.json")
    if folder.is_dir():
        names = {k for kind in FAMILIES.values() for k in kind.component_names}
        return {k: True for k in sorted(names) if (folder / k).is_dir()}
    from diffusers import DiffusionPipeline

    return dict(DiffusionPipeline.load_config(path, local_files_only=local_only))


def _load_folder(path: str, *, local_only: bool) -> tuple[dict, str, bool]:
    """The components of a diffusers folder or hub id, its family and its ``force_zeros_for_empty_prompt``: each
    with the class its family pins (:attr:`~.family.FamilyTraits.folder_classes`), else the one
    ``model_index.json`` names (SD3's T5 may be absent: ``text_encoder_3`` null)."""
    import diffusers
    import transformers

    index = _model_index(path, local_only=local_only)
    family = family_of(index, str(path))
    kind, kw = FAMILIES[family], {"local_files_only": local_only}
    libraries = {"diffusers": diffusers, "transformers": transformers}
    comps, pinned = {}, _pins_every_class(kind)
    for name in kind.component_names:
        cls = None if pinned else _indexed_class(path, name, index.get(name), libraries)
        if name in kind.folder_classes and (pinned or cls is not None):  # checked, then the family's class
            library, class_name = kind.folder_classes[name]
            cls = getattr(libraries[library], class_name)
        comps[name] = None if cls is None else cls.from_pretrained(path, subfolder=name, **kw)
    return comps, family, bool(index.get("force_zeros_for_empty_prompt", True))


def _indexed_class(path: str, name: str, entry, libraries: dict) -> Optional[type]:
    """The class ``model_index.json`` gives component ``name`` as (``[library, class]``), None for a null entry.

    Raises:
        ModelFileError: an entry that is no ``[library, class]`` pair of diffusers or transformers, or names a
            pipeline or something else without ``from_pretrained``.
        BackboneError: a class the installed library does not have.
    """
    import diffusers

    if not entry or (isinstance(entry, (list, tuple)) and entry[0] is None):
        return None
    if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[0] not in ("diffusers", "transformers")
            or not isinstance(entry[1], str)):
        raise ModelFileError(f"{path}: model_index.json gives {name} as {str(entry)[:80]}, not [library, class] "
                             "with library diffusers or transformers")
    cls = getattr(libraries[entry[0]], entry[1], None)
    if cls is None:
        raise BackboneError(f"{path}: {name} is a {entry[1]}, which this {entry[0]} does not have")
    if (not isinstance(cls, type) or not hasattr(cls, "from_pretrained")
            or issubclass(cls, diffusers.DiffusionPipeline)):
        raise ModelFileError(f"{path}: model_index.json gives {name} as {entry[0]}.{entry[1]}, which is not a "
                             "model, tokenizer or scheduler class")
    return cls


def single_file_family(path: str, config: Optional[str] = None) -> str:
    """The family of a single-file checkpoint: from ``config``'s ``model_index.json`` when it is a folder, else
    from the tensor names of a ``.safetensors`` file (each family's
    :attr:`~.family.FamilyTraits.checkpoint_marks`: SD3's MMDiT has ``joint_blocks``, FLUX ``double_blocks``,
    SDXL's second text encoder lives under ``conditioner.embedders.1``), else ``sd``."""
    if config and (Path(config) / "model_index.json").is_file():
        check_configs(Path(config))
        return family_of(read_model_index(Path(config) / "model_index.json"), config)
    names = []
    if Path(path).suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            names = [k.removeprefix("model.diffusion_model.") for k in f.keys()]
    return detect_family(lambda kind: any(k.startswith(kind.checkpoint_marks) for k in names))


def _load_single_file(path: str, config: Optional[str], *, local_only: bool) -> tuple[dict, str, bool]:
    import diffusers

    family = single_file_family(path, config)
    kind = FAMILIES[family]
    kw = {"local_files_only": local_only, **kind.single_file_options}
    if config:
        kw["config"] = config
    pipeline = getattr(diffusers, kind.pipeline_classes[0])
    pipe = pipeline.from_single_file(path, **kw)
    force_zeros = bool(getattr(pipe, "config", {}).get("force_zeros_for_empty_prompt", True))
    return {k: getattr(pipe, k) for k in kind.component_names}, family, force_zeros


def load_backbone(
    model: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "fp32",
    device: str = "auto",
    config: Optional[str] = None,
    grad_checkpointing: str = "auto",
    grad_decoder: Optional[str] = None,
    compile: Optional[str] = None,
) -> Backbone:
    """Load a backbone: ``tiny`` / ``tiny-sdxl`` (random), ``toy`` (shipped), a diffusers folder (SD 1.x/2.x or
    SDXL, read from its ``model_index.json``), a ``.safetensors``/``.ckpt`` file (``config``: a diffusers folder
    or hub id with its configs), or a hub id (cached, or downloaded).
    ``grad_checkpointing``: see :meth:`Backbone.set_gradient_checkpointing`; ``grad_decoder``: see
    :meth:`Backbone.set_grad_decoder` (off by default); ``compile``: see :meth:`Backbone.compile` (off by default).

    Raises:
        BackboneError: one line naming the model and how to get it.
    """
    backbone = _load_backbone(model, dtype=dtype, device=device, config=config)
    backbone.set_gradient_checkpointing(grad_checkpointing)
    backbone.set_grad_decoder(grad_decoder)
    backbone.compile(compile)
    return backbone


def _load_backbone(model: str, *, dtype, device: str, config: Optional[str]) -> Backbone:
    device = resolve_device(device)  # a bad device or dtype fails before any weights load
    dtype = resolve_dtype(dtype, device)
    if model in TINY:
        factory, family = TINY[model]
        return Backbone.from_components(model, factory(), dtype=dtype, device=device, random_weights=True,
                                        family=family)
    if model == "toy":
        if not (TOY_DIR / "model_index.json").is_file():
            raise BackboneError(f"the toy model is not in {TOY_DIR}: rebuild it with `make toy-model`")
        comps, family, _ = _load_folder(str(TOY_DIR), local_only=True)
        return Backbone.from_components("toy", comps, dtype=dtype, device=device, family=family)
    path = Path(model).expanduser()
    is_file = path.suffix.lower() in (".safetensors", ".ckpt")
    looks_local = is_file or path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    with quiet_libraries():
        try:
            if is_file:
                if not path.is_file():
                    raise BackboneError(f"model file {model} does not exist")
                local_only = config is None or Path(config).is_dir() or not hub_reachable()
                comps, family, zeros = _load_single_file(str(path), config, local_only=local_only)
            elif looks_local:
                if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
                    raise BackboneError(
                        f"{model} is not a diffusers model folder (no model_index.json or unet/); "
                        "pass a folder saved with save_pretrained, a .safetensors file, or a hub id"
                    )
                comps, family, zeros = _load_folder(str(path), local_only=True)
            else:
                comps, family, zeros = _load_hub(model)
        except BackboneError:
            raise
        except Exception as exc:  # noqa: BLE001 - what a model file holds is input: only errors of ours leave here
            if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError) or (
                    isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()):
                raise
            first = printable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            hint = (" (a single-file checkpoint offline needs --model-config DIR, a diffusers folder of the same "
                    "family)") if is_file else ""
            if not (is_file or looks_local):  # a hub id whose cached files fail: a load that failed
                raise BackboneError(f"could not load model {model!r}: {first[:200]}{hint}") from None
            kind = "" if isinstance(exc, OSError) else f"{type(exc).__name__}: "
            raise ModelFileError(f"could not load model {model!r}, its files are not a usable model: "
                                 f"{kind}{first[:200]}{hint}") from None
    return Backbone.from_components(model, comps, dtype=dtype, device=device, family=family,
                                    force_zeros_for_empty_prompt=zeros)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """diffusers' and transformers' own log lines ("Attempting to download...", "Defaulting to unsafe
    serialization...") off while a model loads: what goes wrong is raised, and said in one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = [(lib, lib.get_verbosity()) for lib in (diffusers_logging, transformers_logging)]
    for lib, _ in before:
        lib.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        for lib, level in before:
            lib.set_verbosity(level)


def _load_hub(model: str) -> tuple[dict, str, bool]:
    """A hub id: from the local cache, else downloaded when the hub can be reached."""
    try:
        return _load_folder(model, local_only=True)
    except (OSError, ValueError):
        if not hub_reachable():
            raise BackboneError(
                f"model {model!r} is not cached and the hub cannot be reached: "
                f"run `hf download {model}` where there is network, or pass a local folder "
                "with --model PATH"
            ) from None
        return _load_folder(model, local_only=False)


def backbone_from_components(
    name: str, components: dict, *, dtype: str | torch.dtype = "fp32", device: str = "auto",
    random_weights: bool = False,
) -> Backbone:
    """Wrap already-built components (e.g. :func:`sd15_components`, or a pipeline's) as a backbone of their
    family (see :meth:`Backbone.from_components`)."""
    return Backbone.from_components(name, components, dtype=dtype, device=device, random_weights=random_weights)
