"""Compose a LLaVA model from a pretrained LM + a pretrained vision encoder + a new projector.

The result is transformers' own `LlavaForConditionalGeneration` with a `LlavaProcessor`, so
`save_pretrained` of both gives a directory plain transformers loads (`AutoModelForImageTextToText`,
`AutoProcessor`) with no mmtune installed.

Token counts: a vision encoder sees an (image_size/patch_size)^2 grid of patches. CLIP prepends a
CLS token, SigLIP has none. `vision_feature_select="patch"` keeps the patches only: for CLIP that is
transformers' strategy "default" (drop the first position), for SigLIP it is "full" (keep all;
"default" would drop a real patch). `"cls_patch"` keeps CLS too (CLIP only, strategy "full").
"""

from __future__ import annotations

import logging

import torch

from mmtune.errors import MmtuneError
from mmtune.models.load import DTYPES, load_pretrained
from mmtune.models.projectors import PROJECTORS, Projector, get_projector

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
# Positions a vision encoder adds before its patch tokens, by config model_type.
EXTRA_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0, "siglip2_vision_model": 0}
FEATURE_SELECTS = ("patch", "cls_patch")


def _dtype(dtype):
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise MmtuneError(f"unknown dtype {dtype!r}", hint=f"one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def extra_tokens(vision_config) -> int:
    try:
        return EXTRA_TOKENS[vision_config.model_type]
    except KeyError:
        raise MmtuneError(
            f"vision encoder type {vision_config.model_type!r} is not supported",
            hint=f"use a CLIP or SigLIP vision encoder ({', '.join(EXTRA_TOKENS)})",
        ) from None


def select_strategy(vision_config, vision_feature_select: str) -> str:
    """transformers' vision_feature_select_strategy for our `patch` / `cls_patch`."""
    if vision_feature_select not in FEATURE_SELECTS:
        raise MmtuneError(f"vision_feature_select {vision_feature_select!r} is not one of {FEATURE_SELECTS}")
    has_cls = extra_tokens(vision_config) == 1
    if vision_feature_select == "cls_patch":
        if not has_cls:
            raise MmtuneError(
                f"vision_feature_select 'cls_patch' needs a CLS token; {vision_config.model_type} has none",
                hint="use vision_feature_select: patch",
            )
        return "full"
    return "default" if has_cls else "full"


def vision_feature_select(config) -> str:
    """Our name (`patch` / `cls_patch`) for a LlavaConfig's strategy."""
    has_cls = extra_tokens(config.vision_config) == 1
    return "cls_patch" if has_cls and config.vision_feature_select_strategy == "full" else "patch"


def image_tokens_per_image(config) -> int:
    """How many `<image>` tokens one image becomes in input_ids (= image features per image)."""
    queries = int(config.query_nums) if projector_for_config(config).fixed_tokens else None
    return tokens_per_image(config.vision_config, config.vision_feature_select_strategy, queries)


def tokens_per_image(vision_config, strategy: str, fixed_queries: int | None = None) -> int:
    """Image features per image: a resampler's fixed number of learned queries, or the encoder's
    patches (+ its CLS token under the `full` strategy)."""
    if fixed_queries is not None:
        return fixed_queries
    n = (vision_config.image_size // vision_config.patch_size) ** 2 + extra_tokens(vision_config)
    return n - 1 if strategy == "default" else n


def vision_encoder_config(vision_path: str, trust_remote_code: bool = False):
    """The vision config of an encoder directory (a full CLIPModel/SiglipModel dir gives its vision half)."""
    from transformers import AutoConfig

    cfg = load_pretrained(AutoConfig, vision_path, "the vision encoder", trust_remote_code=trust_remote_code)
    vcfg = getattr(cfg, "vision_config", None) or cfg  # openai/clip-* hub dirs hold vision + text
    extra_tokens(vcfg)
    return vcfg


def load_vision_encoder(vision_path: str, *, dtype=torch.float32, trust_remote_code: bool = False):
    """(vision model, image processor). A full CLIPModel/SiglipModel dir gives its vision half."""
    from transformers import MODEL_MAPPING, AutoImageProcessor

    vcfg = vision_encoder_config(vision_path, trust_remote_code)
    model = load_pretrained(MODEL_MAPPING[type(vcfg)], vision_path, "the vision encoder", config=vcfg, dtype=dtype)
    image_processor = load_pretrained(AutoImageProcessor, vision_path, "the image processor")
    size = getattr(image_processor, "crop_size", None) if getattr(image_processor, "do_center_crop", False) else None
    size = size or image_processor.size
    side = size.get("height") or size.get("shortest_edge")
    if side != vcfg.image_size:
        raise MmtuneError(
            f"the image processor of {vision_path!r} makes {side}px images but the encoder expects {vcfg.image_size}px",
            hint="fix preprocessor_config.json so its size matches the vision config's image_size",
        )
    return model, image_processor


def ensure_image_token(tokenizer, lm, token: str = IMAGE_TOKEN) -> int:
    """The id of `token`, adding it as a special token (growing the embeddings only if needed)."""
    if token not in tokenizer.get_added_vocab():
        # A plain vocab entry is not enough: BPE may split "<image><image>..." differently.
        tokenizer.add_tokens([token], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    rows = lm.get_input_embeddings().weight.shape[0]
    if token_id >= rows:  # many LMs (Qwen2) have spare embedding rows; only grow when there are none
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return token_id


def build_processor(tokenizer, image_processor, config):
    """The processor that expands each `<image>` to `image_tokens_per_image(config)` tokens."""
    return projector_for_config(config).processor(tokenizer, image_processor, config, IMAGE_TOKEN,
                                                  extra_tokens(config.vision_config))


def projector_for_config(config) -> Projector:
    """The registry entry of the projector a LLaVA config holds (its config class says which)."""
    for projector in PROJECTORS.values():
        if type(config) is projector.classes()[0]:
            return projector
    raise MmtuneError(f"{type(config).__name__} is not a LLaVA configuration mmtune builds")


def llava_core(model):
    """The `LlavaModel` inside `model` (a LlavaForConditionalGeneration, possibly peft-wrapped)."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    core = getattr(m, "model", m)
    if not hasattr(core, "multi_modal_projector"):
        raise MmtuneError(f"{type(m).__name__} is not a LLaVA model (no multi_modal_projector)")
    return core


def build_llava(
    lm_path: str,
    vision_path: str,
    *,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select: str = "patch",
    dtype="float32",
    trust_remote_code: bool = False,
    attn_implementation: str | None = "sdpa",
    tokenizer_path: str | None = None,
    resampler_query_nums: int = 64,
):
    """(LlavaForConditionalGeneration, LlavaProcessor). Only the projector is newly initialised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind = get_projector(projector)
    dtype = _dtype(dtype)
    tokenizer = load_pretrained(AutoTokenizer, tokenizer_path or lm_path, "the tokenizer", trust_remote_code=trust_remote_code)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    lm = load_pretrained(AutoModelForCausalLM, lm_path, "the LLM", dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    image_token_id = ensure_image_token(tokenizer, lm)
    vision, image_processor = load_vision_encoder(vision_path, dtype=lm.dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        vision.set_attn_implementation(attn_implementation)

    strategy = select_strategy(vision.config, vision_feature_select)
    n_layers = vision.config.num_hidden_layers  # hidden_states = embeddings + one per layer
    if not isinstance(vision_feature_layer, int) or not -(n_layers + 1) <= vision_feature_layer <= n_layers:
        raise MmtuneError(
            f"vision_feature_layer {vision_feature_layer!r} is outside the encoder's {n_layers} layers",
            hint="-2 (the penultimate layer) is LLaVA's choice",
        )
    common = dict(
        vision_config=vision.config,
        text_config=lm.config,
        image_token_id=image_token_id,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    if kind.fixed_tokens and vision_feature_select != "patch":
        raise MmtuneError(f"the {kind.name} projector needs vision_feature_select: patch (a square patch grid)")
    config_cls, model_cls = kind.classes()
    common.update(kind.config_fields(resampler_query_nums))
    config = config_cls(**common, image_seq_length=0)
    config.image_seq_length = image_tokens_per_image(config)

    # Build the shell on the meta device (no memory, no init), then move the pretrained parts in.
    with torch.device("meta"):
        model = model_cls(config)
    core = model.model
    core.vision_tower = vision
    core.language_model = lm.base_model  # Qwen2Model / LlamaModel: the LM without its head
    model.lm_head = lm.get_output_embeddings()
    core.multi_modal_projector = kind.build(config)
    core.multi_modal_projector.to(device=lm.device, dtype=lm.dtype)
    left = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if left:
        raise MmtuneError(f"weights left uninitialised while building LLaVA: {left[:5]}")  # a bug, not user input
    model.config.text_config = lm.config  # resize_token_embeddings may have changed vocab_size
    model.generation_config = lm.generation_config
    model.eval()

    return model, build_processor(tokenizer, image_processor, config)
