"""Save and load a LLaVA model's projector alone (the pretrain stage's output); the projector kinds
themselves are in the registry of projectors.py.

A saved projector is a directory with `projector.safetensors` (the module's state dict) and
`projector.json` (type and shapes), so a finetune stage can check it fits before loading it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from mmtune.errors import MmtuneError
from mmtune.models.llava import image_tokens_per_image, llava_core, vision_feature_select
from mmtune.models.projectors import projector_of

log = logging.getLogger(__name__)

WEIGHTS_NAME = "projector.safetensors"
INFO_NAME = "projector.json"
FORMAT = "mmtune-projector"


def projector_module(model) -> nn.Module:
    """The projector that trains: under peft `modules_to_save`, the active trainable copy."""
    proj = llava_core(model).multi_modal_projector
    if hasattr(proj, "modules_to_save") and hasattr(proj, "original_module"):  # peft ModulesToSaveWrapper
        name = proj.active_adapters[0] if hasattr(proj, "active_adapters") else "default"
        return proj.modules_to_save[name]
    return proj


def _all_projector_copies(model) -> list[nn.Module]:
    proj = llava_core(model).multi_modal_projector
    if hasattr(proj, "modules_to_save") and hasattr(proj, "original_module"):
        return [proj.original_module, *proj.modules_to_save.values()]
    return [proj]


def projector_info(model) -> dict:
    """What `projector.json` records: type, shapes, and which encoder/LM/feature layer it was trained on."""
    module = projector_module(model)
    config = llava_core(model).config
    kind = projector_of(module)
    return {
        "format": FORMAT,
        "version": 1,
        "projector_type": kind.name,
        **kind.shapes(module),
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select": vision_feature_select(config),
        "image_tokens_per_image": image_tokens_per_image(config),
        "vision_encoder": getattr(config.vision_config, "_name_or_path", "") or config.vision_config.model_type,
        "llm": getattr(config.text_config, "_name_or_path", "") or config.text_config.model_type,
        "dtype": str(next(module.parameters()).dtype).replace("torch.", ""),
    }


def save_projector(model, path_dir) -> Path:
    """Write `projector.safetensors` + `projector.json` to `path_dir` and return it."""
    from safetensors.torch import save_file

    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in projector_module(model).state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / INFO_NAME).write_text(json.dumps(projector_info(model), indent=2) + "\n")
    return out


def read_projector_info(path_dir) -> dict:
    info_path = Path(path_dir) / INFO_NAME
    if not (Path(path_dir) / WEIGHTS_NAME).exists() or not info_path.exists():
        raise MmtuneError(
            f"{path_dir} is not a saved projector (needs {WEIGHTS_NAME} and {INFO_NAME})",
            hint="point it at the pretrain stage's projector directory",
        )
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise MmtuneError(f"cannot read {info_path}: {e}") from None
    if info.get("format") != FORMAT:
        raise MmtuneError(f"{info_path} is not an mmtune projector description")
    return info


def load_projector(model, path_dir) -> dict:
    """Load a saved projector into `model`, after checking it was made for this model's shapes."""
    from safetensors.torch import load_file

    info = read_projector_info(path_dir)
    want = projector_info(model)
    where = str(Path(path_dir) / INFO_NAME)
    module = projector_module(model)
    keys = ["projector_type", *projector_of(module).shapes(module)]
    for key in keys:
        if info.get(key) != want[key]:
            raise MmtuneError(
                f"projector {key} is {info.get(key)!r} but this model needs {want[key]!r}: it was trained "
                f"for LLM {info.get('llm')!r} + vision {info.get('vision_encoder')!r}, "
                f"this model is {want['llm']!r} + {want['vision_encoder']!r}",
                where=where,
                hint="use the projector from a pretrain run with the same vision encoder and LLM",
            )
    for key in ("vision_feature_layer", "vision_feature_select"):
        if info.get(key) != want[key]:
            raise MmtuneError(
                f"projector was trained on {key}={info.get(key)!r} but this model uses {want[key]!r}",
                where=where,
                hint=f"set the model's {key} to {info.get(key)!r}",
            )
    state = load_file(str(Path(path_dir) / WEIGHTS_NAME))
    for module in _all_projector_copies(model):
        ref = next(module.parameters())
        module.load_state_dict({k: v.to(ref.device, ref.dtype) for k, v in state.items()}, strict=True)
    if info.get("llm") != want["llm"] or info.get("vision_encoder") != want["vision_encoder"]:
        log.info("projector from %s was trained with %s + %s", path_dir, info.get("vision_encoder"), info.get("llm"))
    return info



def load_projector_from_state(model, checkpoint_dir) -> None:
    """Load the projector weights out of a full-model training checkpoint (pretrain stage)."""
    from safetensors import safe_open

    checkpoint_dir = Path(checkpoint_dir)
    files = sorted(checkpoint_dir.glob("model*.safetensors"))
    marker = "multi_modal_projector."
    state = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if marker in key:
                    state[key.split(marker, 1)[1]] = handle.get_tensor(key)
    if not state:
        raise MmtuneError(f"no projector weights in {str(checkpoint_dir)!r}",
                          hint="point at a checkpoint-N of a pretrain run, or its final/ projector dir")
    projector_module(model).load_state_dict(state)
