"""Prompt-to-Prompt attention control (Hertz et al. 2022) for UNets with cross-attention (SD 1.x/2.x, SDXL).

With edit-friendly inversion the source branch needs no sampling: its latent at step ``i`` is the stored ``x_ts[i]``.
:class:`P2PDenoiser` appends the rows ``[x_ts[i], source prompt]`` to the target's UNet call, and the processors of
:func:`attention_control` edit the target's conditional rows from them: cross-attention for the first
``cross_replace`` of the steps (``replace``: the source's maps; ``refine``: ``A_src[..., mapper] a + A_tgt (1 - a)``;
``reweight`` then scales token columns, unnormalised as in the paper), self-attention for the first
``self_replace`` in layers of at most 32 x 32 queries (the source's maps), and a local-blend mask from the changed
words' maps. Every other UNet call (DATE's gradient pass, the inversion) runs the original processors.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
from collections import namedtuple
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from .conditioning import Condition, as_conditioning, cat_conditions
from .errors import ConfigError, excerpt

P2P_FAMILIES = ("sd", "sdxl")  # families whose denoiser has cross-attention
MODES = ("replace", "refine")
SELF_MAX_TOKENS = 32 * 32  # self-attention is injected in layers with at most this many queries
# processors that compute plain softmax attention, so that computing it ourselves changes nothing else
PLAIN_PROCESSORS = frozenset({"AttnProcessor", "AttnProcessor2_0", "FusedAttnProcessor2_0", "XFormersAttnProcessor",
                              "SlicedAttnProcessor", "AttnProcessorNPU"})


def _is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _reweight_pairs(value: object) -> tuple[tuple[str, float], ...]:
    """``reweight`` as ``((word, factor), ...)`` from pairs or a ``{word: factor}`` mapping (JSON gives lists)."""
    pairs = []
    for entry in list(value.items()) if isinstance(value, Mapping) else list(value or ()):
        ok = isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or not entry[0].strip() or not _is_number(entry[1]) or entry[1] < 0:
            shown = excerpt(repr(entry), quote=False)
            raise ConfigError("reweight", f"{shown}: give (word, factor) pairs, a word of the target prompt and a "
                                          "finite factor >= 0")
        pairs.append((entry[0].strip(), float(entry[1])))
    if len({w.lower() for w, _ in pairs}) != len(pairs):
        raise ConfigError("reweight", f"a word is given twice in {excerpt(pairs, quote=False)}: give each word once")
    return tuple(pairs)


@dataclass(frozen=True)
class P2PConfig:
    """Prompt-to-Prompt settings (fractions of the edit's sampler steps, counted from the first step it runs).
    Defaults: chosen on the toy two-object validation split (the PIE-Bench runner uses 0.4 / 0.6)."""

    cross_replace: float = 0.8  # first fraction of the run's steps where the target's cross-attention is the source's
    self_replace: float = 0.8  # first fraction where the target's self-attention maps are the source's
    reweight: tuple[tuple[str, float], ...] = ()  # (word, factor): scale that word's cross-attention in the target
    local_blend: bool = False  # keep the source's latent outside a mask from the changed words' cross-attention
    blend_threshold: float = 0.3  # share of the maps' maximum above which a latent cell belongs to the blend mask

    def __post_init__(self) -> None:
        for name in ("cross_replace", "self_replace"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be a fraction of the steps in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "reweight", _reweight_pairs(self.reweight))
        if self.reweight and self.cross_replace == 0.0:
            raise ConfigError("reweight", "acts inside the cross-attention window: set cross_replace > 0")
        if not isinstance(self.local_blend, bool):
            raise ConfigError("local_blend", f"must be True or False, got {self.local_blend!r}")
        if not _is_number(self.blend_threshold) or not 0.0 < self.blend_threshold < 1.0:
            raise ConfigError("blend_threshold", f"must be strictly between 0 and 1, got {self.blend_threshold!r}")
        object.__setattr__(self, "blend_threshold", float(self.blend_threshold))

    def to_dict(self) -> dict:
        """JSON-ready settings (``reweight`` as ``[[word, factor], ...]``; ``P2PConfig(**d)`` reads it back)."""
        return asdict(self) | {"reweight": [[w, f] for w, f in self.reweight]}


def check_supported(backbone) -> None:
    """Raise ``ConfigError("p2p", ...)`` unless the backbone's denoiser has cross-attention (SD 1.x/2.x, SDXL)."""
    family = getattr(backbone, "family", None)
    if family not in P2P_FAMILIES:
        why = "uses joint attention" if family in ("sd3", "flux") else "is not one of them"
        raise ConfigError("p2p", f"Prompt-to-Prompt needs cross-attention (SD 1.x/2.x, SDXL); {family} {why}: use a "
                                 "mask instead")


def _token_ids(tokenizer, text: str, length: int) -> list[int]:
    """``[BOS, pieces..., EOS]`` of ``text``, cut to ``length`` as the text encoder cuts it (unpadded)."""
    return list(tokenizer(text, truncation=True, max_length=length).input_ids)


def token_alignment(tokenizer, source: str, target: str, length: int = 77) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Which source token each target token takes its cross-attention map from (Prompt-to-Prompt's mapper).

    ``replace`` for the same token count (a word swap: j maps to j); else ``refine``: pieces common to both (difflib's
    matching blocks over token ids) map to their source position, pieces only the target has keep their own map
    (``alpha = 0``), EOS maps to EOS and padding to the source's padding.

    Args:
        tokenizer: the backbone's (first) CLIP tokenizer (SDXL's second one gives the same positions).
        length: the condition's token length.

    Returns:
        ``(mapper, alphas, mode)``: ``mapper`` ``(length,)`` long, source index per target position; ``alphas``
        ``(length,)`` float, 1 where the target takes the source's map; ``mode`` ``"replace"`` or ``"refine"``.
    """
    src, tgt = _token_ids(tokenizer, source, length), _token_ids(tokenizer, target, length)
    mapper, alphas = torch.arange(length), torch.ones(length)
    if len(src) == len(tgt):
        return mapper, alphas, "replace"
    alphas[1:len(tgt) - 1] = 0.0
    for a, b, size in difflib.SequenceMatcher(None, src[1:-1], tgt[1:-1], autojunk=False).get_matching_blocks():
        mapper[1 + b:1 + b + size], alphas[1 + b:1 + b + size] = torch.arange(1 + a, 1 + a + size), 1.0
    mapper[len(tgt) - 1] = len(src) - 1  # EOS
    mapper[len(tgt):] = (torch.arange(len(tgt), length) - len(tgt) + len(src)).clamp(max=length - 1)  # padding
    return mapper, alphas, "refine"


def _differences(a: Sequence, b: Sequence) -> tuple[list[int], list[int]]:
    """Indices of the items of ``a`` and of ``b`` outside difflib's matching blocks."""
    only_a, only_b = [], []
    for tag, a0, a1, b0, b1 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            only_a += range(a0, a1)
            only_b += range(b0, b1)
    return only_a, only_b


def changed_tokens(tokenizer, source: str, target: str, length: int = 77) -> tuple[list[int], list[int]]:
    """Token positions (BOS = 0) of the pieces only the source has and of those only the target has.

    Positional, unlike :func:`changed_words`: in "a red circle and a red square" -> "a blue circle and a red square"
    only the first "red" changed. Same token count: the positions whose ids differ.
    """
    src, tgt = _token_ids(tokenizer, source, length), _token_ids(tokenizer, target, length)
    if len(src) == len(tgt):
        changed = [j for j in range(1, len(src) - 1) if src[j] != tgt[j]]
        return changed, list(changed)
    only_src, only_tgt = _differences(src[1:-1], tgt[1:-1])
    return [i + 1 for i in only_src], [j + 1 for j in only_tgt]


def changed_words(source: str, target: str) -> tuple[list[str], list[str]]:
    """Words only in the source and words only in the target (a word diff, in order, without repeats)."""
    src, tgt = (re.findall(r"[\w'-]+", text.lower()) for text in (source, target))
    only_src, only_tgt = _differences(src, tgt)
    return list(dict.fromkeys(src[i] for i in only_src)), list(dict.fromkeys(tgt[j] for j in only_tgt))


def word_token_indices(tokenizer, prompt: str, word: str, *, param: str = "reweight") -> list[int]:
    """Token positions (BOS = 0) of every occurrence of ``word``'s pieces in ``prompt`` (whole words only: "photo"
    is not in "photorealistic"; "red circle" matches as a run).

    Raises:
        ConfigError: ``param``: the word is not in the (truncated) prompt.
    """
    ids = _token_ids(tokenizer, prompt, int(tokenizer.model_max_length))
    pieces = list(tokenizer(word.strip(), add_special_tokens=False).input_ids)
    n = len(pieces)
    hits = sorted({i + k for i in range(1, len(ids) - n) if n and ids[i:i + n] == pieces for k in range(n)})
    if not hits:
        raise ConfigError(param, f"{excerpt(word)} is not a word of the prompt {excerpt(prompt)}: name a word the "
                                 "prompt has")
    return hits


def reweight_vector(tokenizer, prompt: str, reweight: Sequence[tuple[str, float]], length: int = 77) -> torch.Tensor:
    """Per-token factors ``(length,)`` for ``reweight`` pairs: the factor at the word's pieces, 1 elsewhere."""
    factors = torch.ones(length)
    for word, factor in reweight:
        factors[word_token_indices(tokenizer, prompt, word)] = float(factor)
    return factors


# which rows of the running UNet call are the source's and the target's (conditional) ones, of how many
_Layout = namedtuple("_Layout", "total source target latent_hw")


class AttentionController:
    """State of one P2P run, shared by every installed processor; ``step`` is the sampler step index of the next call
    (:class:`P2PDenoiser` sets it from ``t``).

    Args:
        run_steps: the edit's sampler steps (the windows are fractions of them, rounded half up). batch: B.
        mapper / alphas / mode: :func:`token_alignment`'s output, ``(L,)`` each.
        reweight: ``(L,)`` factors of the target's tokens (:func:`reweight_vector`), needed with ``config.reweight``.
        blend_tokens_source / blend_tokens_target: positions whose maps make the blend mask (:func:`changed_tokens`).
        self_max_tokens: self-attention layers with more queries are never injected.
    """

    def __init__(self, config: P2PConfig, *, run_steps: int, batch: int, mapper: torch.Tensor, alphas: torch.Tensor,
                 mode: str, reweight: Optional[torch.Tensor] = None, blend_tokens_source: Sequence[int] = (),
                 blend_tokens_target: Sequence[int] = (), self_max_tokens: int = SELF_MAX_TOKENS) -> None:
        if run_steps < 1 or batch < 1 or mode not in MODES:
            raise ValueError(f"run_steps {run_steps} and batch {batch} must be >= 1, mode one of {MODES}: {mode!r}")
        self.mapper = torch.as_tensor(mapper, dtype=torch.long).flatten()
        self.alphas = torch.as_tensor(alphas, dtype=torch.float32).flatten()
        self.length = int(self.mapper.numel())
        if self.alphas.numel() != self.length or not bool(((self.mapper >= 0) & (self.mapper < self.length)).all()):
            raise ValueError(f"mapper and alphas must both be ({self.length},) with indices in 0..{self.length - 1}")
        if config.reweight and reweight is None:
            raise ConfigError("reweight", "needs the per-token factors: pass reweight=reweight_vector(...) or build "
                                          "the controller with AttentionController.from_prompts")
        self.reweight = None if reweight is None else torch.as_tensor(reweight, dtype=torch.float32).flatten()
        self.blend_tokens_source = tuple(int(i) for i in blend_tokens_source)
        self.blend_tokens_target = tuple(int(i) for i in blend_tokens_target)
        if (self.reweight is not None and self.reweight.numel() != self.length) or any(
                not 0 <= i < self.length for i in self.blend_tokens_source + self.blend_tokens_target):
            raise ValueError(f"reweight must be ({self.length},), blend token positions in 0..{self.length - 1}")
        self.config, self.run_steps, self.batch, self.mode = config, int(run_steps), int(batch), mode
        self.self_max_tokens = int(self_max_tokens)
        # steps 0 .. cross_steps - 1 edit cross-attention: the nearest step, halves up (not Python's banker's round)
        self.cross_steps = math.floor(config.cross_replace * self.run_steps + 0.5)
        self.self_steps = math.floor(config.self_replace * self.run_steps + 0.5)
        self.step, self._layout, self._buffers = 0, None, {}
        self.edits = {"cross": 0, "self": 0}  # layer calls whose target maps were edited, for tests and logs
        self._step_maps: dict = {}  # (h, w) of a layer grid -> the source's and the target's maps (2, B, h * w)
        self._run_maps: dict = {}

    @classmethod
    def from_prompts(cls, config: P2PConfig, tokenizer, source: str, target: str, *, run_steps: int, batch: int,
                     length: int = 77, self_max_tokens: int = SELF_MAX_TOKENS) -> "AttentionController":
        """The controller of an edit ``source`` -> ``target`` prompt: alignment, reweight factors and blend tokens
        (ConfigError: a reweighted word not in the target prompt); prompts that differ in no word blend nothing."""
        mapper, alphas, mode = token_alignment(tokenizer, source, target, length)
        reweight = reweight_vector(tokenizer, target, config.reweight, length) if config.reweight else None
        blend_src, blend_tgt = changed_tokens(tokenizer, source, target, length) if config.local_blend else ([], [])
        return cls(config, run_steps=run_steps, batch=batch, mapper=mapper, alphas=alphas, mode=mode,
                   reweight=reweight, blend_tokens_source=blend_src, blend_tokens_target=blend_tgt,
                   self_max_tokens=self_max_tokens)

    @contextlib.contextmanager
    def active_rows(self, *, total: int, source: slice, target: slice, latent_hw: tuple[int, int],
                    step: Optional[int] = None) -> Iterator[None]:
        """Control the UNet calls of batch ``total`` in the block: rows ``target`` are edited from rows ``source``.

        Args:
            total: the call's batch (3B: target uncond, source cond, target cond). source / target: B rows each.
            latent_hw: ``(h, w)`` of the call's latents (places a layer's queries on a grid). step: the step index.
        """
        if any(len(range(*r.indices(total))) != self.batch or r.step not in (None, 1) for r in (source, target)):
            raise ValueError(f"rows {source} and {target} of a batch of {total} must be {self.batch} contiguous rows")
        if self._layout is not None:
            raise RuntimeError("the controller is already active (nested P2P calls)")
        self.step = self.step if step is None else int(step)
        self._layout, self._step_maps = _Layout(int(total), source, target, tuple(map(int, latent_hw))), {}
        try:
            yield
        finally:
            self._layout = None
        for grid, maps in self._step_maps.items():  # only a call that finished adds to the run's maps
            self._run_maps[grid] = self._run_maps.get(grid, 0) + maps

    def controls(self, batch: int, is_cross: bool, queries: int, keys: int) -> bool:
        """Whether a layer call must compute its probabilities explicitly (to edit or to record them)."""
        layout = self._layout
        if layout is None or batch != layout.total:
            return False
        if is_cross:
            return keys == self.length and (self.step < self.cross_steps or self.config.local_blend)
        return self.step < self.self_steps and queries <= self.self_max_tokens

    def edit(self, probs: torch.Tensor, is_cross: bool) -> torch.Tensor:
        """``probs`` ``(N, heads, Q, K)`` (every row of the call) with the target rows edited from the source rows
        (detached)."""
        layout = self._layout
        src, tgt = probs[layout.source], probs[layout.target]
        if is_cross:
            if self.config.local_blend:
                self._record(src, tgt)
            if self.step >= self.cross_steps:
                return probs
            mapper, alphas, reweight = self._on(probs)
            new = src.detach()[..., mapper] * alphas + tgt * (1.0 - alphas)
            if reweight is not None:
                new = new * reweight
            self.edits["cross"] += 1
        else:
            new = src.detach()
            self.edits["self"] += 1
        start, stop, _ = layout.target.indices(layout.total)
        return torch.cat([probs[:start], new.to(probs.dtype), probs[stop:]])

    def _on(self, like: torch.Tensor) -> tuple:
        """mapper, alphas and reweight on ``like``'s device and dtype (cached)."""
        key = (like.device, like.dtype)
        if key not in self._buffers:
            self._buffers[key] = (self.mapper.to(like.device), self.alphas.to(like),
                                  None if self.reweight is None else self.reweight.to(like))
        return self._buffers[key]

    def _grid(self, queries: int) -> Optional[tuple[int, int]]:
        """The ``(h, w)`` grid of a layer with ``queries`` tokens: the latent grid halved (rounding up) k times."""
        h, w = self._layout.latent_hw
        while h * w > queries and (h, w) != (1, 1):
            h, w = -(-h // 2), -(-w // 2)
        return (h, w) if h * w == queries else None

    def _record(self, src: torch.Tensor, tgt: torch.Tensor) -> None:
        """Add the head-averaged maps of the blend tokens (source words in source rows, target words in target
        rows, before any edit) to this call's store."""
        grid = self._grid(src.shape[2])
        if grid is not None:
            pairs = ((src, self.blend_tokens_source), (tgt, self.blend_tokens_target))
            maps = torch.stack([rows.detach().float().mean(1)[..., list(tokens)].sum(-1) for rows, tokens in pairs])
            self._step_maps[grid] = self._step_maps.get(grid, 0) + maps

    def blend_mask(self, latent_hw: tuple[int, int], *, cumulative: bool = False) -> Optional[torch.Tensor]:
        """Local blend's mask ``(B, 1, h, w)`` in {0, 1} (float32, 1: may change), None before any map was stored.

        The changed words' cross-attention maps of the last controlled call (head-averaged, summed over a prompt's
        words and the layers of one resolution: the one nearest a quarter of the latent side but at least 8 cells,
        so SD at 512 px uses 16 x 16, SDXL at 1024 px 32 x 32, and the toy model its 8 x 8 maps, which peak on the
        object, not its 4 x 4 ones, which do not), each prompt's upsampled (nearest) to ``latent_hw``, divided by its
        maximum and thresholded at ``blend_threshold``; their union dilated by a 3 x 3 max-pool on the latent grid
        (the original dilates before upsampling: 4 latent cells at SD's 16 x 16).

        Args:
            latent_hw: ``(h, w)`` of the latent grid.
            cumulative: the maps summed over the run's controlled calls (what the original code thresholds).
        """
        store = self._run_maps if cumulative else self._step_maps
        if not store:
            return None
        h, w = int(latent_hw[0]), int(latent_hw[1])
        want = max(min(h, w) / 4.0, float(min(8, h, w)))
        grid = min(store, key=lambda g: (abs(math.log2(min(g) / want)), -min(g)))
        maps = [F.interpolate(m.view(-1, 1, *grid), size=(h, w), mode="nearest")
                for m, tokens in zip(store[grid], (self.blend_tokens_source, self.blend_tokens_target)) if tokens]
        if not maps:  # the prompts differ in no word: nothing may change (the edit then reconstructs the source)
            return torch.zeros(self.batch, 1, h, w)
        masks = [(m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-30) > self.config.blend_threshold).float()
                 for m in maps]
        return F.max_pool2d(torch.stack(masks).amax(0), 3, stride=1, padding=1)


class P2PAttnProcessor:
    """A diffusers attention processor: plain calls go to ``original``; controlled ones are computed here with
    ``AttnProcessor``'s math (projections, norms, residual, rescale) around ``controller.edit``."""

    def __init__(self, controller: AttentionController, original) -> None:
        self.controller, self.original = controller, original

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, temb: Optional[torch.Tensor] = None,
                 **kwargs) -> torch.Tensor:
        """Attention of ``hidden_states`` ``(N, Q, C)`` over itself or ``encoder_hidden_states`` ``(N, K, D)``,
        ``(N, Q, C)``. Image-shaped inputs and spatial norms (VAE-style blocks, none in SD/SDXL UNets) stay plain."""
        is_cross = encoder_hidden_states is not None
        plain = hidden_states.ndim != 3 or attn.spatial_norm is not None
        if plain or not self.controller.controls(hidden_states.shape[0], is_cross, hidden_states.shape[1],
                                                 encoder_hidden_states.shape[1] if is_cross else 0):
            if temb is not None:
                kwargs["temb"] = temb
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, **kwargs)
        residual = hidden_states
        n, length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, length, n)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query, key, value = (attn.head_to_batch_dim(x) for x in (attn.to_q(hidden_states), attn.to_k(context),
                                                                  attn.to_v(context)))  # (N * heads, L, d)
        query = query if attn.norm_q is None else attn.norm_q(query)  # None in SD and SDXL
        key = key if attn.norm_k is None else attn.norm_k(key)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (N * heads, Q, K)
        probs = self.controller.edit(probs.unflatten(0, (-1, attn.heads)), is_cross).flatten(0, 1)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextlib.contextmanager
def attention_control(unet: torch.nn.Module, controller: AttentionController) -> Iterator[None]:
    """Install P2P processors on every attention module of ``unet`` for the block, restoring the originals on exit,
    also when the block raises; outside :class:`P2PDenoiser`'s calls they run the originals.

    Raises:
        ConfigError: ``p2p``: a processor that is not plain attention (IP-Adapter, custom), or no attention at all.
        RuntimeError: control is already installed on this UNet.
    """
    installed = []
    for name, module in unet.named_modules():
        original = getattr(module, "processor", None)
        if original is None or not hasattr(module, "set_processor"):
            continue
        if isinstance(original, P2PAttnProcessor):
            raise RuntimeError("Prompt-to-Prompt control is already installed on this UNet")
        if type(original).__name__ not in PLAIN_PROCESSORS:
            raise ConfigError("p2p", f"Prompt-to-Prompt computes attention itself, but {name} uses "
                                     f"{type(original).__name__}: remove the adapter or edit without P2P")
        installed.append((module, original))
    if not installed:
        raise ConfigError("p2p", "the denoiser has no attention modules to control")
    try:
        for module, original in installed:
            module.set_processor(P2PAttnProcessor(controller, original))
        yield
    finally:
        for module, original in installed:
            module.set_processor(original)


@contextlib.contextmanager
def _eager(backbone) -> Iterator[None]:
    """Run the eager UNet inside the block: a compiled one would bake the controller's state into its graph."""
    compiled, backbone.compiled = getattr(backbone, "compiled", None), None
    try:
        yield
    finally:
        backbone.compiled = compiled


class P2PDenoiser:
    """The backbone with the source branch run beside the target in the same UNet call (a sampling denoiser).

    Args:
        backbone: SD or SDXL, used inside :func:`attention_control` of its UNet with ``controller``.
        source_x_ts: ``(M, B, C, h, w)``, the inversion's trajectory ending at ``x_0``; its last
            ``len(timesteps) + 1`` entries are the run's (``Inversion.x_ts`` or its ``[skip:]`` slice).
        timesteps: the run's timesteps as the sampler iterates them (``t`` -> step index). source_cond: batch B.
    """

    def __init__(self, backbone, controller: AttentionController, *, source_x_ts: torch.Tensor,
                 timesteps: Sequence[int], source_cond: Condition) -> None:
        check_supported(backbone)
        self.timesteps = [int(t) for t in timesteps]
        n, b, cond = len(self.timesteps), controller.batch, as_conditioning(source_cond)
        if n != controller.run_steps or source_x_ts.ndim != 5 or source_x_ts.shape[0] < n + 1 or \
                source_x_ts.shape[1] != b or cond.batch_size != b:
            raise ValueError(f"source_x_ts {tuple(source_x_ts.shape)} must be (M >= {n + 1}, B={b}, C, h, w) with a "
                             f"condition of batch {b} for a controller of {controller.run_steps} steps, batch {b}")
        self.backbone, self.controller = backbone, controller
        self.source_x_ts, self.source_cond = source_x_ts.detach(), cond.detach()
        self._offset = source_x_ts.shape[0] - 1 - len(self.timesteps)
        self._index = {t: i for i, t in enumerate(self.timesteps)}

    def step_index(self, t) -> int:
        """The run's step index of timestep ``t``."""
        if int(t) not in self._index:
            raise ValueError(f"timestep {int(t)} is not one of the run's")
        return self._index[int(t)]

    def source_latent(self, index: int) -> torch.Tensor:
        """The source's latent ``(B, C, h, w)`` at the run's step ``index`` (``len(timesteps)``: ``x_0``)."""
        return self.source_x_ts[self._offset + index]

    def _run(self, x_t: torch.Tensor, t, conds: Sequence[Condition], target: int) -> torch.Tensor:
        """One UNet call on blocks of B rows, ``conds[k]`` at ``x_t`` but block 1, the source's at ``x_ts[i]``; block
        ``target`` is edited from block 1."""
        b, i = self.controller.batch, self.step_index(t)
        if x_t.shape[0] != b:
            raise ValueError(f"x_t has batch {x_t.shape[0]}, the controller {b}")
        x_src, cond = self.source_latent(i).to(x_t), conds[0]
        for c in conds[1:]:
            cond = cat_conditions(cond, c)
        rows = self.controller.active_rows(total=len(conds) * b, source=slice(b, 2 * b), step=i,
                                           target=slice(target * b, (target + 1) * b), latent_hw=x_t.shape[-2:])
        with rows, _eager(self.backbone):
            return self.backbone.denoise(torch.cat([x_src if k == 1 else x_t for k in range(len(conds))]), t, cond)

    def __call__(self, x_t: torch.Tensor, t, cond: Condition) -> torch.Tensor:
        """eps ``(B, C, h, w)`` of ``cond`` at ``x_t``, in one call with the source rows ``[x_ts[i], source]``."""
        return self._run(x_t, t, [cond, self.source_cond], target=0)[:x_t.shape[0]]

    def guided_eps(self, x_t: torch.Tensor, t, cond: Condition, uncond: Optional[Condition],
                   guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance of the target in one call of batch 3B: ``[uncond at x_t, source at x_ts[i],
        cond at x_t]``; only the target's conditional rows are controlled (the unconditional ones attend normally).
        """
        if uncond is None or guidance_scale == 1.0:
            return self(x_t, t, cond)
        b, eps = x_t.shape[0], self._run(x_t, t, [uncond, self.source_cond, cond], target=2)
        return eps[:b] + guidance_scale * (eps[2 * b:] - eps[:b])

    def local_blend(self, state) -> torch.Tensor:
        """A ``sample(..., blend=...)`` callback: ``m x_prev + (1 - m) x_src[i + 1]`` with the controller's mask
        (``x_prev`` unchanged while there is none)."""
        mask = self.controller.blend_mask(tuple(state.x_prev.shape[-2:]))
        if mask is None:
            return state.x_prev
        x_src = self.source_latent(state.index + 1).to(state.x_prev)
        return (mask := mask.to(state.x_prev)) * state.x_prev + (1.0 - mask) * x_src
