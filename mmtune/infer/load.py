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

log = logging.getLogger(__name__)
_PROBE = [Message("system", "S"), Message("user", "Q"), Message("assistant", "A"), Message("user", "Q2")]


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    template: ChatFormat
    name: str


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


def load_for_inference(model_path: str, *, adapter: str | None = None, template: str | None = None,
                       device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mmtune.export.to_hf import has_tokenizer
    from mmtune.models.load import pick_device

    for p in (model_path, adapter):
        if p and (p.startswith((".", "/", "~")) or Path(p).exists()) and not Path(p).expanduser().exists():
            raise MmtuneError(f"{p!r} does not exist")
    device = pick_device(device)
    tok_source = adapter if adapter and has_tokenizer(Path(adapter)) else model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=trust_remote_code)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise MmtuneError(f"cannot load {model_path!r}: {e}".splitlines()[0]) from None
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, pick_template(tokenizer, template), adapter or model_path)
