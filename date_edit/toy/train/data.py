"""The toy training data: rendered scenes, their captions in random object order, the hard negatives the CLIP
learns to rank below the true caption, and the tensors the models take."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from .. import world

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NEGATIVE_KINDS = ("wrong colour", "wrong shape", "swapped colours", "missing object", "extra object")


def make_dataset(rng: np.random.Generator, n: int, p_objects: tuple[float, ...]
                 ) -> tuple[np.ndarray, list[list[tuple[str, str]]]]:
    """``n`` rendered scenes ``(n, 64, 64, 3)`` uint8 and their objects ``[(colour, shape), ...]``."""
    images = np.empty((n, world.IMAGE_SIZE, world.IMAGE_SIZE, 3), np.uint8)
    contents = []
    counts = rng.choice(np.arange(1, len(p_objects) + 1), size=n, p=np.asarray(p_objects) / sum(p_objects))
    for i in range(n):
        scene = world.random_scene(rng, int(counts[i]))
        images[i] = world.render(scene)
        contents.append([(o.colour, o.shape) for o in scene.objects])
    return images, contents


def random_phrase(objects: list[tuple[str, str]], rng: np.random.Generator, p_and_chain: float = 0.2) -> str:
    """A caption of ``objects`` in a random order, as a user may type it (three objects: sometimes "and"-chained)."""
    if not objects:
        return world.EMPTY_CAPTION
    order = [objects[i] for i in rng.permutation(len(objects))]
    return world.phrase(order, and_chain=len(order) == 3 and rng.random() < p_and_chain)


def all_phrases() -> list[str]:
    """Every caption the toy world can produce, in every object order and both three-object grammars."""
    objs = [(c, s) for c in world.COLOURS for s in world.SHAPES]
    out = [world.EMPTY_CAPTION]
    for n in (1, 2, 3):
        for combo in itertools.product(objs, repeat=n):
            out.append(world.phrase(list(combo)))
            if n == 3:
                out.append(world.phrase(list(combo), and_chain=True))
    return out


def negatives_by_kind(objects: list[tuple[str, str]], max_objects: int = 3) -> dict[str, list[list[tuple[str, str]]]]:
    """Object lists that differ from ``objects`` by one error of each kind the judge punishes."""
    objs = list(objects)
    out: dict[str, list[list[tuple[str, str]]]] = {k: [] for k in NEGATIVE_KINDS}
    key = sorted(objs)
    for k, (c, s) in enumerate(objs):
        for c2 in world.COLOURS:
            if c2 != c:
                out["wrong colour"].append(objs[:k] + [(c2, s)] + objs[k + 1:])
        for s2 in world.SHAPES:
            if s2 != s:
                out["wrong shape"].append(objs[:k] + [(c, s2)] + objs[k + 1:])
        out["missing object"].append(objs[:k] + objs[k + 1:])
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            (ci, si), (cj, sj) = objs[i], objs[j]
            if ci != cj and si != sj:
                swapped = list(objs)
                swapped[i], swapped[j] = (cj, si), (ci, sj)
                out["swapped colours"].append(swapped)
    if len(objs) < max_objects:
        for c in world.COLOURS:
            for s in world.SHAPES:
                out["extra object"].append(objs + [(c, s)])
    return {k: [v for v in vs if sorted(v) != key] for k, vs in out.items()}


def hard_negatives(objects: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Every hard negative of ``objects`` (all kinds, deduplicated by content)."""
    seen, out = set(), []
    for vs in negatives_by_kind(objects).values():
        for v in vs:
            key = tuple(sorted(v))
            if key not in seen:
                seen.add(key)
                out.append(v)
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def clip_pixels(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 64, 64)`` in [-1, 1] -> CLIP-normalised pixels (the toy CLIP takes 64 px, no resize or crop)."""
    x = (images + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flips (captions stay true), and on half the batch blur + noise so the CLIP also reads the soft
    images a diffusion model decodes (DATE scores decoded x0 predictions)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    soft = torch.rand(b, generator=gen) < 0.5
    sigma = 0.3 + 1.2 * torch.rand(1, generator=gen).item()
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-(r**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).expand(3, 1, 5, 5)
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    blurred = blurred + 0.08 * torch.rand(1, generator=gen).item() * torch.randn(x.shape, generator=gen)
    return torch.where(soft.view(b, 1, 1, 1), blurred.clamp(-1, 1), x)


class PhraseTokens:
    """Token ids ``(N, TEXT_LEN)`` of phrases, cached (a step tokenises ~1,000 captions drawn from a few thousand)."""

    # the longest toy caption has 14 tokens with BOS and EOS; CLIP's causal mask makes tokens after EOS irrelevant
    TEXT_LEN = 16

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, phrases: list[str]) -> torch.Tensor:
        missing = sorted({p for p in phrases if p not in self.cache})
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.TEXT_LEN, truncation=True,
                                 return_tensors="pt").input_ids
            self.cache.update(zip(missing, ids))
        return torch.stack([self.cache[p] for p in phrases])
