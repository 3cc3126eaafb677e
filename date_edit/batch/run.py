"""Running items: per item, decide (skip, fail or edit), load the model once, edit in batches of equal settings
and size, retry (smaller batches after OOM, float32 after non-finite output), write and record. The job around it
(the lock, the housekeeping, the order of items, the ranks of a job of several processes) is :mod:`.job`."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BatchError, DateEditError

if TYPE_CHECKING:  # torch and the pipeline load only when an item needs work: an up-to-date rerun never pays
    from ..backbones import Backbone
    from ..imaging import LoadedImage
    from ..pipeline import Result
from .items import (
    _PER_ITEM, METADATA_KEY, RESULTS_NAME, BatchInterrupted, Item, ItemSettings, Status, Summary,
    options_hash, sha256_file,
)
from .decision import decide
from .plan import stays_inside
from ..outputs import json_safe
from .results import ResultsLog, _Interrupts, dumps_record, output_state

# ------------------------------------------------------------------------------------------------ running


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (``torch.cuda.OutOfMemoryError``, or an older "out of memory" RuntimeError) or host OOM."""
    return (type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError)
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


def reason(exc: BaseException) -> str:
    """An exception as one line: its own message for expected errors, else ``Type: message``."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, DateEditError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def as_float32(backbone: Backbone) -> Iterator[Backbone]:
    """Run the backbone's models in float32 inside the block, then back (fp16/bf16 -> fp32 -> back is exact)."""
    import torch

    dtype = backbone.dtype
    if dtype == torch.float32:
        yield backbone
        return
    modules = backbone.modules()  # the gradient decoder too: a bf16 one would meet fp32 latents
    with _quiet_diffusers():
        for m in modules:
            m.to(torch.float32)
    backbone.dtype = torch.float32
    try:
        yield backbone
    finally:
        with _quiet_diffusers():
            for m in modules:
                m.to(dtype)
        backbone.dtype = dtype


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers warns on every ``.to(dtype)`` of a model; a deliberate round trip needs no warning."""
    try:
        from diffusers.utils import logging as diffusers_logging
    except ImportError:
        yield
        return
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


def basic_record(result: Result, settings: ItemSettings, loaded: LoadedImage, backbone: Backbone, scorer: Any) -> dict:
    """A minimal edit record (the CLI passes its ``edit --json`` record builder instead)."""
    return {
        "command": "edit",
        "model": settings.model,
        "prompt": settings.prompt,
        "source_prompt": settings.source_prompt,
        "seed": settings.config.seed,
        "processed_size": list(loaded.processed_size),
        "update_steps": result.update_steps,
        "embedding_drift": result.embedding_drift,
        "timings": result.timings,
        "config": result.config,
    }


@dataclass
class _Work:
    item: Item
    settings: ItemSettings
    input_hash: str | None
    options_hash: str
    overwrite: bool  # the output exists and is ours (stale), or --force
    loaded: Any = None  # LoadedImage


def _item_result(result: Result, i: int, seed: int) -> Result:
    """Item ``i`` of a batched result (the DATE trace stays the batch's: its norms are means over the batch)."""
    source, mask = result.source_latents, getattr(result, "mask", None)
    return replace(result, images=result.images[i:i + 1], latents=result.latents[i:i + 1],
                   prompts=[result.prompts[i]], config={**result.config, "seed": seed}, inversion=None,
                   source_latents=None if source is None else source[i:i + 1],
                   mask=None if mask is None else mask[i:i + 1])


def _inputs(work: _Work) -> list:
    """The files an item reads, which its writes never replace: its photo first, then its mask file."""
    from ..choices import mask_file

    mask = mask_file(work.settings.options.get("mask"))
    return [work.item.source] + ([mask] if mask else [])


def _user_mask(work: _Work, max_pixels: int | None):
    """The item's mask file as a ``(1, 1, H, W)`` tensor over its processed image, or None (no mask, or auto)."""
    from ..choices import mask_file

    mask = mask_file(work.settings.options.get("mask"))
    if mask is None:
        return None
    from ..masks import load_mask

    return load_mask(mask, original_size=work.loaded.original_size, processed_size=work.loaded.processed_size,
                     resize=work.settings.resize, max_pixels=max_pixels)


class _Runner:
    """State of one run: the lazily loaded model, open groups of items waiting to fill a batch, the counts."""

    def __init__(self, items: Sequence[Item], out: Path, *, base_options: Mapping[str, Any],
                 resolve: Callable[[Mapping[str, Any]], ItemSettings],
                 load_model: Callable[[bool], tuple[Backbone, Any]], make_record: Callable[..., dict],
                 batch_size: int | None, force: bool, max_pixels: int | None, show_progress: bool,
                 say: Callable[[str], None], on_record: Callable[[dict], None] | None,
                 edit_fn: Callable[..., Result] | None,
                 prepare: Callable[..., ItemSettings] | None = None) -> None:
        self.items, self.out = list(items), out
        self.base_options, self.resolve, self.load_model = dict(base_options), resolve, load_model
        self.make_record, self.requested_batch_size, self.force = make_record, batch_size, force
        self.max_pixels, self.show_progress, self._say, self.on_record = max_pixels, show_progress, say, on_record
        self.edit_fn, self.prepare_settings = edit_fn, prepare
        self.summary = Summary(total=len(self.items), results=out / RESULTS_NAME)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.backbone: Any = None
        self.scorer: Any = None
        self.batch_size = 1
        self.groups: dict[str, list[_Work]] = {}
        self.hashes: dict[str, str] = {}
        self.bar: Any = None
        self.interrupts = _Interrupts()
        self.log: ResultsLog | None = None  # where records go: results.jsonl, or this rank's log (set by the job)
        self.tick: Callable[[], None] | None = None  # called after every record (the job's progress count)

    # -- messages and records

    def say(self, text: str) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=sys.stderr):
                self._say(text)
        else:
            self._say(text)

    def _append(self, record: dict) -> None:
        with self.interrupts.critical():
            self.log.append(record)
        if self.on_record is not None:
            self.on_record(json_safe(record))
        if self.tick is not None:
            self.tick()

    def _base_record(self, item: Item, status: Status, input_hash: str | None) -> dict:
        return {"status": status.value, "error": None, "input": str(item.source), "label": item.label,
                "row": item.row, "output": str(item.output) if item.output else None, "input_sha256": input_hash,
                "run_id": self.run_id, "record_id": f"{self.run_id}:{item.index}"}

    def fail(self, item: Item, why: str, input_hash: str | None = None, ohash: str | None = None) -> None:
        rec = self._base_record(item, Status.FAILED, input_hash)
        rec.update(error=why, prompt=item.options.get("prompt"),
                   seed=item.options.get("seed", self.base_options.get("seed")), options_hash=ohash)
        self.summary.failed += 1
        self._append(rec)
        self.say(f"failed: {item.label}: {why}")

    def skip(self, item: Item, previous: dict, input_hash: str | None) -> None:
        rec = dict(previous)
        rec.update(self._base_record(item, Status.SKIPPED, input_hash))
        rec["reason"] = "up to date"
        self.summary.skipped += 1
        self._append(rec)

    # -- the item pipeline

    def input_hash(self, item: Item) -> str:
        """The input's sha256, read only once it is known to be a regular file within the size limit (ImageError
        otherwise, naming the file: a device such as /dev/zero, or a huge file, fails at once)."""
        from ..limits import max_input_bytes

        key = str(item.source)
        if key not in self.hashes:
            self.hashes[key] = sha256_file(item.source, max_bytes=max_input_bytes(self.max_pixels))
        return self.hashes[key]

    def prepare(self, item: Item) -> _Work | None:
        """Record planning errors, unreadable inputs and up-to-date outputs; return the work otherwise."""
        if item.error:
            self.fail(item, item.error)
            return None
        options = {**self.base_options, **item.options}
        ohash = options_hash(options)
        from ..imaging import ImageError

        try:
            ihash = self.input_hash(item)
        except ImageError as e:
            self.fail(item, reason(e), None, ohash)
            return None
        except OSError as e:
            self.fail(item, f"cannot read {item.source}: {e.strerror or e}", None, ohash)
            return None
        state, previous = output_state(item.output)
        facts = dict(input_hash=ihash, options_hash=ohash, state=state, previous=previous, force=self.force,
                     inside=item.output is None or stays_inside(item.output, self.out), output=item.output,
                     out_dir=self.out)
        decision, settings = decide(**facts), None
        if decision.action == "resolve":
            settings = self._resolve(item, options, ihash, ohash)
            if settings is None:
                return None
            decision = decide(**facts, config_hash=settings.config_hash())
        if decision.action == "skip":
            self.skip(item, previous, ihash)
            return None
        if decision.action == "fail":
            self.fail(item, decision.reason, ihash, ohash)
            return None
        return _Work(item, settings, ihash, ohash, overwrite=decision.overwrite)

    def _resolve(self, item: Item, options: dict, ihash: str, ohash: str) -> ItemSettings | None:
        """The item's settings, or None (recorded as failed). Until the model is loaded the file is checked first,
        so a run of bad or up-to-date items loads nothing. A usage error in the job's own options (the item
        overrides none) stops the job: :class:`BatchError`."""
        if self.backbone is None:
            from ..imaging import ImageError, load_image

            try:
                load_image(item.source, size=64, multiple=8, resize="stretch", max_pixels=self.max_pixels)
            except ImageError as e:
                self.fail(item, reason(e), ihash, ohash)
                return None
        try:
            return self.resolve(options)
        except DateEditError as e:
            if not any(k not in _PER_ITEM for k in item.options):
                raise BatchError(reason(e) if not isinstance(e, BatchError) else str(e)) from None
            self.fail(item, reason(e), ihash, ohash)  # the row's own overrides are wrong: that row fails
            return None

    def ensure_model(self, settings: ItemSettings) -> None:
        if self.backbone is None:
            # what loading prints (notes, library warnings) goes above the bar, not into its line
            with self.bar.external_write_mode(file=sys.stderr) if self.bar is not None else contextlib.nullcontext():
                self.backbone, self.scorer = self.load_model(settings.config.date is not None)
            default = 4 if self.backbone.device.type == "cuda" else 1
            self.batch_size = max(1, self.requested_batch_size or default)

    def add(self, work: _Work) -> None:
        from ..imaging import ImageError, load_image

        bb = self.backbone
        try:
            work.loaded = load_image(work.item.source, size=work.settings.size or bb.native_size,
                                     multiple=bb.size_multiple, resize=work.settings.resize,
                                     max_pixels=self.max_pixels, min_side=getattr(bb, "min_side", None))
        except ImageError as e:
            self.fail(work.item, reason(e), work.input_hash, work.options_hash)
            return
        if self.prepare_settings is not None:
            from ..errors import CaptionerError

            try:
                work.settings = self.prepare_settings(work.settings, work.loaded, bb)
            except CaptionerError as e:  # no item can be captioned: the job's error, as a model that cannot load
                raise BatchError(str(e)) from None
            except DateEditError as e:
                self.fail(work.item, reason(e), work.input_hash, work.options_hash)
                return
        w, h = work.loaded.processed_size
        key = f"{work.settings.group_key()}|{w}x{h}"
        group = self.groups.setdefault(key, [])
        group.append(work)
        if len(group) >= self.batch_size:
            self.run_chunk(self.groups.pop(key))

    def flush(self) -> None:
        while self.groups:
            key = next(iter(self.groups))
            group = self.groups.pop(key)
            for start in range(0, len(group), self.batch_size):
                self.interrupts.check()
                self.run_chunk(group[start:start + self.batch_size])

    def edit(self, chunk: list[_Work]) -> Result:
        import torch

        edit_fn = self.edit_fn
        if edit_fn is None:
            from ..pipeline import edit as edit_fn
        pixels = torch.cat([w.loaded.pixels for w in chunk])  # (B, 3, H, W)
        masks = [_user_mask(w, self.max_pixels) for w in chunk]
        extra = {"mask": torch.cat(masks)} if all(m is not None for m in masks) else {}
        return edit_fn(self.backbone, pixels, [w.settings.prompt for w in chunk],
                       source_prompt=[w.settings.source_prompt for w in chunk], config=chunk[0].settings.config,
                       scorer=self.scorer, seeds=[w.settings.config.seed for w in chunk], **extra)

    def free_memory(self) -> None:
        gc.collect()
        if self.backbone is not None and getattr(self.backbone.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()

    def run_chunk(self, chunk: list[_Work], retry: bool = False) -> None:
        """Edit a chunk; on an error retry its items one by one (OOM: once, at batch 1), then record failures."""
        try:
            result = self.edit(chunk)
        except BatchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001 - one item's failure must not stop the batch
            result, oom, why = None, is_out_of_memory(e), reason(e)
        if result is None:  # retried outside the except block, so the failed attempt's frames and tensors are freed
            if oom:
                self.free_memory()
                self.batch_size = max(1, min(self.batch_size, len(chunk) // 2))
            if len(chunk) > 1 or (oom and not retry):
                for work in chunk:  # the one retry, at a smaller batch
                    self.interrupts.check()
                    self.run_chunk([work], retry=True)
                return
            if oom:
                why = (f"out of memory even alone, after a retry ({why}); try a smaller --size, --dtype fp16 or "
                       "fewer --update-steps")
            self.fail(chunk[0].item, why, chunk[0].input_hash, chunk[0].options_hash)
            return
        self.finish_chunk(chunk, result)

    def finish_chunk(self, chunk: list[_Work], result: Result) -> None:
        import torch

        finite = torch.isfinite(result.latents.float()).flatten(1).all(dim=1)  # (B,)
        bad = [w for w, ok in zip(chunk, finite.tolist()) if not ok]
        for i, work in enumerate(chunk):
            if finite[i]:
                self.write(work, _item_result(result, i, work.settings.config.seed), len(chunk))
        if not bad:
            return
        if self.backbone.dtype == torch.float32:
            for work in bad:
                self.fail(work.item, "non-finite values (NaN/Inf) in the output latents, in float32",
                          work.input_hash, work.options_hash)
            return
        with as_float32(self.backbone):  # fp16 overflow is the usual cause: the same items again in float32
            for work in bad:
                self.interrupts.check()
                try:
                    retried = self.edit([work])
                except BatchInterrupted:
                    raise
                except Exception as e:  # noqa: BLE001
                    self.fail(work.item, f"non-finite output latents, and the float32 retry failed: {reason(e)}",
                              work.input_hash, work.options_hash)
                    continue
                if not bool(torch.isfinite(retried.latents.float()).all()):
                    self.fail(work.item, "non-finite values (NaN/Inf) in the output latents, also in float32",
                              work.input_hash, work.options_hash)
                    continue
                self.write(work, _item_result(retried, 0, work.settings.config.seed), 1, retried_fp32=True)

    def write(self, work: _Work, result: Result, batch_size: int, retried_fp32: bool = False) -> None:
        from ..imaging import save_png, to_pil

        item = work.item
        try:
            edit_record = self.make_record(result, work.settings, work.loaded, self.backbone, self.scorer)
            image = to_pil(result.images)[0]
        except BatchInterrupted:
            raise
        except Exception as e:  # noqa: BLE001
            self.fail(item, reason(e), work.input_hash, work.options_hash)
            return
        record = {"status": Status.OK.value, "error": None}
        record.update(edit_record)
        record.update(self._base_record(item, Status.OK, work.input_hash))
        record.update(options_hash=work.options_hash, config_hash=work.settings.config_hash(),
                      notes=list(work.loaded.notes), batch_size=batch_size, retried_fp32=retried_fp32)
        failure = None
        with self.interrupts.critical():  # the PNG and its results line: both, or (after a crash) the PNG alone
            try:
                save_png(image, item.output, metadata={METADATA_KEY: dumps_record(record)}, overwrite=work.overwrite,
                         protect=_inputs(work), within=self.out)
            except (OSError, ValueError) as e:  # OutputError is a ValueError
                failure = reason(e)
            else:
                self.summary.ok += 1
                self._append(record)
        if failure:
            self.fail(item, failure, work.input_hash, work.options_hash)
        elif work.settings.options.get("save_mask") and getattr(result, "mask", None) is not None:
            self._save_mask(work, result.mask)

    def _save_mask(self, work: _Work, mask) -> None:
        """``--save-mask``: the item's mask beside its output (``photo.mask.png``); a failure here is a note."""
        from ..imaging import save_png
        from ..masks import to_image

        target = work.item.output.with_name(f"{work.item.output.stem}.mask.png")
        try:
            save_png(to_image(mask), target, overwrite=True, protect=_inputs(work), within=self.out)
        except (OSError, ValueError) as e:
            self.say(f"{work.item.label}: the mask could not be saved: {reason(e)}")
