"""The VLM answerer: `mmtune eval mmbench LLM --visual-encoder ENC --llava DIR`, or MODEL an exported LLaVA.

Each item is asked as LLaVA's MMBench script asks it: one `<image>` placeholder per image in front
of the prompt, the item's decoded images filling them, greedy decoding through the engine's one
generate path (`generate_reply(..., images=, vision=)`), so a model sees the images exactly as in
training. Items are answered one by one (a batch of items is still accepted).

Loading (mirrors `mmtune chat`):
  * `--llava DIR --visual-encoder ENC` with MODEL the LLM: LLM + vision encoder + what the LLaVA run
    saved in DIR (projector, adapter) — `load_llava_parts`;
  * `--llava DIR` alone: DIR is an exported LLaVA model (transformers' own classes);
  * MODEL itself an exported LLaVA model: `make_answerer` sees `loaded.vision` and comes here.
"""

from __future__ import annotations

from typing import Sequence

from mmtune.data.conversation import IMAGE_PLACEHOLDER
from mmtune.errors import MmtuneError
from mmtune.eval.answer import AnswerFn, eval_settings, item_messages
from mmtune.eval.tsv import EvalItem


def vlm_answerer(loaded, *, settings=None, system: str | None = None) -> AnswerFn:
    """Answer with a loaded vision-language model (`loaded.vision` set), images included."""
    from mmtune.infer.engine import generate_reply

    if getattr(loaded, "vision", None) is None:
        raise MmtuneError(f"{loaded.name} is not a vision-language model")
    settings = settings or eval_settings()

    def answer(items: Sequence[EvalItem]) -> list[str]:
        replies = []
        for item in items:
            messages = item_messages(item, system, image_placeholder=IMAGE_PLACEHOLDER)
            replies.append(generate_reply(loaded.model, loaded.tokenizer, loaded.template, messages, settings,
                                          images=item.images or None, vision=loaded.vision))
        return replies

    return answer


def make_vlm_answerer(model_path: str, *, llava: str | None, visual_encoder: str | None, adapter: str | None = None,
                      template: str | None = None, device: str = "auto", dtype: str = "auto", settings=None,
                      system: str | None = None, trust_remote_code: bool = False) -> AnswerFn:
    from mmtune.infer.load import load_for_inference, load_llava_parts

    if visual_encoder and not llava:
        raise MmtuneError("--visual-encoder needs --llava DIR (the projector / adapter of the LLaVA run)")
    if adapter and visual_encoder:
        raise MmtuneError("--adapter cannot be combined with --llava DIR --visual-encoder ENC",
                          hint="the LLaVA run's adapter is read from DIR")
    if visual_encoder:
        loaded = load_llava_parts(model_path, visual_encoder, llava, template=template, device=device,
                                  trust_remote_code=trust_remote_code)
    else:
        loaded = load_for_inference(llava, adapter=adapter, template=template, device=device, dtype=dtype,
                                    trust_remote_code=trust_remote_code)
        if loaded.vision is None:
            raise MmtuneError(f"--llava {llava!r} is not an exported LLaVA model",
                              hint="for a LLaVA run's output dir also pass --visual-encoder ENC (and the LLM as MODEL)")
    return vlm_answerer(loaded, settings=settings, system=system)
