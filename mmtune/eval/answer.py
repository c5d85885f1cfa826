"""Answerers: the model side of a benchmark, as one function `answer_fn(items) -> replies`.

The evaluator (mmbench.py) only ever calls an `AnswerFn` with a batch of `EvalItem`s and reads
back one reply string per item, so any model plugs in:

    answer_fn = make_answerer("Qwen/Qwen2.5-0.5B-Instruct", adapter="hf_adapter")       # text LM
    answer_fn = make_answerer(llm, llava="llava_dir", visual_encoder="openai/clip-...")  # VLM
    answer_fn = make_answerer("exported_llava_dir")                                      # VLM too
    answer_fn = lambda items: ["A" for _ in items]                                         # a baseline

`text_answerer` asks a text-only model the item's `prompt` and ignores its images (text-only
ablations, and tests). `vlm_answerer` receives the same items; it reads `item.images` (decoded PIL
images) and `item.prompt` (which has no image placeholder: it puts its own, one per image, in front,
as LLaVA's MMBench script asks, `item_messages(..., image_placeholder="<image>")`) and answers a
batch together through the engine's one generate path, so a model sees the images as in training.
Building an answerer from paths on the command line is eval/load.py's job (`make_answerer`).
"""

from __future__ import annotations

from typing import Callable, Sequence

from mmtune.data.conversation import IMAGE_PLACEHOLDER, Message
from mmtune.errors import MmtuneError
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
    from mmtune.infer.engine import generate_replies

    settings = settings or eval_settings()

    def answer(items: Sequence[EvalItem]) -> list[str]:
        return generate_replies(model, tokenizer, template, [item_messages(it, system) for it in items], settings)

    return answer


def vlm_answerer(loaded, *, settings=None, system: str | None = None) -> AnswerFn:
    """Answer with a loaded vision-language model (`loaded.vision` set), images included; a batch of
    items is generated together (left padding, the images combined as the family does in training)."""
    from mmtune.infer.engine import generate_replies

    if getattr(loaded, "vision", None) is None:
        raise MmtuneError(f"{loaded.name} is not a vision-language model")
    settings = settings or eval_settings()

    def answer(items: Sequence[EvalItem]) -> list[str]:
        conversations = [item_messages(it, system, image_placeholder=IMAGE_PLACEHOLDER) for it in items]
        return generate_replies(loaded.model, loaded.tokenizer, loaded.template, conversations, settings,
                                images=[it.images for it in items], vision=loaded.vision)

    return answer
