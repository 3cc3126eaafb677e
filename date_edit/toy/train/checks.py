"""Held-out checks of the trained parts: does the CLIP rank the true caption above each kind of error, and does the
judge read the autoencoder's reconstructions like the originals."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import world
from ..judge import judge
from .data import (
    NEGATIVE_KINDS,
    PhraseTokens,
    clip_pixels,
    hard_negatives,
    negatives_by_kind,
    random_phrase,
    to_tensor,
)
from ...scorers.clip import features


@torch.no_grad()
def clip_check(model, tokenizer, rng: np.random.Generator, n: int = 450) -> dict:
    """Held-out ranking accuracy of a toy CLIP: on renders of 1-3 objects (a third each), how often the true caption
    (random object order) scores above one random negative of each kind the judge punishes, and above all of them.
    Also how often two orders of one caption score closer to each other than to any negative (order invariance)."""
    dev = next(model.parameters()).device
    tokens = PhraseTokens(tokenizer)
    hits = {kind: [] for kind in NEGATIVE_KINDS}
    beats_all = {1: [], 2: [], 3: []}
    order_ok = []
    for i in range(n):
        count = 1 + i % 3
        scene = world.random_scene(rng, count)
        objs = [(o.colour, o.shape) for o in scene.objects]
        x = to_tensor(world.render(scene)[None]).to(dev)
        img = F.normalize(features(model.get_image_features(pixel_values=clip_pixels(x))), dim=-1)[0]
        by_kind = negatives_by_kind(objs)
        true = random_phrase(objs, rng, 0.0)
        picked = {kind: random_phrase(vs[int(rng.integers(len(vs)))], rng, 0.0)
                  for kind, vs in by_kind.items() if vs}
        every = [random_phrase(v, rng, 0.0) for v in hard_negatives(objs)]
        other_order = world.phrase(objs[::-1])
        phrases = [true, other_order, *picked.values(), *every]
        sims = F.normalize(features(model.get_text_features(input_ids=tokens(phrases).to(dev))), dim=-1) @ img
        for j, kind in enumerate(picked):
            hits[kind].append(bool(sims[0] > sims[2 + j]))
        beats_all[count].append(bool((sims[0] > sims[2 + len(picked):]).all()))
        order_ok.append(bool(min(sims[0], sims[1]) > sims[2 + len(picked):].max()))
    return {
        "heldout_scenes": n,
        "scenes": "world.random_scene with 1, 2, 3 objects in turn (any colours and shapes)",
        "true_vs_negative_acc": {k: round(float(np.mean(v)), 4) for k, v in hits.items() if v},
        "true_vs_negative_n": {k: len(v) for k, v in hits.items() if v},
        "true_beats_every_negative_acc": {f"{k}_objects": round(float(np.mean(v)), 4) for k, v in beats_all.items()},
        "both_orders_beat_every_negative_acc": round(float(np.mean(order_ok)), 4),
    }


@torch.no_grad()
def vae_check(vae, rng: np.random.Generator, n: int = 300) -> dict:
    """Held-out: does the judge read the autoencoder's reconstructions like the originals (scenes of 1-3 objects in
    turn); PSNR. Batched."""
    dev = next(vae.parameters()).device
    scenes = [world.random_scene(rng, 1 + i % 3) for i in range(n)]
    x = to_tensor(np.stack([world.render(sc) for sc in scenes])).to(dev)
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 100]).latent_dist.mode()).sample.clamp(-1, 1)
                     for i in range(0, n, 100)])
    outs = ((rec.permute(0, 2, 3, 1) + 1) * 127.5).round().byte().cpu().numpy()
    ok, psnr = 0, []
    for i, scene in enumerate(scenes):
        want = sorted((o.colour, o.shape) for o in scene.objects)
        ok += want == sorted((d.colour, d.shape) for d in judge(outs[i]))
        mse = float(((rec[i] - x[i]) ** 2).mean()) / 4.0
        psnr.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    return {"heldout_scenes": n, "objects": "1, 2, 3 in turn", "judge_reads_reconstruction": ok / n,
            "psnr_db": round(float(np.mean(psnr)), 2)}
