"""The one configuration of a toy training run: everything that decides the trained model."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that decides the trained toy model; written into the results JSON."""

    seed: int = 0  # one seed drives data, initialisation and batches
    minutes: float = 50.0  # wall budget for the whole run (training + evaluation); stages get fixed shares
    threads: int = 2  # torch CPU threads
    device: str = "cpu"  # training device ("cuda" on a GPU machine); random draws stay on the CPU, evaluation is CPU
    n_scenes: int = 16000  # rendered training scenes (their latents are encoded once for the UNet)
    p_objects: tuple[float, ...] = (0.25, 0.45, 0.30)  # shares of 1-, 2- and 3-object scenes (any colours/shapes)
    caption_variants: int = 6  # random-order captions drawn per scene for the UNet (one picked per step)
    p_and_chain: float = 0.2  # of three-object captions: "a x and a y and a z" instead of "a x, a y and a z"
    # Autoencoder
    # one block per entry, a downsampling between blocks: 4 entries = factor 8 like SD (8x8 latents); 3 entries =
    # factor 4 (16x16 latents: objects 3-6 latent cells wide, the gap between two objects at least one cell)
    vae_channels: tuple[int, ...] = (8, 16, 32, 48)
    vae_batch: int = 32
    vae_steps: int = 1000  # upper bound; the time share stops it first on a slow machine
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    vae_share: float = 0.30  # of the wall budget
    # CLIP
    text_hidden: int = 32  # the UNet's cross_attention_dim
    text_layers: int = 4
    text_heads: int = 4
    vision_hidden: int = 64
    vision_layers: int = 2
    patch_size: int = 8
    projection_dim: int = 64
    clip_batch: int = 96
    clip_steps: int = 2000
    clip_lr: float = 1e-3
    clip_share: float = 0.15
    clip_negatives: int = 2  # hard negatives per image and step (text-tower cost grows with them)
    clip_p_empty: float = 0.04  # share of CLIP training images with no object (caption world.EMPTY_CAPTION)
    # The held-out CLIP: the evaluator beside the judge, never an objective
    heldout_clip_seed: int = 1
    heldout_text_hidden: int = 48
    heldout_vision_hidden: int = 96
    heldout_clip_share: float = 0.07
    # UNet
    unet_channels: tuple[int, ...] = (32, 64, 112)
    unet_batch: int = 64
    unet_steps: int = 20000
    unet_lr: float = 8e-4
    unet_warmup: int = 200
    ema_decay: float = 0.998
    cfg_dropout: float = 0.1  # probability of training on the empty caption
    eval_reserve_s: float = 330.0  # wall seconds kept for saving and evaluation
    # Evaluation (seeds never used in training: training uses torch/numpy streams of `seed`, not these)
    eval_single_seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007)
    eval_two_seeds: tuple[int, ...] = (2000, 2001)  # also the swapped-order and three-object seeds
    eval_steps: int = 50
    eval_guidance: float = 7.5
    heldout_seed: int = 999  # numpy seed of the held-out scenes for the CLIP/VAE checks
    log_every: int = 50
    extra: dict = field(default_factory=dict)
