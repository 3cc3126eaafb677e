"""PIE-Bench (Ju et al., ICLR 2024) as the harness reads it: the mapping file, its run-length masks, the edit types,
the published settings of the editors it compares, and the reference evaluation's folder layout.

The dataset as distributed::

    DIR/mapping_file.json            {key: {image_path, original_prompt, editing_prompt, editing_instruction,
                                            editing_type_id, blended_word, mask}, ...}
    DIR/annotation_images/<image_path>   512x512 photos (0_random_140/000000000000.jpg, ...)

``mask`` is a flat list of (start, length) pairs over the row-major 512x512 image; 1 marks the region to edit. The
reference evaluation (cure-lab/PnPInversion ``evaluation/evaluate.py``) clips a run that overflows the image and sets
the one-pixel border to 1 ("to avoid annotation errors in boundary"); :func:`decode_mask` does the same.
Prompts carry the edited words in brackets (``a [red] car``); the reference strips the brackets before use.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from date_edit.defaults import FLOWEDIT_DEFAULTS
from date_edit.errors import ConfigError, printable

MAPPING = "mapping_file.json"
IMAGES = "annotation_images"
SIZE = (512, 512)
MAX_MAPPING_BYTES = 256 * 2**20  # the real file is about 15 MB
# an item's key names its output files (``images/<method>/<key>_s<seed>.png``): a plain name, never a path (the
# dataset's keys are 12 digits)
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHORT = reprlib.Repr()  # how messages quote the mapping's values: a short excerpt, whatever their size or depth
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 40, 40, 2, 4, 4

# editing_type_id -> the edit type (the dataset's folder names: 0_random_140, 1_change_object_80, ...)
CATEGORIES = {
    "0": "random", "1": "change object", "2": "add object", "3": "delete object", "4": "change content",
    "5": "change pose", "6": "change color", "7": "change material", "8": "change background", "9": "change style",
}

# Published settings of the editors PIE-Bench compares, as named presets of the harness's edit suites.
# steps/skip/cfg_source/cfg_target go to EditConfig; cross/self are Prompt-to-Prompt's windows where a method asks
# for it (``@p2p``); method: the editor (ddpm: edit-friendly inversion, flowedit: inversion-free flow editing).
PRESETS: dict[str, dict] = {
    # PnPInversion's runner of edit-friendly DDPM + P2P (run_editing_edit_friendly_p2p.py): the published PIE row
    "pie-ef-p2p": {"steps": 50, "skip": 12, "cfg_source": 1.0, "cfg_target": 7.5, "cross": 0.4, "self": 0.6,
                   "method": "ddpm"},
    # the edit-friendly DDPM paper's defaults (CVPR 2024) with its repository's P2P windows
    "ef": {"steps": 100, "skip": 36, "cfg_source": 3.5, "cfg_target": 15.0, "cross": 0.6, "self": 0.2,
           "method": "ddpm"},
    # the edit-friendly repository README's P2P example: skip 12 of 100, target CFG 9, cross 0.6, self 0.2
    "ef-p2p-readme": {"steps": 100, "skip": 12, "cfg_source": 3.5, "cfg_target": 9.0, "cross": 0.6, "self": 0.2,
                      "method": "ddpm"},
    # date-edit's own defaults (`date-edit photo.png "prompt"`): chosen on the toy validation split (issue 27)
    "date-edit": {"steps": 100, "skip": "36%", "cfg_source": 3.5, "cfg_target": 7.5, "cross": 0.8, "self": 0.8,
                  "method": "ddpm"},
    # FlowEdit's published settings (Kulikov et al. 2024): SD3 n_max 33 of 50, FLUX n_max 24 of 28
    "flowedit-sd3": {**FLOWEDIT_DEFAULTS["sd3"], "method": "flowedit"},
    "flowedit-flux": {**FLOWEDIT_DEFAULTS["flux"], "method": "flowedit"},
}


def default_preset(family: str) -> str:
    """The preset a PIE run uses when none is named: FlowEdit's for SD3/FLUX, the published DDPM + P2P runner's
    otherwise."""
    return {"sd3": "flowedit-sd3", "flux": "flowedit-flux"}.get(family, "pie-ef-p2p")


def check_preset(name: str) -> dict:
    """The settings of preset ``name`` (a one-line ConfigError naming the known ones otherwise)."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def decode_mask(runs, shape: tuple[int, int] = SIZE, border: bool = True) -> np.ndarray:
    """A PIE run-length mask as a ``(H, W)`` uint8 array of 0/1 (1: the region to edit).

    ``runs`` is ``[start, length, start, length, ...]`` over the row-major flattened image. A run that passes the
    end is clipped at it, as the reference does; ``border=True`` sets the one-pixel frame to 1, as the reference
    evaluation does before measuring (the editors' input is the annotation as drawn: ``border=False``).

    Raises:
        ValueError: an odd number of values, or a start or length that is not a non-negative integer.
    """
    values = list(runs)
    if len(values) % 2:
        raise ValueError(f"a PIE mask is (start, length) pairs; got {len(values)} numbers")
    h, w = shape
    total = h * w
    flat = np.zeros(total, dtype=np.uint8)
    for start, length in zip(values[0::2], values[1::2]):
        if isinstance(start, bool) or isinstance(length, bool) or not isinstance(start, int) \
                or not isinstance(length, int) or start < 0 or length < 0:
            raise ValueError(f"a PIE mask run must be two non-negative integers, got ({excerpt(start)}, "
                             f"{excerpt(length)})")
        flat[start:start + max(0, min(length, total - start))] = 1
    mask = flat.reshape(h, w)
    if border:
        mask[0, :] = mask[-1, :] = 1
        mask[:, 0] = mask[:, -1] = 1
    return mask


def bench_mask(item, size: tuple[int, int]):
    """The PIE item's hand-drawn mask as drawn (no border rule) at the edit's ``size``: ``(1, 1, H, W)``."""
    import torch
    from PIL import Image

    with Image.open(item.pie.image) as im:
        w, h = im.size
    mask = Image.fromarray(decode_mask(item.pie.runs, (h, w), border=False) * 255)
    mask = mask.resize((size[1], size[0]), Image.NEAREST)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]


def bracketed(prompt: str) -> list[str]:
    """The bracketed words of a PIE prompt (``"a [red] car"`` -> ``["red"]``)."""
    return [m.strip() for m in re.findall(r"\[([^\]]*)\]", prompt) if m.strip()]


def strip_brackets(prompt: str) -> str:
    """The prompt as the reference uses it: brackets removed, words kept."""
    return prompt.replace("[", "").replace("]", "")


@dataclass(frozen=True)
class PieEntry:
    """One PIE-Bench item, prompts as the editors see them (brackets stripped)."""

    key: str
    image_path: str  # relative to annotation_images/, also the path the reference layout uses
    image: Path
    source_prompt: str
    target_prompt: str
    instruction: str
    category: str  # editing_type_id, "0".."9"
    blended_words: tuple[str, ...]
    edited_words: tuple[str, ...]  # the target prompt's bracketed words
    runs: tuple[int, ...] = field(repr=False)

    @property
    def category_name(self) -> str:
        """The edit type's name (``change color``)."""
        return CATEGORIES.get(self.category, self.category)


def parse_categories(text: Optional[str]) -> Optional[set[str]]:
    """``--category`` for PIE: ``all`` (None), or a comma list of type ids (``6,7``) or names (``change color``,
    ``change_color``)."""
    if text is None or text.strip() in ("", "all"):
        return None
    by_name = {name.replace(" ", "_"): key for key, name in CATEGORIES.items()}
    chosen = set()
    for part in text.split(","):
        p = part.strip().replace(" ", "_")
        if p in CATEGORIES:
            chosen.add(p)
        elif p in by_name:
            chosen.add(by_name[p])
        else:
            raise ConfigError("category", f"PIE edit type {part.strip()!r}: use ids 0..9 or names "
                                          f"({', '.join(n.replace(' ', '_') for n in CATEGORIES.values())})")
    return chosen


def excerpt(value) -> str:
    """``value`` quoted for a message: its repr cut short (strings, lists and nesting alike), always printable."""
    return printable(_SHORT.repr(value))


def plain_name(text) -> bool:
    """Whether ``text`` can name a file by itself: letters, digits, ``.``, ``_``, ``-`` (not first), at most 128."""
    return isinstance(text, str) and PLAIN_NAME.fullmatch(text) is not None


def _inside(path: str) -> Optional[PurePosixPath]:
    """``path`` as a relative path that stays in its folder (not empty, not absolute, no ``..``), else None."""
    p = PurePosixPath(path.replace("\\", "/"))
    if not path.strip() or "\0" in path or p.is_absolute() or ".." in p.parts or str(p) == ".":
        return None
    return p


def _relative(path: str, key: str) -> str:
    """``image_path`` as a safe relative path (no absolute paths, no ``..``): it names files we read and write."""
    p = _inside(path)
    if p is None:
        raise ConfigError("data", f"{MAPPING}: item {key!r} has image_path {excerpt(path)}: expected a path inside "
                                  f"{IMAGES}/")
    return str(p)


def load_pie(data: str | os.PathLike, categories: Optional[set[str]] = None,
             limit: Optional[int] = None) -> list[PieEntry]:
    """The items of a PIE-Bench folder in the mapping file's order, of the chosen edit types, the first ``limit``.

    Raises:
        ConfigError: one line naming what is wrong: no folder, no or unreadable mapping file (or one nested too
            deeply to parse), a key that is not a plain name, an item without a field the benchmark needs or with
            one of the wrong type, a bad mask, an image that is not there or whose real path leaves ``data``.
    """
    root = Path(data).expanduser()
    mapping_path = root / MAPPING
    if not root.is_dir():
        raise ConfigError("data", f"{root}: no such folder (give the PIE-Bench folder holding {MAPPING} and "
                                  f"{IMAGES}/)")
    if not mapping_path.is_file():
        raise ConfigError("data", f"{mapping_path}: not found; PIE-Bench comes as a folder with {MAPPING} and "
                                  f"{IMAGES}/ (see docs/benchmarks.md, 'PIE-Bench')")
    if mapping_path.stat().st_size > MAX_MAPPING_BYTES:
        raise ConfigError("data", f"{mapping_path} is over {MAX_MAPPING_BYTES >> 20} MiB: not a PIE mapping file")
    try:
        mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError("data", f"{mapping_path}: not JSON ({str(exc).splitlines()[0][:120]})") from None
    except RecursionError:  # [[[[...]]]]: the parser recurses once per level
        raise ConfigError("data", f"{mapping_path}: nested too deeply to parse; a PIE mapping is an object of "
                                  "items, each an object of strings and a mask list") from None
    if not isinstance(mapping, dict):
        raise ConfigError("data", f"{mapping_path}: expected an object of items by key, got "
                                  f"{type(mapping).__name__}")
    entries = []
    real_root = root.resolve()
    for key, item in mapping.items():
        entry = _entry(root, real_root, key, item)
        if categories is None or entry.category in categories:
            entries.append(entry)
        if limit and len(entries) >= limit:
            break
    if not entries:
        raise ConfigError("category", f"{mapping_path}: no item of the chosen edit types")
    return entries


# the fields of an item: name -> (required, the JSON types it may have, as the message says them)
FIELDS = {"image_path": (True, (str,), "a string"), "original_prompt": (True, (str,), "a string"),
          "editing_prompt": (True, (str,), "a string"), "editing_type_id": (True, (str, int), "a string or integer"),
          "mask": (True, (list,), "a list of numbers"), "editing_instruction": (False, (str,), "a string"),
          "blended_word": (False, (str,), "a string")}


def _check_item(key, item) -> str:
    """The item's key, after its key and its fields' types are checked (one line naming the first problem)."""
    if not plain_name(key):
        raise ConfigError("data", f"{MAPPING}: item key {excerpt(key)} is not a plain name (letters, digits, '.', "
                                  "'_', '-'; the dataset's are 12 digits): it names the item's output files")
    if not isinstance(item, dict):
        raise ConfigError("data", f"{MAPPING}: item {key!r} is {type(item).__name__}, expected an object")
    missing = [k for k, (needed, _, _) in FIELDS.items() if needed and k not in item]
    if missing:
        raise ConfigError("data", f"{MAPPING}: item {key!r} lacks {', '.join(missing)}")
    for name, (needed, types, said) in FIELDS.items():
        value = item.get(name)
        if value is None and not needed:
            continue
        if not isinstance(value, types) or isinstance(value, bool):
            raise ConfigError("data", f"{MAPPING}: item {key!r} has {name} {excerpt(value)}: expected {said}")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate (JSON escapes d800..dfff): no tokenizer takes it
                raise ConfigError("data", f"{MAPPING}: item {key!r} has {name} {excerpt(value)}: not valid "
                                          "Unicode text") from None
    return key


def _image(root: Path, real_root: Path, rel: str, key: str) -> Path:
    """The real path of the item's photo, which must be a file inside the data folder (links are followed, and
    must not lead out of it)."""
    image = root / IMAGES / rel
    if not image.is_file():
        raise ConfigError("data", f"{root / IMAGES}/{excerpt(rel)[1:-1]}: not found (item {key!r} of {MAPPING})")
    try:
        real = image.resolve(strict=True)
    except (OSError, RuntimeError):  # a link loop, or the file went away
        raise ConfigError("data", f"{root / IMAGES}/{excerpt(rel)[1:-1]}: cannot be opened (item {key!r} of "
                                  f"{MAPPING})") from None
    if not real.is_relative_to(real_root):
        raise ConfigError("data", f"{root / IMAGES}/{excerpt(rel)[1:-1]} (item {key!r}) is a link to a file "
                                  f"outside {root}: the dataset's files must be inside --data")
    return real


def _entry(root: Path, real_root: Path, key, item) -> PieEntry:
    """One checked item: its shape first, then its mask, then its photo."""
    key = _check_item(key, item)
    rel = _relative(item["image_path"], key)
    runs = item["mask"]
    try:
        decode_mask(runs)
    except (TypeError, ValueError) as exc:
        raise ConfigError("data", f"{MAPPING}: item {key!r}: {exc}") from None
    image = _image(root, real_root, rel, key)
    blended = str(item.get("blended_word") or "").split()
    return PieEntry(key=key, image_path=rel, image=image,
                    source_prompt=strip_brackets(item["original_prompt"]),
                    target_prompt=strip_brackets(item["editing_prompt"]),
                    instruction=str(item.get("editing_instruction") or ""),
                    category=str(item["editing_type_id"]), blended_words=tuple(blended),
                    edited_words=tuple(bracketed(item["editing_prompt"])), runs=tuple(runs))


def reference_path(out: Path, method_slug: str, image_path: str) -> Path:
    """Where the reference layout keeps a method's edit of one item: ``<out>/reference/<method>/annotation_images/
    <image_path>``, the folder the reference's ``evaluate.py`` reads as ``output/<method>/annotation_images``.

    Raises:
        ConfigError: a method slug that is not one file name or an ``image_path`` that would leave that folder
            (absolute, ``..``): nothing is written outside ``out``, whatever the mapping says.
    """
    rel, slug = _inside(str(image_path)), _inside(str(method_slug))
    if rel is None or slug is None or len(slug.parts) != 1:
        raise ConfigError("data", f"the reference layout of {excerpt(method_slug)} cannot hold image_path "
                                  f"{excerpt(image_path)}: expected a path inside {IMAGES}/")
    return out / "reference" / method_slug / IMAGES / rel


def encode_mask(mask: np.ndarray) -> list[int]:
    """The inverse of ``decode_mask(..., border=False)``: (start, length) pairs of the 1-runs (to build fixtures)."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=np.uint8).reshape(-1), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]
