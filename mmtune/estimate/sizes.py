"""What is trained, counted from configs alone: the model is built on the meta device (no weights, no
download beyond config.json), LoRA applied with the recipe's settings, the vision encoder and its
projector added for a VLM."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.models.llava import EXTRA_TOKENS  # CLIP adds a CLS token, SigLIP none
from mmtune.models.load import load_pretrained
from mmtune.models.projectors import get_projector


@dataclass(frozen=True)
class ModelSize:
    """What the estimate needs to know about a model; counted once from its config."""

    name: str
    params: int  # all parameters (tied weights once)
    quantizable_params: int  # decoder Linear weights: what 4-bit QLoRA quantizes
    embedding_params: int  # input embedding (lm_head when untied counts in largest_unit too)
    layer_params: int  # one decoder layer
    hidden_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    intermediate_size: int = 0  # the MLP's inner width (0: unknown, taken as 4 x hidden)
    kv_size: int = 0  # key/value width: key-value heads x head size (0: unknown, taken as hidden)
    lora_params: int = 0  # trainable parameters of the recipe's LoRA
    vision_params: int = 0  # vision encoder (0: text-only model)
    projector_params: int = 0
    vision_hidden: int = 0
    vision_layers: int = 0
    vision_heads: int = 0
    image_tokens: int = 0  # tokens one image is inside the vision encoder
    images_per_sample: int = 0  # images / slices the vision encoder sees per image, at most (0: the recipe says)
    family: str | None = None  # a native vision-language family (mmtune.models.families): what trains by default

    @property
    def total_params(self) -> int:
        return self.params + self.vision_params + self.projector_params


def load_model_config(source: str | Path, trust_remote_code: bool = False):
    """A transformers config from a model dir, a config.json file, or a hub id (needs network)."""
    from transformers import AutoConfig, PretrainedConfig

    path = Path(source).expanduser()
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise MmtuneError(f"{path}: config has no model_type", hint="use a config.json saved by transformers")
        from transformers import CONFIG_MAPPING

        cls = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else PretrainedConfig
        config = cls(**data)
        config.name_or_path = str(path.parent if path.name == "config.json" else path.with_suffix(""))
        return config
    return load_pretrained(AutoConfig, source, "the model config", trust_remote_code=trust_remote_code,
                           hint="give a local model dir or --config-json PATH/config.json")


def _meta_causal_lm(config, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _text_config(config):
    return getattr(config, "text_config", None) or config


def count_model(config, lora=None, *, name: str = "model", trust_remote_code: bool = False) -> ModelSize:
    """ModelSize of a causal LM config; `lora` (the recipe's LoraConfig section) sets lora_params."""
    import torch

    model = _meta_causal_lm(config, trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    out_emb = model.get_output_embeddings()
    quantizable = sum(m.weight.numel() for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m is not out_emb)
    embedding = model.get_input_embeddings().weight.numel()
    layers = _decoder_layers(model)
    layer_params = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0)
    text = _text_config(config)
    lora_params = _count_lora(model, lora) if lora is not None else 0
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelSize(
        name=name, params=params, quantizable_params=quantizable, embedding_params=embedding,
        layer_params=layer_params, hidden_size=text.hidden_size, num_layers=text.num_hidden_layers,
        num_heads=heads, vocab_size=text.vocab_size, intermediate_size=getattr(text, "intermediate_size", 0) or 0,
        kv_size=kv_heads * head_dim, lora_params=lora_params,
    )


def _decoder_layers(model):
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def _count_lora(meta_model, lora, target_modules=None) -> int:
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0,
                        target_modules=target_modules or lora.target_modules,
                        modules_to_save=list(lora.modules_to_save) or None, task_type="CAUSAL_LM")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from peft/transformers about the meta model
        peft_model = get_peft_model(meta_model, config)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def add_vision(size: ModelSize, vision_config, *, projector: str = "mlp2x_gelu", query_nums: int = 64,
               trust_remote_code: bool = False) -> ModelSize:
    """The LM's ModelSize plus a vision encoder (counted on meta) and its projector (by the formula
    of its registry entry, mmtune.models.projectors)."""
    import torch
    from transformers import AutoModel

    vcfg = getattr(vision_config, "vision_config", None) or vision_config
    with torch.device("meta"):
        vision = AutoModel.from_config(vcfg, trust_remote_code=trust_remote_code)
    vision_params = sum(p.numel() for p in vision.parameters())
    v, h = vcfg.hidden_size, size.hidden_size
    image_tokens = (vcfg.image_size // vcfg.patch_size) ** 2 + EXTRA_TOKENS.get(vcfg.model_type, 1)
    proj = get_projector(projector).parameters(v, h, query_nums)
    return replace(size, vision_params=vision_params, projector_params=proj, vision_hidden=v,
                   vision_layers=vcfg.num_hidden_layers, vision_heads=vcfg.num_attention_heads,
                   image_tokens=image_tokens)


def count_native_vlm(config, family, lora=None, *, knobs: dict | None = None, name: str = "model",
                     trust_remote_code: bool = False) -> ModelSize:
    """ModelSize of a vision-language checkpoint of a family transformers ships (mmtune.models.families):
    the whole model built on meta, its parameters split into vision / projector / LLM by the family's
    parts; `lora` counts the LLM's LoRA as training places it (the language model's blocks only)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from mmtune.models.families import encoder_tokens
    from mmtune.models.trainable import lora_target_regex

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code)
    parts = family.parts
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for param_name, p in model.named_parameters():
        counts[parts.group_of(param_name)] += p.numel()
    llm = model.get_submodule(parts.llm)
    out_emb = model.get_output_embeddings()
    quantizable = sum(m.weight.numel() for m in llm.modules() if isinstance(m, torch.nn.Linear) and m is not out_emb)
    layers = next((m for n, m in llm.named_modules() if n.split(".")[-1] == "layers"), [])
    layer_params = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0)
    lora_params = 0
    if lora is not None:
        regex = lora_target_regex(model, parts, ["llm"], lora.target_modules)
        lora_params = _count_lora(model, lora, target_modules=regex)
    text, v = config.get_text_config(), config.vision_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    tokens, images = encoder_tokens(family, config, knobs or {})
    return ModelSize(
        name=name, params=counts["llm"], quantizable_params=quantizable,
        embedding_params=model.get_input_embeddings().weight.numel(), layer_params=layer_params,
        hidden_size=text.hidden_size, num_layers=text.num_hidden_layers, num_heads=heads, vocab_size=text.vocab_size,
        intermediate_size=getattr(text, "intermediate_size", 0) or 0,
        kv_size=(getattr(text, "num_key_value_heads", None) or heads) * head_dim, lora_params=lora_params,
        vision_params=counts["vision"], projector_params=counts["projector"], vision_hidden=v.hidden_size,
        vision_layers=getattr(v, "num_hidden_layers", None) or v.depth,
        vision_heads=getattr(v, "num_attention_heads", None) or v.num_heads, image_tokens=tokens,
        images_per_sample=images, family=family.name,
    )


def synthetic_llama(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=None, vocab_size=32000, tie_word_embeddings=False, name="llama-7b"):
    """A LlamaConfig with the given sizes (defaults: Llama-2-7B), for estimates without a download."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads or num_attention_heads,
                         vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings)
    config.name_or_path = name
    return config


def model_size_for_recipe(recipe, config_json: str | None = None) -> ModelSize:
    """Count the recipe's model (and vision encoder, when it has one) from configs only."""
    from mmtune.models.families import family_for_type

    trust = recipe.model.trust_remote_code
    source = config_json or recipe.model.path
    config = load_model_config(source, trust)
    name = Path(str(getattr(config, "name_or_path", "") or source)).name
    family = family_for_type(getattr(config, "model_type", None))
    if family is not None and recipe.model.vision is None:  # a native vision-language checkpoint
        return count_native_vlm(config, family, recipe.method.lora, knobs=dict(recipe.data.processor), name=name,
                                trust_remote_code=trust)
    size = count_model(config, recipe.method.lora, name=name, trust_remote_code=trust)
    vision = getattr(recipe.model, "vision", None)
    if vision is not None:
        vconfig = load_model_config(vision.path, trust)
        projector = recipe.model.projector
        size = add_vision(size, vconfig, projector=projector.type, query_nums=projector.query_nums, trust_remote_code=trust)
    return size
