"""A whole training run: every stage in order from one seed, then save, evaluate, and write the results JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..evaluation import evaluate_model
from .checks import clip_check, vae_check
from .config import ToyTrainConfig
from .data import make_dataset
from .save import dir_size_bytes, save_model
from .stages import autoencoder, train_clip, train_heldout_clip, train_unet, unet_data


def _results(cfg: ToyTrainConfig, *, reuse_vae, reuse_label, models, steps, timings, scaling_factor, size, curves,
             metrics) -> dict:
    """The results JSON of a training run (config, seeds, steps, parameter counts, wall times, curves, metrics)."""
    import diffusers
    import transformers

    unet, vae, clip_model, heldout_clip = models
    n_params = {
        "unet": sum(p.numel() for p in unet.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
        "clip": sum(p.numel() for p in clip_model.parameters()),
        "text_encoder": sum(p.numel() for p in clip_model.text_model.parameters()),
        "clip_heldout": sum(p.numel() for p in heldout_clip.parameters()),
    }
    return {
        "config": asdict(cfg),
        "seeds": {
            "training": cfg.seed,
            "note": "numpy default_rng(seed) renders the training scenes; torch manual_seed(seed) initialises; a "
            "torch.Generator(seed) draws batches, noise and timesteps",
            "heldout_vae_scenes_numpy_seed": cfg.heldout_seed,
            "heldout_clip_scenes_numpy_seed": cfg.heldout_seed + 1,
        },
        "vae_reused_from": None if reuse_vae is None else (reuse_label or str(reuse_vae)),
        "steps": steps,
        "params": n_params,
        "threads": cfg.threads,
        "wall_time_s": timings,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}, transformers {transformers.__version__}",
        "vae_scaling_factor": scaling_factor,
        "model_size_bytes": size,
        "curves": curves,
        "metrics": metrics,
    }


def _timed(timings: dict, key: str, fn, *args):
    """``fn(*args)``, its wall seconds recorded in ``timings[key]``."""
    t = time.time()
    out = fn(*args)
    timings[key] = round(time.time() - t, 1)
    return out


def train(cfg: ToyTrainConfig, out: Path, results_path: Path | None, grid: Path | None = None,
          reuse_vae: Path | None = None, reuse_label: str | None = None) -> dict:
    """Run every stage, save, evaluate, and write the results JSON; returns the results dict.

    ``reuse_vae``: a toy model folder whose ``vae/`` is kept instead of training one (recorded in the results).
    """
    from ...tokenizer import load_clip_tokenizer

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    start = time.time()
    budget = cfg.minutes * 60.0

    def log(msg: str) -> None:
        print(f"[{time.time() - start:7.1f}s] {msg}", flush=True)

    tokenizer = load_clip_tokenizer()
    images, contents = make_dataset(rng, cfg.n_scenes, cfg.p_objects)
    log(f"rendered {len(images)} scenes")
    timings = {"render_s": round(time.time() - start, 1)}

    vae, vae_curve, vae_steps = _timed(timings, "vae_s", autoencoder, cfg, images, reuse_vae,
                                       cfg.vae_share * budget, gen, log)
    vae_metrics = vae_check(vae, np.random.default_rng(cfg.heldout_seed))
    log(f"vae {vae_metrics}")
    clip_model, clip_curve, clip_steps = _timed(timings, "clip_s", train_clip, cfg, images, contents, tokenizer,
                                                cfg.clip_share * budget, gen, log)
    clip_metrics = clip_check(clip_model, tokenizer, np.random.default_rng(cfg.heldout_seed + 1))
    log(f"clip {clip_metrics}")
    heldout_clip, heldout_curve, heldout_steps = _timed(timings, "clip_heldout_s", train_heldout_clip, cfg, images,
                                                        contents, tokenizer, cfg.heldout_clip_share * budget, log)
    heldout_metrics = clip_check(heldout_clip, tokenizer, np.random.default_rng(cfg.heldout_seed + 1))
    log(f"clip heldout {heldout_metrics}")
    latents, scaling_factor, cond_ids, table = _timed(timings, "encode_s", unet_data, cfg, vae, clip_model,
                                                      tokenizer, images, contents, rng, log)
    unet_budget = budget - (time.time() - start) - cfg.eval_reserve_s
    unet, unet_curve, unet_steps = _timed(timings, "unet_s", train_unet, cfg, latents, cond_ids, table,
                                          unet_budget, gen, log)
    train_wall = time.time() - start

    unet, vae, clip_model, heldout_clip = unet.cpu(), vae.cpu(), clip_model.cpu(), heldout_clip.cpu()
    save_model(out, unet, vae, clip_model, scaling_factor, heldout_clip)
    size = dir_size_bytes(out)
    log(f"saved to {out}: {size / 1e6:.2f} MB")
    eval_metrics = _timed(timings, "eval_s", evaluate_model, out, cfg, grid)
    log(
        f"single-object accuracy {eval_metrics['single_object_accuracy']:.3f}, "
        f"two-object both-correct {eval_metrics['two_object_both_correct']:.3f}"
    )
    results = _results(cfg, reuse_vae=reuse_vae, reuse_label=reuse_label,
                       models=(unet, vae, clip_model, heldout_clip),
                       steps={"vae": vae_steps, "clip": clip_steps, "clip_heldout": heldout_steps, "unet": unet_steps},
                       timings={**timings, "train_total": round(train_wall, 1),
                                "total": round(time.time() - start, 1)},
                       scaling_factor=scaling_factor, size=size,
                       curves={"vae_loss": vae_curve, "clip_loss": clip_curve, "clip_heldout_loss": heldout_curve,
                               "unet_loss": unet_curve, "every": cfg.log_every},
                       metrics={"vae": vae_metrics, "clip": clip_metrics, "clip_heldout": heldout_metrics,
                                "generation": eval_metrics})
    if results_path is not None:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
    return results
