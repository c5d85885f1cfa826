"""Load a model for inference: base or merged model, optional peft adapter, and the chat template.

Template choice: an explicit name wins (with a warning when it renders differently from the
template stored in the tokenizer at export); otherwise the stored template is used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mmtune.data.conversation import Message
from mmtune.data.templates import ChatFormat, TokenizerTemplate, get_template
from mmtune.errors import MmtuneError
from mmtune.models.load import check_source, load_pretrained, pick_device
from mmtune.models.remote_code import check_first_forward
from mmtune.rundir import has_tokenizer, is_adapter_dir, read_meta

log = logging.getLogger(__name__)
_PROBE = [Message("system", "S"), Message("user", "Q"), Message("assistant", "A"), Message("user", "Q2")]


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    template: ChatFormat
    name: str
    vision: object | None = None  # how a vision-language model takes images (infer/vision.py), None for text-only


def pick_template(tokenizer, name: str | None) -> ChatFormat:
    stored = TokenizerTemplate(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    if name is None or name == "auto":
        if stored is None:
            raise MmtuneError("the model stores no chat template", hint="pass --prompt-template NAME")
        return stored
    template = get_template(name, tokenizer)
    if stored is not None:
        try:
            same = stored.render(_PROBE, True)[0] == template.render(_PROBE, True)[0]
        except Exception:  # noqa: BLE001 - a stored template that cannot render the probe differs
            same = False
        if not same:
            log.warning("template %r differs from the chat template stored with the model; "
                        "answers may be poor (omit --prompt-template to use the stored one)", name)
    return template


def _is_vlm_dir(path: str) -> bool:
    import json

    config = Path(path) / "config.json"
    return config.exists() and "vision_config" in json.loads(config.read_text())


def _finish(model, tokenizer, template: str | None, name: str, device: str, vision=None,
            adapter: str | None = None) -> LoadedModel:
    if adapter:
        from peft import PeftModel

        model = load_pretrained(PeftModel, adapter, "the adapter", model)
    model.to(device).eval()
    check_first_forward(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, pick_template(tokenizer, template), name, vision)


def _check_paths(*paths) -> None:
    for p in paths:
        if p:
            check_source(p)


def load_for_inference(model_path: str, *, adapter: str | None = None, template: str | None = None,
                       device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False) -> LoadedModel:
    """A text model (+ optional peft adapter), or an exported LLaVA model (detected from its config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_paths(model_path, adapter)
    device = pick_device(device)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    if _is_vlm_dir(model_path):
        return _load_vlm_dir(model_path, adapter, template, device, torch_dtype, trust_remote_code)
    tok_source = adapter if adapter and has_tokenizer(Path(adapter)) else model_path
    tokenizer = load_pretrained(AutoTokenizer, tok_source, "the tokenizer", trust_remote_code=trust_remote_code)
    model = load_pretrained(AutoModelForCausalLM, model_path, "the model", dtype=torch_dtype,
                            trust_remote_code=trust_remote_code)
    return _finish(model, tokenizer, template, adapter or model_path, device, adapter=adapter)


def _load_vlm_dir(path, adapter, template, device, torch_dtype, trust_remote_code) -> LoadedModel:
    """An exported (or released) vision-language model with its processor; a native family's own chat
    template renders its image parts unless `template` names another."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from mmtune.data.templates import ProcessorTemplate
    from mmtune.infer.vision import vision_inputs_for
    from mmtune.models.families import family_for_type
    from mmtune.models.processors import load_processor

    config = load_pretrained(AutoConfig, path, "the model config", trust_remote_code=trust_remote_code)
    family = family_for_type(config.model_type)
    processor = load_processor(path, trust_remote_code=trust_remote_code,
                               video_stub=family.video_stub if family else None)
    model = load_pretrained(AutoModelForImageTextToText, path, "the vision-language model", dtype=torch_dtype,
                            trust_remote_code=trust_remote_code)
    meta = (read_meta(Path(adapter)) if adapter else None) or read_meta(Path(path)) or {}  # what training recorded
    vision = vision_inputs_for(model, processor, meta)
    loaded = _finish(model, processor.tokenizer, template, adapter or path, device, vision, adapter=adapter)
    if "vision" not in meta and template in (None, "auto"):  # a native family: image parts in its own template
        loaded.template = ProcessorTemplate(processor.tokenizer, processor=processor)
    return loaded


def load_llava_parts(llm: str, visual_encoder: str, llava_dir: str, *, template: str | None = None, device: str = "auto",
                     trust_remote_code: bool = False) -> LoadedModel:
    """XTuner's `chat LLM --visual-encoder ENC --llava DIR`: LLM + vision encoder + the projector (and
    adapter, if any) that a LLaVA run saved in DIR."""
    from mmtune.infer.vision import vision_inputs_for
    from mmtune.models.llava import build_llava
    from mmtune.models.projector import INFO_NAME, load_projector, read_projector_info

    _check_paths(llm, visual_encoder, llava_dir)
    d = Path(llava_dir)
    meta = read_meta(d) or {}
    info = read_projector_info(d) if (d / INFO_NAME).exists() else {}
    pretrained = meta.get("pretrained_projector")
    model, processor = build_llava(
        llm, visual_encoder, projector=info.get("projector_type", (meta.get("projector") or {}).get("type", "mlp2x_gelu")),
        vision_feature_layer=info.get("vision_feature_layer", (meta.get("vision") or {}).get("feature_layer", -2)),
        vision_feature_select=info.get("vision_feature_select", (meta.get("vision") or {}).get("feature_select", "patch")),
        tokenizer_path=str(d) if has_tokenizer(d) else None, trust_remote_code=trust_remote_code,
    )
    if (d / INFO_NAME).exists():
        load_projector(model, d)
    elif pretrained and Path(pretrained).exists():
        load_projector(model, pretrained)
    if is_adapter_dir(d):
        from peft import PeftModel

        model = load_pretrained(PeftModel, d, "the adapter", model).merge_and_unload()
    elif not (d / INFO_NAME).exists():
        raise MmtuneError(f"{llava_dir!r} holds neither a projector (projector.json) nor an adapter",
                          hint="point --llava at the final/ or checkpoint-N dir of a LLaVA run")
    vision = vision_inputs_for(model, processor, {**meta, "vision": meta.get("vision") or {}})
    return _finish(model, processor.tokenizer, template, llava_dir, pick_device(device), vision)
