"""Make the ``image-reward`` 1.5 package (2023, transformers 4.x era) import and run on transformers 5.x.

Its BLIP text encoder (``ImageReward/models/BLIP/med.py``, ``blip.py``) uses five things transformers 5 no
longer has. :func:`install` restores them at load time, without editing site-packages:

1. ``apply_chunking_to_forward``, ``prune_linear_layer`` (moved to ``transformers.pytorch_utils``) and
   ``find_pruneable_heads_and_indices`` (removed) are exported again from ``transformers.modeling_utils``,
   which ``med.py`` imports them from. Added only when missing.
2. ``BertModel.__init__`` calls ``self.init_weights()`` instead of ``post_init()``; on 5.x that reads
   ``all_tied_weights_keys``, which only ``post_init`` sets. The compat ``init_weights`` runs ``post_init`` first.
3. ``invert_attention_mask`` (gone from ``PreTrainedModel``) is added to the BLIP ``BertModel``.
4. ``get_head_mask`` (gone from ``PreTrainedModel``) is added to the BLIP ``BertModel``.
5. ``tokenizer.additional_special_tokens_ids`` (gone; 5.x calls them ``extra_special_tokens``) is provided by
   a ``BertTokenizer`` subclass that ``blip.init_tokenizer`` builds instead of the plain class.

Also undone after the import, because they are global side effects of importing the package:
``warnings.filterwarnings("ignore")`` (``blip.py``) and ``transformers.logging.set_verbosity_error()``
(``blip_pretrain.py``). ``ImageReward.ReFL`` (a training script that imports ``datasets``, ``accelerate`` and
diffusers, about 3 s) is skipped during the import and left importable afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

_INSTALLED: Optional[types.ModuleType] = None


# --------------------------------------------------------------------------------------- fix 1: pruning helpers


def find_pruneable_heads_and_indices(
    heads: Iterable[int], n_heads: int, head_size: int, already_pruned_heads: set[int]
) -> tuple[set[int], torch.Tensor]:
    """Heads still to prune (original numbering) and the flat indices ``(n_kept * head_size,)`` of the kept dims.

    ``already_pruned_heads`` use the original numbering; the current layer has ``n_heads`` heads left.
    """
    to_prune = set(heads) - set(already_pruned_heads)
    keep = torch.ones(n_heads, head_size, dtype=torch.bool)
    for head in to_prune:
        # position of this head in the current (already pruned) layer
        shift = sum(1 for pruned in already_pruned_heads if pruned < head)
        keep[head - shift] = False
    return to_prune, torch.arange(n_heads * head_size)[keep.flatten()]


def _export_pruning_helpers() -> list[str]:
    """Put the three helpers back into ``transformers.modeling_utils`` where missing; returns the names added."""
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    added = []
    for name in ("apply_chunking_to_forward", "prune_linear_layer", "find_pruneable_heads_and_indices"):
        if hasattr(modeling_utils, name):
            continue
        value = getattr(pytorch_utils, name, None) or globals()[name]
        setattr(modeling_utils, name, value)
        added.append(name)
    return added


# ------------------------------------------------------------------------------ fixes 2-4: BertModel methods


def compat_init_weights(self) -> None:
    """``init_weights`` that works when called from ``__init__`` on transformers 5 (runs ``post_init`` first)."""
    from transformers import PreTrainedModel

    if not hasattr(self, "all_tied_weights_keys"):
        # post_init registers the tied-weight keys (and the other static properties), then calls init_weights again
        self.post_init()
        return
    PreTrainedModel.init_weights(self)


def invert_attention_mask(self, encoder_attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, S)`` / ``(B, T, S)`` mask (1 attend, 0 ignore) -> additive ``(B, 1, 1|T, S)`` mask in the model dtype."""
    mask = encoder_attention_mask
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    elif mask.dim() == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(f"encoder attention mask must be 2-D or 3-D, got shape {tuple(mask.shape)}")
    mask = mask.to(dtype=self.dtype)
    return (1.0 - mask) * torch.finfo(self.dtype).min


def get_head_mask(
    self, head_mask: Optional[torch.Tensor], num_hidden_layers: int, is_attention_chunked: bool = False
) -> list[Optional[torch.Tensor]] | torch.Tensor:
    """``None`` -> one ``None`` per layer; a ``(H,)`` or ``(L, H)`` keep-mask -> ``(L, 1, H, 1, 1)`` in model dtype."""
    if head_mask is None:
        return [None] * num_hidden_layers
    if head_mask.dim() == 1:
        head_mask = head_mask[None, None, :, None, None].expand(num_hidden_layers, -1, -1, -1, -1)
    elif head_mask.dim() == 2:
        head_mask = head_mask[:, None, :, None, None]
    else:
        raise ValueError(f"head mask must be 1-D or 2-D, got shape {tuple(head_mask.shape)}")
    if is_attention_chunked:
        head_mask = head_mask.unsqueeze(-1)
    return head_mask.to(dtype=self.dtype)


def _patch_bert_classes(med: types.ModuleType) -> list[str]:
    """Give the BLIP ``BertModel``/``BertLMHeadModel`` what transformers 5 dropped; returns what was patched."""
    from transformers import PreTrainedModel

    patched = []
    needs_post_init = hasattr(PreTrainedModel, "get_expanded_tied_weights_keys")
    for cls in (med.BertModel, med.BertLMHeadModel):
        if needs_post_init and cls.__dict__.get("init_weights") is not compat_init_weights:
            cls.init_weights = compat_init_weights
            patched.append(f"{cls.__name__}.init_weights")
        for name, fn in (("invert_attention_mask", invert_attention_mask), ("get_head_mask", get_head_mask)):
            if not hasattr(cls, name):
                setattr(cls, name, fn)
                patched.append(f"{cls.__name__}.{name}")
    return patched


# ---------------------------------------------------------------------------------------- fix 5: tokenizer


def _special_ids_property(self) -> list[int]:
    """Ids of the extra special tokens (BLIP's ``[ENC]``), as 4.x's ``additional_special_tokens_ids`` gave them."""
    tokens = getattr(self, "extra_special_tokens", None)
    if tokens is None:
        tokens = getattr(self, "additional_special_tokens", [])
    if isinstance(tokens, dict):  # some 5.x tokenizers keep named extra tokens
        tokens = list(tokens.values())
    return [self.convert_tokens_to_ids(str(t)) for t in tokens]


def compat_tokenizer_class(base: type) -> type:
    """``base`` itself if it has ``additional_special_tokens_ids``; else a subclass that provides it."""
    if hasattr(base, "additional_special_tokens_ids"):
        return base
    return type(base.__name__, (base,), {"additional_special_tokens_ids": property(_special_ids_property),
                                         "__module__": __name__, "_date_edit_compat": True})


# --------------------------------------------------------------------------------------------- install


def _blanket_or_ours(entry: tuple) -> bool:
    """A warnings filter with no message/module restriction on all warnings, or the pkg_resources one set below."""
    action, message, category, module, lineno = entry
    text = getattr(message, "pattern", message) or ""
    blanket = not text and module is None and lineno == 0 and category is Warning
    return blanket or text.startswith("pkg_resources is deprecated")


@contextlib.contextmanager
def _contained_import_side_effects() -> Iterator[None]:
    """Undo the package's global warning filter / transformers verbosity, and keep its prints off stdout."""
    import transformers

    before = list(warnings.filters)
    verbosity = transformers.logging.get_verbosity()
    stub = "ImageReward.ReFL"
    inserted = stub not in sys.modules
    if inserted:
        sys.modules[stub] = types.ModuleType(stub, "placeholder while date-edit imports ImageReward (training code)")
    try:
        # clip-anytorch (imported by the package) imports pkg_resources, which warns about itself
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        # drop what the import added blanket-wide (blip.py's "ignore" for every warning) and our own filter;
        # keep the targeted filters other libraries install when first imported (numpy, scipy)
        warnings.filters[:] = [f for f in warnings.filters if f in before or not _blanket_or_ours(f)]
        mutated = getattr(warnings, "_filters_mutated", None)  # invalidates the per-module "once" caches
        if mutated is not None:
            mutated()
        transformers.logging.set_verbosity(verbosity)
        if inserted:
            sys.modules.pop(stub, None)
            package = sys.modules.get("ImageReward")
            if package is not None and isinstance(getattr(package, "ReFL", None), types.ModuleType) \
                    and not hasattr(package.ReFL, "__file__"):
                delattr(package, "ReFL")


def install() -> types.ModuleType:
    """Apply the five fixes and import ``ImageReward`` (idempotent); returns the package module.

    Raises:
        ImportError: the package (or its undeclared ``clip`` dependency) is not installed.
    """
    global _INSTALLED
    if _INSTALLED is not None:
        return _INSTALLED
    _export_pruning_helpers()
    with _contained_import_side_effects():
        package = importlib.import_module("ImageReward")
        med = importlib.import_module("ImageReward.models.BLIP.med")
        blip = importlib.import_module("ImageReward.models.BLIP.blip")
    _patch_bert_classes(med)
    blip.BertTokenizer = compat_tokenizer_class(blip.BertTokenizer)
    _INSTALLED = package
    return package


@contextlib.contextmanager
def patched(module: types.ModuleType, name: str, value: Any) -> Iterator[None]:
    """Temporarily replace ``module.name`` with ``value``."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def build_overrides(
    create_vit: Optional[Callable[..., tuple[torch.nn.Module, int]]] = None, vocab_file: Optional[str] = None
) -> Iterator[None]:
    """While building ``ImageReward(...)``: a different ViT factory and/or a BERT tokenizer from a local ``vocab.txt``.

    The model code runs unchanged (``BLIP_Pretrain.__init__``, ``init_tokenizer`` and all); only where the
    ViT and the tokenizer vocabulary come from is redirected. Without arguments, nothing is changed.
    """
    install()
    blip = sys.modules["ImageReward.models.BLIP.blip"]
    blip_pretrain = sys.modules["ImageReward.models.BLIP.blip_pretrain"]
    with contextlib.ExitStack() as stack:
        if create_vit is not None:
            stack.enter_context(patched(blip_pretrain, "create_vit", create_vit))
        if vocab_file is not None:
            base = blip.BertTokenizer

            def from_pretrained(cls, *_args, **_kwargs):
                return cls(vocab_file)  # positional: transformers 5 ignores vocab_file= as a keyword

            local = type(base.__name__, (base,), {"from_pretrained": classmethod(from_pretrained),
                                                  "__module__": __name__})
            stack.enter_context(patched(blip, "BertTokenizer", local))
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        yield


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logger around a BLIP forward (its 4.x output names log a 5.x deprecation notice)."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
