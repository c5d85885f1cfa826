"""Which weights train, as data: one trainable-groups policy for text LMs and LLaVA models.

Groups: `llm` (the whole LM), `llm.lora`, and for a LLaVA model `projector`, `vision` (the whole
encoder), `vision.lora`. Everything not named is frozen. The defaults (`trainable_groups`):
    text model, full          : [llm]
    text model, lora / qlora  : [llm.lora]
    VLM pretrain              : [projector]
    VLM finetune              : [projector, llm.lora]   (or [projector, llm] for a full finetune)
    + vision                  : [projector, llm.lora, vision.lora]   (method.trainable names it)

LoRA goes through peft. On a text model it adapts `lora.target_modules` (peft's "all-linear" leaves
the head alone). On a LLaVA model the targets are a regex scoped to the language model (and,
separately, the vision tower): a bare `target_modules=["q_proj", ...]` would also hit CLIP's
q_proj/v_proj. When LoRA is used, fully trained groups (`projector`, `vision`) go in peft's
`modules_to_save`, so the adapter checkpoint carries them. `llm` (full) with `vision.lora` is
refused: peft would need a second copy of the whole LM (and would untie its head from its embeddings).
QLoRA (4-bit base) prepares the quantized model with peft first.
"""

from __future__ import annotations

import logging
import re

from torch import nn

from mmtune.errors import ConfigError
from mmtune.models.llava import llava_core

log = logging.getLogger(__name__)

GROUPS = ("projector", "llm", "llm.lora", "vision", "vision.lora")
TEXT_GROUPS = ("llm", "llm.lora")
# Module names in LlavaForConditionalGeneration (peft prefixes them with base_model.model.).
PREFIX = {"llm": "model.language_model", "vision": "model.vision_tower"}
SAVE_NAME = {"projector": "multi_modal_projector", "vision": "vision_tower"}


def trainable_groups(method_cfg, vision: bool) -> list[str]:
    """The groups a recipe's `method` section trains: `method.trainable` when it names them, else the
    default of its type and (for a VLM) stage. The one home of those defaults (training, export
    metadata and estimate-memory read them here)."""
    if method_cfg.trainable is not None:
        return list(method_cfg.trainable)
    return default_groups(method_cfg.type, method_cfg.stage, vision)


def default_groups(method: str, stage: str = "finetune", vision: bool = False) -> list[str]:
    llm = ["llm"] if method == "full" else ["llm.lora"]
    if not vision:
        return llm
    return ["projector"] if stage == "pretrain" else ["projector", *llm]


def check_trainable(trainable: list[str], vision: bool = True) -> set[str]:
    wanted = set(trainable)
    allowed = GROUPS if vision else TEXT_GROUPS
    unknown = wanted - set(allowed)
    if unknown:
        what = "" if vision else " for a text model"
        raise ConfigError(f"unknown trainable group(s) {sorted(unknown)}{what}", hint=f"choose from {', '.join(allowed)}")
    for part in ("llm", "vision"):
        if {part, f"{part}.lora"} <= wanted:
            raise ConfigError(f"trainable lists both {part!r} and {part + '.lora'!r}", hint="pick one")
    if not wanted:
        raise ConfigError("trainable is empty: nothing would train", hint="e.g. [projector]")
    if {"llm", "vision.lora"} <= wanted:
        raise ConfigError(
            "trainable 'llm' (full) cannot be combined with 'vision.lora'",
            hint="use llm.lora with vision.lora, or llm with vision (full)",
        )
    return wanted


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward (non-reentrant checkpoints).

    The input embeddings' output is made to require grad, so a frozen base (LoRA, QLoRA) still
    passes gradients through the checkpointed layers."""
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def prepare_text_model(model, method_cfg, *, gradient_checkpointing: bool = False):
    """A loaded text LM made ready for its method: QLoRA preparation, activation checkpointing,
    then its trainable groups (a PeftModel for lora / qlora)."""
    if method_cfg.type == "qlora":
        from peft import prepare_model_for_kbit_training

        # peft's own checkpointing switch calls transformers' deprecated gradient_checkpointing_enable
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        enable_activation_checkpointing(model)
    return apply_trainable(model, trainable_groups(method_cfg, vision=False), method_cfg.lora)


def is_llava(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return hasattr(getattr(base, "model", base), "multi_modal_projector")


def apply_trainable(model, trainable: list[str], lora_cfg=None):
    """Freeze all but the named groups; add LoRA for `*.lora`. Returns the (maybe peft-wrapped) model.

    `lora_cfg` has r / alpha / dropout / target_modules / modules_to_save (mmtune's LoraConfig
    schema, or None for its defaults)."""
    if lora_cfg is None:
        from mmtune.config.schema import LoraConfig as MmtuneLora

        lora_cfg = MmtuneLora()
    if not is_llava(model):
        return _apply_text(model, check_trainable(trainable, vision=False), lora_cfg)
    return _apply_llava(model, check_trainable(trainable), lora_cfg)


def _apply_text(model, wanted: set[str], lora_cfg):
    if wanted == {"llm"}:
        return model  # a full fine-tune: every parameter trains
    return _peft(model, lora_cfg, lora_cfg.target_modules, lora_cfg.modules_to_save or None)


def _peft(model, lora_cfg, target_modules, modules_to_save):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=target_modules, modules_to_save=modules_to_save, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _layer_linears(module: nn.Module, keep_layer) -> set[str]:
    """Leaf names of the Linear layers inside `layers.N` blocks with keep_layer(N)."""
    names = set()
    for name, m in module.named_modules():
        hit = LAYER.search(name + ".")
        if isinstance(m, nn.Linear) and hit and keep_layer(int(hit.group(1))):
            names.add(name.rsplit(".", 1)[-1])
    return names


def used_vision_layers(config) -> int:
    """How many vision encoder layers feed `vision_feature_layer` (hidden_states[0] = embeddings)."""
    n_layers = config.vision_config.num_hidden_layers
    layers = config.vision_feature_layer
    layers = layers if isinstance(layers, list) else [layers]
    return max(i if i >= 0 else n_layers + 1 + i for i in layers)


def lora_target_regex(model, parts: list[str], target_modules="all-linear") -> str:
    """A peft `target_modules` regex: the wanted Linear layers of the transformer blocks of `parts`.

    Only `layers.N` blocks count, so SigLIP's pooling head and the lm_head get no LoRA, and vision
    layers past `vision_feature_layer` (whose output LLaVA never reads) are skipped: LoRA there
    would get no gradient, which DDP reports as unused parameters.
    """
    core = llava_core(model)
    pieces = []
    for part in parts:
        if part == "llm":
            sub, keep = core.language_model, (lambda i: True)
            layers = r"\d+"
        else:
            n_used = used_vision_layers(core.config)
            sub, keep = core.vision_tower, (lambda i, n=n_used: i < n)
            layers = "|".join(str(i) for i in range(n_used))
        present = _layer_linears(sub, keep)
        names = present if target_modules == "all-linear" else set(target_modules) & present
        if not names:
            raise ConfigError(
                f"LoRA target_modules {target_modules} match no Linear layer in the {part}",
                hint=f"its Linear layers are named {sorted(present)}",
            )
        alts = "|".join(sorted(map(re.escape, names)))
        pieces.append(rf"{re.escape(PREFIX[part])}\.(.*\.)?layers\.({layers})\.(.*\.)?({alts})")
    return "|".join(f"({p})" for p in pieces)  # peft fullmatches the module name


def _apply_llava(model, wanted: set[str], lora_cfg):
    lora_parts = [p for p in ("llm", "vision") if f"{p}.lora" in wanted]
    core = llava_core(model)
    if not lora_parts:
        model.requires_grad_(False)
        groups = {"projector": core.multi_modal_projector, "llm": core.language_model, "vision": core.vision_tower}
        for name, module in groups.items():
            if name in wanted:
                module.requires_grad_(True)
        if "llm" in wanted:
            model.get_output_embeddings().requires_grad_(True)  # lm_head (tied to the embeddings or not)
        return model
    full = [g for g in ("projector", "vision") if g in wanted]  # "llm" + LoRA was refused above
    extra_saved = [m for m in getattr(lora_cfg, "modules_to_save", None) or [] if m not in SAVE_NAME.values()]
    return _peft(model, lora_cfg, lora_target_regex(model, lora_parts, lora_cfg.target_modules),
                 [SAVE_NAME[g] for g in full] + extra_saved or None)


def _group_of(name: str) -> str:
    if ".vision_tower." in f".{name}":
        return "vision"
    if ".multi_modal_projector." in f".{name}":
        return "projector"
    return "llm"


def trainable_summary(model) -> dict[str, tuple[int, int]]:
    """{group: (trainable, total)} parameter counts for vision / projector / llm, and "all".

    LoRA weights count in the group they adapt; peft's frozen original copy of a
    `modules_to_save` module counts in the total.
    """
    out = {g: [0, 0] for g in ("vision", "projector", "llm", "all")}
    for name, p in model.named_parameters():
        n = p.numel()
        for g in (_group_of(name), "all"):
            out[g][1] += n
            out[g][0] += n if p.requires_grad else 0
    return {g: (t, n) for g, (t, n) in out.items()}


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())  # ZeRO-3 keeps a placeholder in p
        if hasattr(p, "quant_state") or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
