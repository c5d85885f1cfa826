"""The projector registry: one entry per vision-to-language projector, saying everything that differs.

An entry knows the LLaVA classes that hold its projector, how to build a new one for a LLaVA config,
how to recognise a built module and read the shapes `projector.json` records, the processor that
expands `<image>` to its token count, and its parameter count for `estimate-memory`. Adding a
projector = one `register_projector(...)` here (+ its module, if transformers lacks it) and a test;
the recipe schema's choice list is tested equal to `PROJECTORS`.

    mlp2x_gelu  transformers' own LlavaMultiModalProjector (Linear -> GELU -> Linear): a plain
                LlavaForConditionalGeneration, one token per vision patch
    resampler   MiniCPM-V's perceiver-style module (query_nums learned queries cross-attending to the
                patches): exported with its self-contained modeling file (remote code), query_nums
                tokens per image whatever the patch grid
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from mmtune.errors import MmtuneError
from mmtune.models.registry import Registry


@dataclass(frozen=True)
class Projector:
    name: str
    description: str
    classes: Callable[[], tuple[type, type]]  # () -> (config class, model class) of the LLaVA holding it
    build: Callable[[object], nn.Module]  # LLaVA config -> a freshly initialised projector
    matches: Callable[[nn.Module], bool]  # is a built module this projector?
    shapes: Callable[[nn.Module], dict]  # the sizes projector.json records (a saved one must match them)
    parameters: Callable[[int, int, int], int]  # (vision hidden, LM hidden, query_nums) -> parameter count
    processor: Callable[..., object]  # (tokenizer, image_processor, config, image_token, extra_tokens) -> processor
    fixed_tokens: bool = False  # each image becomes config.query_nums tokens, whatever the patch grid
    config_fields: Callable[[int], dict] = lambda query_nums: {}  # extra LLaVA config fields from the recipe


PROJECTORS: Registry = Registry("projector")
register_projector = PROJECTORS.register
get_projector = PROJECTORS.get_entry


def projector_of(module: nn.Module) -> Projector:
    """The registry entry of a built projector module."""
    for projector in PROJECTORS.values():
        if projector.matches(module):
            return projector
    raise MmtuneError(f"unknown projector module {type(module).__name__}")


# ---- mlp2x_gelu: transformers' LlavaMultiModalProjector ---------------------------------------------


def _llava_classes():
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    return LlavaConfig, LlavaForConditionalGeneration


def _build_mlp(config) -> nn.Module:
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    return LlavaMultiModalProjector(config)  # nn.Linear's own init, as LLaVA / XTuner


def _llava_processor(tokenizer, image_processor, config, image_token: str, extra_tokens: int):
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=image_token,
        num_additional_image_tokens=extra_tokens,
        chat_template=processor_template(tokenizer, image_token),
    )


register_projector(Projector(
    name="mlp2x_gelu",
    description="two Linear layers with GELU between (LLaVA-1.5); one token per vision patch",
    classes=_llava_classes,
    build=_build_mlp,
    matches=lambda m: hasattr(m, "linear_1") and hasattr(m, "linear_2"),
    shapes=lambda m: {"input_dim": m.linear_1.in_features, "hidden_dim": m.linear_1.out_features,
                      "output_dim": m.linear_2.out_features},
    parameters=lambda v, h, q: v * h + h + h * h + h,
    processor=_llava_processor,
))


# ---- resampler: MiniCPM-V style, in the self-contained modeling_llava_resampler.py --------------------


def _resampler_classes():
    from mmtune.models.modeling_llava_resampler import LlavaResamplerConfig, LlavaResamplerForConditionalGeneration

    return LlavaResamplerConfig, LlavaResamplerForConditionalGeneration


def _build_resampler(config) -> nn.Module:
    from mmtune.models.modeling_llava_resampler import build_resampler

    return build_resampler(config)


def _resampler_processor(tokenizer, image_processor, config, image_token: str, extra_tokens: int):
    from mmtune.models.modeling_llava_resampler import LlavaResamplerProcessor

    return LlavaResamplerProcessor(image_processor=image_processor, tokenizer=tokenizer, query_nums=config.query_nums,
                                   image_token=image_token, chat_template=processor_template(tokenizer, image_token))


def processor_template(tokenizer, image_token: str) -> str | None:
    """The tokenizer's chat template taking the list content processors are called with."""
    from mmtune.jinja_content import with_content_parts

    return with_content_parts(tokenizer.chat_template, image_token) if tokenizer.chat_template else None


register_projector(Projector(
    name="resampler",
    description="MiniCPM-V's resampler: query_nums learned queries cross-attend to the patches",
    classes=_resampler_classes,
    build=_build_resampler,
    matches=lambda m: hasattr(m, "query") and hasattr(m, "attn"),
    shapes=lambda m: {"input_dim": m.kv_dim, "hidden_dim": m.embed_dim, "output_dim": m.embed_dim,
                      "query_nums": m.num_queries, "num_heads": m.num_heads},
    # queries + kv projection + cross-attention (in/out projections) + output projection, layer norms
    parameters=lambda v, h, q: q * h + v * h + 4 * h * h + 4 * h,
    processor=_resampler_processor,
    fixed_tokens=True,
    config_fields=lambda query_nums: {"query_nums": query_nums},
))
