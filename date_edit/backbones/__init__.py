"""Backbones as adapters: one protocol (:class:`Backbone`), one module per family, loading, and factories.

* :mod:`.base`: the protocol and what every family shares (freezing, checkpointing, dtype and device, VAE
  encode/decode), :meth:`Backbone.from_components` and :meth:`Backbone.from_pipeline` (DATE on a diffusers
  pipeline you already loaded). :mod:`.compiling`: the compiled denoiser and its cost. :mod:`.grad_decoder`: the
  approximate decoder of DATE's gradient pass.
* :mod:`.sd`: SD 1.x/2.x. :mod:`.sdxl`: SDXL. :mod:`.sd3`: SD3. :mod:`.flux`: FLUX.1 (the last two on the
  rectified-flow path of :mod:`date_edit.flow`). Each family's class holds its knowledge: its components,
  its pipeline classes, how its folders, files and component sets are recognised and loaded.
* :mod:`.loading`: ``load_backbone`` (tiny, tiny-sdxl, toy, folders, single files, hub ids).
* :mod:`.components`, :mod:`.components_flow`: tiny random component sets and real-size random ones for GPU
  cost runs.

The only core package that touches diffusers/transformers, and only inside functions.
"""

from ..errors import BackboneError
from .base import DTYPES, Backbone, PromptTruncatedWarning, freeze, resolve_device, resolve_dtype
from .family import FAMILIES
from .components import (
    SD_SCHEDULER_CONFIG, save_components, sd15_components, sdxl_components, tiny_components, tiny_sdxl_components,
)
from .components_flow import (
    flux_components, sd3_components, tiny_flux_components, tiny_pipeline, tiny_sd3_components,
)
from .flux import Flux
from .loading import TOY_DIR, backbone_from_components, family_of, load_backbone, single_file_family
from .sd import StableDiffusion
from .sd3 import StableDiffusion3
from .sdxl import StableDiffusionXL

__all__ = [
    "DTYPES", "FAMILIES", "SD_SCHEDULER_CONFIG", "TOY_DIR", "Backbone", "BackboneError", "PromptTruncatedWarning",
    "Flux", "StableDiffusion", "StableDiffusion3", "StableDiffusionXL", "backbone_from_components", "family_of",
    "flux_components", "freeze", "load_backbone", "resolve_device", "resolve_dtype", "save_components",
    "sd15_components", "sd3_components", "sdxl_components", "single_file_family", "tiny_components",
    "tiny_flux_components", "tiny_pipeline", "tiny_sd3_components", "tiny_sdxl_components",
]
