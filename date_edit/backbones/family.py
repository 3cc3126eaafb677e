"""What a model family declares about itself, and recognising a family from what is at hand.

Each family's class (``sd.py``, ``sdxl.py``, ``sd3.py``, ``flux.py``) sets the class attributes of
:class:`FamilyTraits`, which :class:`~date_edit.backbones.base.Backbone` inherits: the components its pipelines
hold, which of them is the denoiser, and how a set of components, a diffusers folder or a single-file checkpoint is
recognised, loaded and saved as that family. :data:`FAMILIES` maps each family's name to its class (filled as the
family modules load); the functions here and the loaders read the table, and branch on no family's name.
"""

from __future__ import annotations

from typing import Callable, ClassVar

from ..schedule import NoiseSchedule

FAMILIES: dict[str, type] = {}  # family name -> Backbone subclass, filled as the family modules load
SHARED_COMPONENTS = ("vae", "text_encoder", "tokenizer", "scheduler")  # every family's, besides its denoiser


def detect_family(claims: Callable[[type], bool]) -> str:
    """The first registered family, most specific first (highest :attr:`FamilyTraits.mark_rank`), that ``claims``
    accepts; the family without marks (SD) when none does."""
    ranked = sorted(FAMILIES.values(), key=lambda kind: -kind.mark_rank)
    return next((kind.family for kind in ranked if claims(kind)), ranked[-1].family)


def family_of_components(components: dict) -> str:
    """The family a dict of pipeline components belongs to: the most specific family one of whose
    :attr:`~FamilyTraits.marks` is given (a ``tokenizer_3`` or T5 third encoder is SD3, a ``transformer`` without
    one FLUX, a second text encoder with a UNet SDXL), else SD."""
    return detect_family(lambda kind: any(components.get(k) is not None for k in kind.marks))


class FamilyTraits:
    """The class attributes a family sets (the defaults are SD's where it has one) and its two class methods."""

    family: ClassVar[str] = "base"
    taesd_id: ClassVar[str] = "madebyollin/taesd"  # the approximate decoder --grad-decoder taesd loads
    upcast_fp16_vae: ClassVar[bool] = False  # keep the VAE in float32 under fp16 when its config says force_upcast
    component_names: ClassVar[tuple[str, ...]] = ()  # what its component dict holds (a diffusers pipeline's names)
    optional_components: ClassVar[tuple[str, ...]] = ()  # of those, the ones it runs without (SD3's T5)
    denoiser_name: ClassVar[str] = "unet"  # the component the ``unet`` attribute holds (``transformer``: SD3, FLUX)
    marks: ClassVar[tuple[str, ...]] = ()  # components whose presence names the family (none: the fallback, SD)
    checkpoint_marks: ClassVar[tuple[str, ...]] = ()  # tensor-name prefixes that name it in a single-file checkpoint
    mark_rank: ClassVar[int] = 0  # marks are tried highest rank first (SD3's components hold FLUX's mark)
    pipeline_classes: ClassVar[tuple[str, ...]] = ()  # its diffusers pipelines; the first saves and loads files
    # component -> (library, class) that a folder's copy loads with, whatever model_index.json says; a family that
    # pins them all (SD, SDXL) also loads folders without a model_index.json, and custom pipeline classes
    folder_classes: ClassVar[dict] = {}
    single_file_options: ClassVar[dict] = {}  # extra keyword arguments of its pipeline's from_single_file
    index_extras: ClassVar[dict] = {}  # what a saved folder's model_index.json holds besides the components

    @classmethod
    def schedule_from_config(cls, config: dict):
        """The family's noise schedule from a diffusers scheduler config (DDPM-style; flow families override)."""
        return NoiseSchedule.from_config(config)

    @classmethod
    def family_settings(cls, **settings) -> dict:
        """The keyword arguments of ``from_components`` that this family's constructor takes (SDXL:
        ``force_zeros_for_empty_prompt``); none by default."""
        return {}


class FlowMatchingTraits:
    """What the rectified-flow families (SD3, FLUX) share, placed before :class:`Backbone` in their bases: a
    transformer denoiser, the flow-matching scheduler and schedule, and the extra entries of a saved index."""

    denoiser_name: ClassVar[str] = "transformer"
    folder_classes: ClassVar[dict] = {"scheduler": ("diffusers", "FlowMatchEulerDiscreteScheduler")}
    index_extras: ClassVar[dict] = {"feature_extractor": (None, None), "image_encoder": (None, None)}

    @classmethod
    def schedule_from_config(cls, config: dict):
        """The flow-matching schedule (sigmas, shift) from the scheduler config."""
        from ..flow import FlowSchedule

        return FlowSchedule.from_config(config)
