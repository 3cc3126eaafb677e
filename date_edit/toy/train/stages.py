"""The training stages: each builds its model and optimiser and hands :func:`~.loop.train_loop` its own
batch-and-loss function. Autoencoder, CLIP (and the held-out CLIP), then the UNet on the frozen parts' outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import world
from .data import PhraseTokens, all_phrases, augment, clip_pixels, hard_negatives, random_phrase, to_tensor
from .loop import Schedule, train_loop
from ...scorers.clip import features
from .models import build_clip, build_unet, build_vae, sd_alphas_cumprod


def train_vae(cfg, images, budget_s, gen, log):
    """Stage 1: reconstruction (L1 + MSE, object pixels weighted 4x) + tiny KL; returns (vae, curve, steps)."""
    dev = torch.device(cfg.device)
    vae = build_vae(cfg).to(dev)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    bg = torch.tensor(world.BACKGROUND, dtype=torch.float32).div(127.5).sub(1).view(1, 3, 1, 1).to(dev)

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = to_tensor(images[idx.numpy()])
        x = torch.where((torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x).to(dev)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
        rec = vae.decode(z).sample
        weight = 1.0 + 4.0 * ((x - bg).abs().sum(1, keepdim=True) > 0.05).float()
        err = (rec - x).abs() + (rec - x) ** 2
        return (weight * err).mean() + cfg.vae_kl_weight * post.kl().mean()

    schedule = Schedule("vae", cfg.vae_steps, cfg.vae_lr, 50, budget_s, cfg.log_every, rate_digits=2)
    curve, steps = train_loop(schedule, opt, loss_fn, log)
    vae.eval().requires_grad_(False)
    return vae, curve, steps


def _clip_batch(cfg, images, contents, empty_image, rng, gen, negatives: dict):
    """One CLIP batch: augmented images (a few replaced by ``empty_image``), their captions in random order,
    ``cfg.clip_negatives`` hard negatives each (``negatives`` caches the pools by content), and each image's
    content key."""
    idx = rng.integers(0, len(images), cfg.clip_batch)
    empty = rng.random(cfg.clip_batch) < cfg.clip_p_empty
    batch = images[idx].copy()
    batch[empty] = empty_image
    objs = [[] if e else contents[i] for i, e in zip(idx, empty)]
    keys = [tuple(sorted(o)) for o in objs]
    pos = [random_phrase(o, rng, cfg.p_and_chain) for o in objs]
    neg = []
    for key in keys:
        if key not in negatives:
            negatives[key] = hard_negatives(list(key))
        pool = negatives[key]
        picks = rng.choice(len(pool), cfg.clip_negatives, replace=len(pool) < cfg.clip_negatives)
        neg.extend(random_phrase(pool[j], rng, cfg.p_and_chain) for j in picks)
    return augment(to_tensor(batch), gen), pos, neg, keys


def _clip_loss(model, text_ids: torch.Tensor, x: torch.Tensor, keys: list, k: int) -> torch.Tensor:
    """Image -> text over the batch's captions plus each image's ``k`` negatives (captions of images with the same
    content are not negatives), text -> image over the batch, and image -> (own caption vs own negatives) alone.
    ``text_ids``: the batch's captions, then its negatives, ``k`` per image."""
    dev = x.device
    img = F.normalize(features(model.get_image_features(pixel_values=clip_pixels(x))), dim=-1)  # (B, P)
    txt = F.normalize(features(model.get_text_features(input_ids=text_ids)), dim=-1)
    b = len(keys)
    t_pos, t_neg = txt[:b], txt[b:].view(b, k, -1)  # (B, P), (B, K, P)
    scale = model.logit_scale.exp().clamp(max=100)
    same = torch.tensor([[ki == kj for kj in keys] for ki in keys], device=dev)
    off_diag_same = same & ~torch.eye(b, dtype=torch.bool, device=dev)
    logits_pos = (scale * img @ t_pos.T).masked_fill(off_diag_same, float("-inf"))  # (B_img, B_txt)
    logits_neg = scale * torch.einsum("bp,bkp->bk", img, t_neg)  # (B, K)
    target = torch.arange(b, device=dev)
    loss_i2t = F.cross_entropy(torch.cat([logits_pos, logits_neg], 1), target)
    loss_hard = F.cross_entropy(torch.cat([logits_pos.diagonal()[:, None], logits_neg], 1),
                                torch.zeros_like(target))
    loss_t2i = F.cross_entropy(logits_pos.T, target)
    return loss_i2t + loss_hard + loss_t2i


def train_clip(cfg, images, contents, tokenizer, budget_s, gen, log, rng: np.random.Generator | None = None):
    """Contrastive CLIP over scenes of 0-3 objects with hard negatives of every kind; returns (model, curve, steps).

    Per step: ``B`` images (a few empty), each with a caption of its objects in random order and
    ``cfg.clip_negatives`` hard negatives (:func:`~.data.negatives_by_kind`, also in random order). Losses: image ->
    text over the batch's captions plus its own negatives (captions of images with the same content are not
    negatives), text -> image over the batch, and image -> (own caption vs own negatives) alone.
    """
    dev = torch.device(cfg.device)
    rng = rng if rng is not None else np.random.default_rng(cfg.seed + 7)
    model = build_clip(cfg).to(dev)
    tokens = PhraseTokens(tokenizer)
    tokens(all_phrases())  # tokenise the whole toy language once (the slow tokenizer would stall early steps)
    empty_image = world.render(world.Scene(()))
    negatives: dict = {}
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.01)

    def loss_fn(step: int) -> torch.Tensor:
        x, pos, neg, keys = _clip_batch(cfg, images, contents, empty_image, rng, gen, negatives)
        return _clip_loss(model, tokens(pos + neg).to(dev), x.to(dev), keys, cfg.clip_negatives)

    schedule = Schedule("clip", cfg.clip_steps, cfg.clip_lr, 50, budget_s, cfg.log_every)
    curve, steps = train_loop(schedule, opt, loss_fn, log)
    model.eval().requires_grad_(False)
    return model, curve, steps


def train_heldout_clip(cfg, images, contents, tokenizer, budget_s, log):
    """The held-out scorer: a CLIP of other seed (initialisation, batches, data order) and other widths, trained
    like the objective; the caller's random state is left alone. Returns (model, curve, steps)."""
    heldout_cfg = replace(cfg, seed=cfg.heldout_clip_seed, text_hidden=cfg.heldout_text_hidden,
                          vision_hidden=cfg.heldout_vision_hidden)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.heldout_clip_seed)
        return train_clip(heldout_cfg, images, contents, tokenizer, budget_s,
                          torch.Generator().manual_seed(cfg.heldout_clip_seed), log,
                          rng=np.random.default_rng(cfg.heldout_clip_seed + 1000))


def train_unet(cfg, latents, cond_ids, table, budget_s, gen, log):
    """Epsilon-prediction on the frozen latents; ``cond_ids`` ``(N, V)``: V caption variants (random object orders)
    per scene, one drawn per step; ``table[-1]`` is the empty caption's embedding. Returns the EMA weights."""
    dev = torch.device(cfg.device)
    unet = build_unet(cfg).to(dev)
    ema = build_unet(cfg).to(dev)
    latents, table = latents.to(dev), table.to(dev)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    abar = sd_alphas_cumprod().to(dev)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    empty = table.shape[0] - 1

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randint(0, len(latents), (cfg.unet_batch,), generator=gen)
        x0 = latents[idx]
        c = cond_ids[idx, torch.randint(0, cond_ids.shape[1], (len(idx),), generator=gen)]
        c[torch.rand(len(c), generator=gen) < cfg.cfg_dropout] = empty
        c = c.to(dev)
        t = torch.randint(0, 1000, (len(idx),), generator=gen).to(dev)
        eps = torch.randn(x0.shape, generator=gen).to(dev)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return F.mse_loss(unet(x_t, t, encoder_hidden_states=table[c]).sample, eps)

    @torch.no_grad()
    def ema_update(step: int) -> None:
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        for pe, p in zip(ema.parameters(), unet.parameters()):
            pe.lerp_(p, 1 - decay)

    schedule = Schedule("unet", cfg.unet_steps, cfg.unet_lr, cfg.unet_warmup, budget_s, cfg.log_every,
                        progress_every=250, show_elapsed=True)
    curve, steps = train_loop(schedule, opt, loss_fn, log, max_grad_norm=1.0, after_step=ema_update)
    for be, b in zip(ema.buffers(), unet.buffers()):
        be.copy_(b)
    ema.eval()
    return ema, curve, steps


def autoencoder(cfg, images, reuse_vae: Path | None, budget_s: float, gen, log):
    """The autoencoder: trained, or (``reuse_vae``, a toy model folder) kept from an earlier model, since it does
    not depend on captions. Returns (vae, curve, steps)."""
    if reuse_vae is None:
        return train_vae(cfg, images, budget_s, gen, log)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(reuse_vae), subfolder="vae", torch_dtype=torch.float32,
                                        local_files_only=True).to(torch.device(cfg.device))
    vae.eval().requires_grad_(False)
    log(f"vae reused from {reuse_vae}")
    return vae, [], 0


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Posterior modes of all images, ``(N, 4, 8, 8)``, unscaled."""
    dev = next(vae.parameters()).device
    out = [
        vae.encode(to_tensor(images[i : i + batch]).to(dev)).latent_dist.mode().cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(out)


@torch.no_grad()
def text_table(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """``last_hidden_state`` ``(len(prompts), 77, D)`` of prompts padded to 77 tokens (as the SD pipeline does)."""
    ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return text_encoder(input_ids=ids.to(next(text_encoder.parameters()).device)).last_hidden_state.cpu()


def unet_data(cfg, vae, clip_model, tokenizer, images, contents, rng, log):
    """The UNet's training data: scaled latents, the scaling factor, per scene ``caption_variants`` caption ids
    (random object orders) and the table of their text embeddings (the empty caption last)."""
    raw = encode_latents(vae, images)
    scaling_factor = 1.0 / float(raw.std())
    variants = [[random_phrase(o, rng, cfg.p_and_chain) for _ in range(cfg.caption_variants)] for o in contents]
    vocab = sorted({v for vs in variants for v in vs})
    table = text_table(clip_model.text_model, tokenizer, vocab + [""])
    cap_id = {c: i for i, c in enumerate(vocab)}
    cond_ids = torch.tensor([[cap_id[v] for v in vs] for vs in variants])  # (N, V)
    log(f"{len(vocab)} distinct captions for the UNet")
    log(f"encoded latents: std {float(raw.std()):.4f} -> scaling_factor {scaling_factor:.4f}")
    return raw * scaling_factor, scaling_factor, cond_ids, table
