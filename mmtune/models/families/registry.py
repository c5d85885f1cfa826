"""Vision-language model families: one registry entry per family, saying only what differs.

Every family trains through one path (mmtune.builders.model, mmtune.data.processor_images): the
model is transformers' own class (`AutoModelForImageTextToText`), its processor does the image
preprocessing and the placeholder expansion, and an entry here says what mmtune cannot read off the
model: where its parts live (freezing, LoRA targets), which processor settings a recipe may set,
how the images of several samples go into one forward, how packed rows get their position ids, and
whether packing can be exact at all. Adding a family = one `register_family(...)` in a module of this
package (imported below) + its tiny-model builder (mmtune.testing.tiny_vlm) + tests.

The LLaVA that mmtune assembles from an LLM, a vision encoder and a projector is the `llava` entry:
the same parts, trained through the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mmtune.errors import MmtuneError
from mmtune.models.registry import Registry


@dataclass(frozen=True)
class Parts:
    """Module paths from the top of the model (`model.language_model`, ...), for freezing and LoRA."""

    vision: str
    projector: str | tuple[str, ...]  # may sit inside the vision tower (Qwen-VL's merger): freezing handles the nesting
    llm: str
    vision_blocks: str = "layers"  # the vision tower's list of transformer blocks (`blocks` in Qwen-VL)

    @property
    def projectors(self) -> tuple[str, ...]:
        return (self.projector,) if isinstance(self.projector, str) else tuple(self.projector)

    def group_of(self, name: str) -> str:
        """`projector`, `vision` or `llm`: the part a parameter or module name (of the model, or of a
        peft wrapper around it) belongs to."""
        dotted = f".{name}."
        if any(f".{path}." in dotted for path in self.projectors):
            return "projector"
        return "vision" if f".{self.vision}." in dotted else "llm"


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.model_type values of the family
    description: str
    parts: Parts
    knobs: tuple[str, ...] = ()  # data.processor settings its image processor takes
    combine: Callable[[list[dict]], dict] | None = None  # per-sample image tensors -> the forward's (None: concatenated)
    token_types: str | None = None  # forward kwarg for the image-token mask (mm_token_type_ids, token_type_ids)
    positions: Callable | None = None  # (model, input_ids (L,), sample images) -> position ids of a packed sample
    packing_problem: Callable | None = None  # model -> why packing cannot be exact (None: it can)
    config_knobs: tuple[str, ...] = ()  # processor settings the model's config must hold too (used in forward)
    video_stub: dict = field(default_factory=dict)  # attributes a processor reads off its video processor
    # (config, data.processor settings) -> (patches one image or slice is inside the vision tower, images
    # or slices per image at most): what the memory estimate plans the vision tower's activations for
    encoder_tokens: Callable | None = None
    # finetune defaults by method (LLaMA-Factory's and ms-swift's: vision tower and projector frozen);
    # a pretrain stage trains the projector alone
    trainable: dict = field(default_factory=lambda: {"lora": ("llm.lora",), "full": ("llm",)})


FAMILIES: Registry = Registry("vision-language family")
register_family = FAMILIES.register


def family_names() -> list[str]:
    return list(FAMILIES)


def family_for_type(model_type: str | None) -> Family | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def family_of(config) -> Family:
    """The family of a model config; an unsupported one is a user error listing the supported."""
    family = family_for_type(getattr(config, "model_type", None))
    if family is None:
        raise MmtuneError(f"model type {getattr(config, 'model_type', None)!r} is not a vision-language family mmtune "
                          "trains", hint=f"supported: {', '.join(sorted(t for f in FAMILIES.values() for t in f.model_types))}")
    return family


def base_model(model):
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encoder_tokens(family: Family, config, knobs: dict) -> tuple[int, int]:
    """(patches per image or slice inside the vision tower, slices per image at most) for the
    memory estimate; by default one square image of the vision config's size."""
    if family.encoder_tokens is not None:
        return family.encoder_tokens(config, knobs)
    return square_patches(config.vision_config), 1


def square_patches(vision_config) -> int:
    """Patches of one image of the vision config's size (sizes may be given as (height, width))."""
    def side(value):
        return value[0] if isinstance(value, (list, tuple)) else value

    return (side(vision_config.image_size) // side(vision_config.patch_size)) ** 2


def image_token_id_of(config) -> int:
    """The id of the tokens the image features replace (`image_token_id`, or `image_token_index` in
    older configs); Gemma 3's processor calls its placeholder `<start_of_image>` the image token, the
    model's image tokens are the soft tokens after it."""
    value = getattr(config, "image_token_id", None)
    return value if value is not None else config.image_token_index


def check_knobs(family: Family, knobs: dict) -> None:
    """A processor setting the family does not have is a user error naming the ones it has."""
    unknown = sorted(set(knobs) - set(family.knobs))
    if unknown:
        raise MmtuneError(f"data.processor sets {', '.join(unknown)}, which {family.name} processors do not take",
                          hint=f"{family.name} takes: {', '.join(family.knobs) or 'none'}")

