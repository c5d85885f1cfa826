"""Which weights train, as data: one trainable-groups policy for text LMs and LLaVA models.

Groups: `llm` (the whole LM), `llm.lora`, and for a vision-language model `projector`, `vision`
(the whole encoder), `vision.lora`. Everything not named is frozen. The defaults (`trainable_groups`):
    text model, full          : [llm]
    text model, lora / qlora  : [llm.lora]
    VLM pretrain              : [projector]
    VLM finetune              : the family's (mmtune.models.families): LLaVA [projector, llm.lora] /
                                [projector, llm]; MiniCPM-V [vision, projector, llm.lora] /
                                [vision, projector, llm] (its finetune scripts);
                                the others [llm.lora] / [llm]
    + vision                  : e.g. [projector, llm.lora, vision.lora]   (method.trainable names it)

LoRA goes through peft. On a text model it adapts `lora.target_modules` (peft's "all-linear" leaves
the head alone). On a vision-language model the targets are a regex scoped to the language model's
blocks (and, separately, the vision tower's), at the paths the family's entry names
(mmtune.models.families): a bare `target_modules=["q_proj", ...]` would also hit CLIP's q_proj/v_proj. When LoRA is used, fully trained groups (`projector`, `vision`) go in peft's
`modules_to_save`, so the adapter checkpoint carries them. `llm` (full) with `vision.lora` is
refused: peft would need a second copy of the whole LM (and would untie its head from its embeddings).
QLoRA (4-bit base) prepares the quantized model with peft first.
"""

from __future__ import annotations

import logging
import re

from torch import nn

from mmtune.errors import ConfigError
from mmtune.models.families import FAMILIES, Parts, base_model, family_for_type

log = logging.getLogger(__name__)

GROUPS = ("projector", "llm", "llm.lora", "vision", "vision.lora")
TEXT_GROUPS = ("llm", "llm.lora")


def trainable_groups(method_cfg, vision: bool, family=None) -> list[str]:
    """The groups a recipe's `method` section trains: `method.trainable` when it names them, else the
    default of its type, stage and (for a VLM) family. The one home of those defaults (training,
    export metadata and estimate-memory read them here)."""
    if method_cfg.trainable is not None:
        return list(method_cfg.trainable)
    return default_groups(method_cfg.type, method_cfg.stage, vision, family)


def default_groups(method: str, stage: str = "finetune", vision: bool = False, family=None) -> list[str]:
    """Text: [llm] or [llm.lora]. VLM pretrain: [projector]. VLM finetune: the family's default for the
    method (mmtune.models.families; an assembled LLaVA's when no family is given)."""
    if not vision:
        return ["llm"] if method == "full" else ["llm.lora"]
    if stage == "pretrain":
        return ["projector"]
    defaults = (family or FAMILIES["llava"]).trainable
    return list(defaults["full" if method == "full" else "lora"])


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


def vision_parts(model) -> Parts | None:
    """Where a vision-language model's parts live (its family's entry); None for a text model."""
    family = family_for_type(getattr(base_model(model).config, "model_type", None))
    return family.parts if family is not None else None


def apply_trainable(model, trainable: list[str], lora_cfg=None, parts: Parts | None = None):
    """Freeze all but the named groups; add LoRA for `*.lora`. Returns the (maybe peft-wrapped) model.

    `lora_cfg` has r / alpha / dropout / target_modules / modules_to_save (mmtune's LoraConfig
    schema, or None for its defaults); `parts` says where a VLM's groups live (its family's entry,
    looked up from the config when not given)."""
    if lora_cfg is None:
        from mmtune.config.schema import LoraConfig as MmtuneLora

        lora_cfg = MmtuneLora()
    parts = parts or vision_parts(model)
    if parts is None:
        return _apply_text(model, check_trainable(trainable, vision=False), lora_cfg)
    return _apply_vision(model, check_trainable(trainable), lora_cfg, parts)


def _apply_text(model, wanted: set[str], lora_cfg):
    if wanted == {"llm"}:
        return model  # a full fine-tune: every parameter trains
    return _peft(model, lora_cfg, lora_cfg.target_modules, lora_cfg.modules_to_save or None)


def _peft(model, lora_cfg, target_modules, modules_to_save):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=target_modules, modules_to_save=modules_to_save, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _blocks(name: str) -> re.Pattern:
    return re.compile(rf"(?:^|\.){re.escape(name)}\.(\d+)\.")


def _block_linears(module: nn.Module, blocks: str, keep_layer) -> set[str]:
    """Leaf names of the Linear layers inside `<blocks>.N` with keep_layer(N)."""
    pattern, names = _blocks(blocks), set()
    for name, m in module.named_modules():
        hit = pattern.search(name + ".")
        if isinstance(m, nn.Linear) and hit and keep_layer(int(hit.group(1))):
            names.add(name.rsplit(".", 1)[-1])
    return names


def used_vision_layers(config) -> int | None:
    """How many vision encoder layers feed `vision_feature_layer` (hidden_states[0] = embeddings), for
    the models that read one hidden layer (LLaVA and kin); None: all of them."""
    layers = getattr(config, "vision_feature_layer", None)
    n_layers = getattr(config.vision_config, "num_hidden_layers", None)
    if layers is None or n_layers is None:
        return None
    layers = layers if isinstance(layers, list) else [layers]
    return max(i if i >= 0 else n_layers + 1 + i for i in layers)


def lora_target_regex(model, parts: Parts, lora_parts: list[str], target_modules="all-linear") -> str:
    """A peft `target_modules` regex: the wanted Linear layers of the transformer blocks of `lora_parts`
    (`llm`, `vision`).

    Only the blocks count (`layers.N` of the LLM, the family's vision blocks), so SigLIP's pooling
    head, a projector inside the vision tower and the lm_head get no LoRA, and vision layers past
    `vision_feature_layer` (whose output LLaVA never reads) are skipped: LoRA there would get no
    gradient, which DDP reports as unused parameters.
    """
    base = base_model(model)
    pieces = []
    for part in lora_parts:
        path = parts.llm if part == "llm" else parts.vision
        blocks = "layers" if part == "llm" else parts.vision_blocks
        used = None if part == "llm" else used_vision_layers(base.config)
        keep = (lambda i: True) if used is None else (lambda i, n=used: i < n)
        present = _block_linears(base.get_submodule(path), blocks, keep)
        names = present if target_modules == "all-linear" else set(target_modules) & present
        if not names:
            raise ConfigError(
                f"LoRA target_modules {target_modules} match no Linear layer in the {part}",
                hint=f"its Linear layers are named {sorted(present)}",
            )
        layers = r"\d+" if used is None else "|".join(str(i) for i in range(used))
        alts = "|".join(sorted(map(re.escape, names)))
        pieces.append(rf"{re.escape(path)}\.(.*\.)?{re.escape(blocks)}\.({layers})\.(.*\.)?({alts})")
    return "|".join(f"({p})" for p in pieces)  # peft fullmatches the module name


def _apply_vision(model, wanted: set[str], lora_cfg, parts: Parts):
    lora_parts = [p for p in ("llm", "vision") if f"{p}.lora" in wanted]
    paths = {"vision": (parts.vision,), "projector": parts.projectors, "llm": (parts.llm,)}
    if not lora_parts:
        model.requires_grad_(False)
        for group in ("vision", "llm", "projector"):  # the projector last: it may sit inside the vision tower
            for path in paths[group]:
                model.get_submodule(path).requires_grad_(group in wanted)
        if "llm" in wanted:
            model.get_output_embeddings().requires_grad_(True)  # lm_head (tied to the embeddings or not)
        return model
    # "llm" + LoRA was refused above; a projector inside a fully trained vision tower is saved with it
    saved = [parts.vision] if "vision" in wanted else []
    if "projector" in wanted:
        saved += [p for p in parts.projectors if not ("vision" in wanted and p.startswith(parts.vision + "."))]
    # peft matches modules_to_save by name suffix: full paths, so that `merger` does not also catch a
    # `vit_merger` inside the vision tower; a list of modules (Qwen3-VL's deepstack mergers) by element
    saved = [f"{path}.{i}" if isinstance(model.get_submodule(path), nn.ModuleList) else path
             for path in saved for i in range(_list_length(model.get_submodule(path)))]
    extra_saved = [m for m in getattr(lora_cfg, "modules_to_save", None) or [] if m not in saved]
    return _peft(model, lora_cfg, lora_target_regex(model, parts, lora_parts, lora_cfg.target_modules),
                 saved + extra_saved or None)


def _list_length(module: nn.Module) -> int:
    return len(module) if isinstance(module, nn.ModuleList) else 1


def trainable_summary(model, parts: Parts | None = None) -> dict[str, tuple[int, int]]:
    """{group: (trainable, total)} parameter counts for vision / projector / llm, and "all".

    LoRA weights count in the group they adapt; peft's frozen original copy of a
    `modules_to_save` module counts in the total.
    """
    parts = parts or vision_parts(model)
    out = {g: [0, 0] for g in ("vision", "projector", "llm", "all")}
    for name, p in model.named_parameters():
        n = p.numel()
        for g in (parts.group_of(name), "all"):
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
