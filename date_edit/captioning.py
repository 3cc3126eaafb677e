"""Captioners: a photo in, one line of text out. ``--source-prompt auto`` (the default) captions the photo and edits
as with that text written by hand, and ``date-edit ane``'s text-text metric compares a prompt with the caption of
its image.

A captioner is any object with a ``name`` and ``__call__(images) -> list[str]`` (:class:`Captioner`), ``images``
``(B, 3, H, W)`` in [0, 1]. Built in:

* ``blip``: transformers' ``BlipForConditionalGeneration``; ``blip`` / ``blip:large`` is
  ``Salesforce/blip-image-captioning-large`` (the edit-friendly and LEDITS demos' captioner), ``blip:base`` the base
  model, ``blip:HUB_ID_OR_FOLDER`` any other, ``blip:tiny`` random weights built in-process (tests, smoke runs);
* ``toy``: the toy world's, which reads a toy photo with the toy model's own CLIP (``clip:toy``, never the held-out
  evaluator or the judge): :mod:`date_edit.toy.captioner`.

Plugins register a factory ``factory(device=...) -> Captioner`` under the entry-point group ``date_edit.captioners``.
:class:`CaptionCache` keeps one caption per image content and captioner (a batch keeps it in its output folder).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import torch

from .choices import RANDOM_MODELS
from .errors import CaptionerError, ConfigError, excerpt

ENTRY_POINT_GROUP = "date_edit.captioners"
BLIP_LARGE = "Salesforce/blip-image-captioning-large"
BLIP_BASE = "Salesforce/blip-image-captioning-base"
BLIP_ALIASES = {"": BLIP_LARGE, "large": BLIP_LARGE, "base": BLIP_BASE}
MAX_NEW_TOKENS = 20
AVOID = "--source-prompt TEXT or --source-prompt none avoids captioning"  # the way round every CaptionerError
# name -> (factory "module:attribute", imported when asked: the toy world sits above this module; description)
BUILTIN = {
    "blip": ("date_edit.captioning:load_blip", f"BLIP (transformers); blip = {BLIP_LARGE}, blip:base, blip:tiny "
                                               "(random weights), blip:HUB_ID_OR_FOLDER"),
    "toy": ("date_edit.toy.captioner:ToyCaptioner", "the toy world's: retrieval over its caption grammar with the "
                                                     "toy model's own CLIP (clip:toy), on ten shifted views"),
}
TINY_MODELS = RANDOM_MODELS  # the random-weight tiny models: their captioner is random too


@runtime_checkable
class Captioner(Protocol):
    """What captions a photo: ``captioner(images) -> list[str]``, one caption per image of ``(B, 3, H, W)`` in
    [0, 1]; ``name`` says which captioner it is (it keys the caption cache)."""

    name: str

    def __call__(self, images: torch.Tensor) -> list[str]:
        """One caption per image of ``images`` ``(B, 3, H, W)`` in [0, 1]."""
        ...


def default_captioner(model_name: str, family: str = "") -> str:
    """The captioner spec ``--source-prompt auto`` uses for a model: ``toy`` for the toy model, ``blip:tiny`` for the
    random-weight tiny models (a smoke test: its captions are noise), ``blip`` otherwise."""
    if model_name == "toy":
        return "toy"
    if model_name in TINY_MODELS:
        return "blip:tiny"
    return "blip"


def available_captioners() -> dict[str, str]:
    """Every captioner name: the built-ins, then the plugins of the ``date_edit.captioners`` group (name -> a
    one-line description, for help texts)."""
    out = {name: text for name, (_, text) in BUILTIN.items()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        out.setdefault(ep.name, f"plugin {ep.value}")
    return out


def build_captioner(spec: str, device="cpu") -> Captioner:
    """The captioner ``spec`` names (``blip``, ``blip:base``, ``blip:tiny``, ``blip:PATH``, ``toy``, or a plugin's
    name, with an optional ``:variant`` passed on as ``variant=``), on ``device``.

    Raises:
        ConfigError: an unknown name (naming ``captioner``), or ``none``, which is not a captioner.
        CaptionerError: its weights cannot be loaded (one line: how to get them; a source prompt avoids it).
    """
    text = str(spec or "").strip()
    name, _, variant = text.partition(":")
    if name in ("", "none"):
        raise ConfigError("captioner", f"{excerpt(text)} names no captioner: give one of "
                                       f"{', '.join(available_captioners())} (none is a source prompt's choice, not a "
                                       "captioner)")
    if name in BUILTIN:
        factory = _load_factory(BUILTIN[name][0])
        return factory(variant, device=device) if name == "blip" else factory(device=device, variant=variant)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                factory = ep.load()
                made = factory(device=device, **({"variant": variant} if variant else {}))
            except (CaptionerError, ConfigError):
                raise
            except Exception as exc:  # noqa: BLE001 - a broken plugin is one line, not a traceback
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise CaptionerError(f"captioner plugin {name!r} ({ep.value}) failed: "
                                     f"{excerpt(first, 160, quote=False)}; {AVOID}") from None
            if not callable(made):
                raise CaptionerError(f"captioner plugin {name!r} ({ep.value}) made {type(made).__name__}, which "
                                     f"cannot caption (it needs __call__(images) -> list[str]); {AVOID}")
            return made
    raise ConfigError("captioner", f"{excerpt(text)} is not a known captioner: use one of "
                                   f"{', '.join(available_captioners())}")


def cached_captioner(spec: str, device="cpu") -> Captioner:
    """:func:`build_captioner`, built once per process for each ``(spec, device)`` (a BLIP loads once, however many
    edits it captions); a captioner that fails to build is not kept, so the next call tries again."""
    return _cached_captioner(str(spec), str(torch.device(device)))


@functools.lru_cache(maxsize=4)
def _cached_captioner(spec: str, device: str) -> Captioner:
    return build_captioner(spec, device=device)


def _load_factory(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


# ------------------------------------------------------------------------------------------------------ BLIP


class BlipCaptioner:
    """BLIP captions (transformers ``BlipForConditionalGeneration``), greedy, at most 20 new tokens."""

    def __init__(self, model, image_size: int, tokenizer, name: str, mean: Sequence[float] = (0.48145466, 0.4578275,
                 0.40821073), std: Sequence[float] = (0.26862954, 0.26130258, 0.27577711)) -> None:
        self.model = model.eval().requires_grad_(False)
        self.size = int(image_size)
        self.tokenizer = tokenizer
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[str]:
        """One caption per image."""
        from .scorers.preprocess import normalize

        x = torch.nn.functional.interpolate(images.float().clamp(0, 1), size=(self.size, self.size), mode="bicubic",
                                            antialias=True, align_corners=False)
        x = normalize(x, self.mean, self.std)
        param = next(self.model.parameters())
        ids = self.model.generate(pixel_values=x.to(param.device, param.dtype), max_new_tokens=MAX_NEW_TOKENS)
        return [" ".join(c.split()) for c in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def load_blip(variant: str = "", device="cpu") -> BlipCaptioner:
    """BLIP by variant: ``""``/``large`` (the default weights), ``base``, ``tiny`` (random weights, offline), or a
    hub id or local folder. Cached weights first; the hub only where it can be reached.

    Raises:
        CaptionerError: the weights are not cached and the hub cannot be reached, or a folder is not a BLIP model.
    """
    if variant == "tiny":
        return tiny_blip(device)
    source = BLIP_ALIASES.get(variant, variant)
    name = "blip" if variant in ("", "large") else f"blip:{variant}"
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from .hub import cached_then_hub

    local = Path(source).expanduser().is_dir()
    if not local and (source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source):
        raise CaptionerError(f"captioner {name}: there is no folder {excerpt(source, quote=False)} (a local BLIP "
                             f"model, or a hub id such as {BLIP_LARGE}); {AVOID}")
    downloading = False

    def load(cached: bool):
        nonlocal downloading
        downloading = not cached
        return (BlipProcessor.from_pretrained(source, local_files_only=cached),
                BlipForConditionalGeneration.from_pretrained(source, local_files_only=cached))

    try:
        processor, model = cached_then_hub(load, local=local)
    except Exception as exc:  # noqa: BLE001 - any failure to load is one line naming the captioner, never a traceback
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        if local:
            raise CaptionerError(f"captioner {name}: could not load BLIP from {source}: "
                                 f"{excerpt(first, 160, quote=False)}; {AVOID}") from None
        if downloading:
            raise CaptionerError(f"captioner {name}: could not download {source} "
                                 f"({excerpt(first, 120, quote=False)}): run `hf download {source}` where there "
                                 f"is network; {AVOID}") from None
        raise CaptionerError(f"captioner {name}: {source} is not cached and the hub cannot be reached: run "
                             f"`hf download {source}` where there is network; {AVOID}") from None
    ip = processor.image_processor
    size = ip.size.get("height") or ip.size.get("shortest_edge") or 384
    return BlipCaptioner(model.to(device), size, processor.tokenizer, name, mean=ip.image_mean, std=ip.image_std)


def tiny_blip(device="cpu") -> BlipCaptioner:
    """A random-weight tiny BLIP (32-px images) whose vocabulary is the Attend-and-Excite prompts' words: builds
    offline in a second; its captions are noise (tests and smoke runs)."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    from .tokenizer import cache_dir

    words = sorted({w for ps in _ane_prompts().values() for p in ps for w in p.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    path = cache_dir() / "tiny-blip-vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != "\n".join(vocab) + "\n":
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(vocab) + "\n")
        os.replace(tmp, path)
    tokenizer = BertTokenizer(str(path))
    text = dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, encoder_hidden_size=32, bos_token_id=2, sep_token_id=3, pad_token_id=0,
                eos_token_id=3)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).to(device)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id, gen.decoder_start_token_id = 2, 3, 0, 2
    return BlipCaptioner(model, 32, tokenizer, "blip:tiny")


def _ane_prompts() -> dict:
    """The Attend-and-Excite prompts shipped with the package (the tiny BLIP's vocabulary)."""
    path = Path(__file__).resolve().parent / "assets" / "data" / "ane_prompts.json"
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------------ cache


def image_key(pixels: torch.Tensor) -> str:
    """A digest of an image's content (``(1, 3, H, W)`` or ``(3, H, W)`` in [0, 1], quantised to 8 bits): the same
    photo at the same processed size has the same key."""
    x = pixels.detach().float().cpu().clamp(0, 1)
    q = (x * 255.0).round().to(torch.uint8).contiguous()
    h = hashlib.sha256(str(tuple(q.shape)).encode())
    h.update(q.numpy().tobytes())
    return h.hexdigest()


class CaptionCache:
    """One caption per (image content, captioner name); with ``path`` kept in a JSON file across runs (read when it
    exists, written atomically by :meth:`save`; a file that cannot be read is ignored, with a warning)."""

    def __init__(self, path: Optional[os.PathLike | str] = None) -> None:
        self.path = Path(path) if path is not None else None
        self.captions: dict[str, str] = {}
        self._dirty = False
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                    raise ValueError("not an object of captions")
                self.captions = {str(k): v for k, v in data.items()}
            except (OSError, ValueError) as exc:
                warnings.warn(f"caption cache {self.path} ignored ({excerpt(exc, quote=False)}): captions are made "
                              "again", stacklevel=2)

    @staticmethod
    def key(captioner_name: str, pixels: torch.Tensor) -> str:
        """The cache key of an image for a captioner."""
        return f"{captioner_name}|{image_key(pixels)}"

    def get_or_caption(self, captioner: Captioner, pixels: torch.Tensor) -> tuple[str, float, bool]:
        """``(caption, seconds, cached)`` of the ``(1, 3, H, W)`` image ``pixels`` by ``captioner``."""
        key = self.key(getattr(captioner, "name", type(captioner).__name__), pixels)
        if key in self.captions:
            return self.captions[key], 0.0, True
        started = time.perf_counter()
        captions = captioner(pixels[:1] if pixels.dim() == 4 else pixels[None])
        if not isinstance(captions, (list, tuple)) or len(captions) != 1 or not isinstance(captions[0], str):
            raise CaptionerError(f"captioner {getattr(captioner, 'name', '?')} returned {excerpt(captions)}, not one "
                                 f"caption per image; {AVOID}")
        text = " ".join(captions[0].split())
        self.captions[key] = text
        self._dirty = True
        return text, time.perf_counter() - started, False

    def save(self) -> None:
        """Write the cache file (when there is one and something new to keep)."""
        if self.path is None or not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.captions, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:  # a cache: losing it costs a caption, never the run
            warnings.warn(f"caption cache {self.path} not written ({excerpt(exc, quote=False)})", stacklevel=2)
