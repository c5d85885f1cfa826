"""Answerers: the model side of a benchmark, as one function `answer_fn(items) -> replies`.

The evaluator (mmbench.py) only ever calls an `AnswerFn` with a batch of `EvalItem`s and reads
back one reply string per item, so any model plugs in:

    answer_fn = make_answerer("Qwen/Qwen2.5-0.5B-Instruct", adapter="hf_adapter")       # text LM
    answer_fn = make_answerer(llm, llava="llava_dir", visual_encoder="openai/clip-...")  # VLM (vlm.py)
    answer_fn = make_answerer("exported_llava_dir")                                      # VLM too
    answer_fn = lambda items: ["A" for _ in items]                                         # a baseline

`text_answerer` asks a text-only model the item's `prompt` and ignores its images (text-only
ablations, and tests). The VLM answerer lives in vlm.py and receives the same items; it reads
`item.images` (decoded PIL images) and `item.prompt` (which has no image placeholder: the VLM
side puts its own, `item_messages(..., image_placeholder="<image>")`).
"""

from __future__ import annotations

from typing import Callable, Sequence

from mmtune.data.conversation import Message
from mmtune.eval.tsv import EvalItem
from mmtune.infer.engine import GenerationSettings

AnswerFn = Callable[[Sequence[EvalItem]], list[str]]
DEFAULT_MAX_NEW_TOKENS = 32  # a letter, or a short sentence naming the option


def eval_settings(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> GenerationSettings:
    """Greedy decoding, as benchmarks are scored."""
    return GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)


def item_messages(item: EvalItem, system: str | None = None, image_placeholder: str | None = None) -> list[Message]:
    """The conversation that asks `item`: optional system message, then the prompt as the user turn
    (with `image_placeholder` once per image in front, for a VLM; none for a text model)."""
    text = item.prompt
    if image_placeholder:
        text = "".join(f"{image_placeholder}\n" for _ in item.image_data) + text
    messages = [Message("system", system)] if system else []
    return [*messages, Message("user", text)]


def text_answerer(model, tokenizer, template, *, settings: GenerationSettings | None = None,
                  system: str | None = None) -> AnswerFn:
    """Answer with a text-only language model; the items' images are ignored."""
    from mmtune.eval.generate import generate_replies

    settings = settings or eval_settings()

    def answer(items: Sequence[EvalItem]) -> list[str]:
        return generate_replies(model, tokenizer, template, [item_messages(it, system) for it in items], settings)

    return answer


def make_answerer(model_path: str, *, adapter: str | None = None, llava: str | None = None,
                  visual_encoder: str | None = None, template: str | None = None, device: str = "auto",
                  dtype: str = "auto", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, system: str | None = None,
                  trust_remote_code: bool = False) -> AnswerFn:
    """The answerer for a model given as on the command line.

    With `llava` or `visual_encoder` the VLM answerer of vlm.py is built; otherwise `model_path`
    (+ `adapter`) is loaded, and answers with its images when it is an exported LLaVA model, as a
    text model (images ignored) when not.
    """
    settings = eval_settings(max_new_tokens)
    if llava or visual_encoder:
        from mmtune.eval.vlm import make_vlm_answerer

        return make_vlm_answerer(model_path, llava=llava, visual_encoder=visual_encoder, adapter=adapter,
                                 template=template, device=device, dtype=dtype, settings=settings, system=system,
                                 trust_remote_code=trust_remote_code)
    from mmtune.infer.load import load_for_inference

    loaded = load_for_inference(model_path, adapter=adapter, template=template, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code)
    if getattr(loaded, "vision", None) is not None:
        from mmtune.eval.vlm import vlm_answerer

        return vlm_answerer(loaded, settings=settings, system=system)
    return text_answerer(loaded.model, loaded.tokenizer, loaded.template, settings=settings, system=system)
