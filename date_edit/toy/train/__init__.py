"""Train the toy world's tiny Stable-Diffusion-shaped model from a fixed seed, on the CPU, in under an hour.

``python -m date_edit.toy.train --out date_edit/assets/toy --seed 0 [--minutes N]`` trains, in order:

1. a tiny ``AutoencoderKL`` with SD's spatial factor 8 (64x64x3 -> 8x8x4), reconstruction + tiny KL;
2. a tiny ``CLIPModel`` trained contrastively on scenes of 0-3 objects, captions in random order, with hard
   negatives of every kind the judge punishes (wrong colour, wrong shape, swapped colours, a missing object, an
   extra object): each image's caption competes with the batch's captions and its own negatives, and a second
   loss term over only its negatives makes it reward binding and counting rather than a bag of words;
3. a second, held-out CLIP (other seed, data order and widths) that no benchmark uses as an objective;
4. a tiny ``UNet2DConditionModel`` (epsilon prediction, SD's scaled-linear schedule) on the frozen autoencoder's
   latents (encoded once) of scenes of 1-3 objects, conditioned on the frozen CLIP text tower's
   ``last_hidden_state`` (77 tokens) of captions in random object order, with 10% caption dropout to "" for
   classifier-free guidance; EMA weights are shipped.

It saves a diffusers SD folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/``) plus ``clip/`` and ``clip_heldout/`` (full CLIPModels + ``preprocessor_config.json``), then
evaluates the saved folder with ``StableDiffusionPipeline`` (DDIM 50, CFG 7.5) and the OpenCV judge on one-, two-
(both orders) and three-object prompts, and writes curves and metrics as JSON.

Size: the CLIP vocabulary (49,408 tokens) makes the token embedding the largest tensor, and it is stored twice
(``text_encoder/`` and ``clip/``), in fp32 because transformers loads a checkpoint in its stored dtype; so the text
width is 32 and the UNet and autoencoder weights are stored in fp16 (diffusers loads them back as fp32).

The modules: :mod:`.config` (:class:`ToyTrainConfig`), :mod:`.data` (scenes, captions, hard negatives),
:mod:`.models` (the parts and SD's schedule), :mod:`.loop` (the one training loop), :mod:`.stages` (each stage's
batch and loss), :mod:`.checks` (held-out checks), :mod:`.save`, :mod:`.run` (a whole run) and :mod:`.cli`.
"""

from ..evaluation import evaluate_model, generate, load_pipeline
from .checks import clip_check, vae_check
from .cli import main
from .config import ToyTrainConfig
from .data import (
    CLIP_MEAN,
    CLIP_STD,
    NEGATIVE_KINDS,
    PhraseTokens,
    all_phrases,
    augment,
    clip_pixels,
    hard_negatives,
    make_dataset,
    negatives_by_kind,
    random_phrase,
    to_tensor,
)
from .loop import Curve, Schedule, lr_at, train_loop
from ...scorers.clip import features
from .models import build_clip, build_unet, build_vae, latent_side, scheduler_config, sd_alphas_cumprod
from .run import train
from .save import dir_size_bytes, save_model
from .stages import (
    autoencoder,
    encode_latents,
    text_table,
    train_clip,
    train_heldout_clip,
    train_unet,
    train_vae,
    unet_data,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "NEGATIVE_KINDS",
    "Curve",
    "PhraseTokens",
    "Schedule",
    "ToyTrainConfig",
    "all_phrases",
    "augment",
    "autoencoder",
    "build_clip",
    "build_unet",
    "build_vae",
    "clip_check",
    "clip_pixels",
    "dir_size_bytes",
    "encode_latents",
    "evaluate_model",
    "features",
    "generate",
    "hard_negatives",
    "latent_side",
    "load_pipeline",
    "lr_at",
    "main",
    "make_dataset",
    "negatives_by_kind",
    "random_phrase",
    "save_model",
    "scheduler_config",
    "sd_alphas_cumprod",
    "text_table",
    "to_tensor",
    "train",
    "train_clip",
    "train_heldout_clip",
    "train_loop",
    "train_unet",
    "train_vae",
    "unet_data",
    "vae_check",
]
