"""The answerer for a model named on the command line (`mmtune eval mmbench MODEL ...`).

Loading mirrors `mmtune chat`:
  * MODEL (+ `--adapter`): a text model answers the prompts (images ignored), or, when MODEL is an
    exported LLaVA model, a VLM answers with the images;
  * `--llava DIR --visual-encoder ENC` with MODEL the LLM: LLM + vision encoder + what the LLaVA run
    saved in DIR (projector, adapter), as XTuner's `--llava` / `--visual-encoder`;
  * `--llava DIR` alone: DIR is an exported LLaVA model (transformers' own classes).
"""

from __future__ import annotations

from mmtune.errors import MmtuneError
from mmtune.eval.answer import DEFAULT_MAX_NEW_TOKENS, AnswerFn, eval_settings, text_answerer, vlm_answerer
from mmtune.infer.load import load_for_inference, load_llava_parts


def make_answerer(model_path: str, *, adapter: str | None = None, llava: str | None = None,
                  visual_encoder: str | None = None, template: str | None = None, device: str = "auto",
                  dtype: str = "auto", max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, system: str | None = None,
                  trust_remote_code: bool = False) -> AnswerFn:
    """The answerer for a model given as on the command line.

    With `llava` or `visual_encoder` a VLM answerer is built (`make_vlm_answerer`); otherwise `model_path`
    (+ `adapter`) is loaded, and answers with its images when it is an exported LLaVA model, as a
    text model (images ignored) when not.
    """
    settings = eval_settings(max_new_tokens)
    if llava or visual_encoder:
        return make_vlm_answerer(model_path, llava=llava, visual_encoder=visual_encoder, adapter=adapter,
                                 template=template, device=device, dtype=dtype, settings=settings, system=system,
                                 trust_remote_code=trust_remote_code)
    loaded = load_for_inference(model_path, adapter=adapter, template=template, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code)
    if getattr(loaded, "vision", None) is not None:
        return vlm_answerer(loaded, settings=settings, system=system)
    return text_answerer(loaded.model, loaded.tokenizer, loaded.template, settings=settings, system=system)


def make_vlm_answerer(model_path: str, *, llava: str | None, visual_encoder: str | None, adapter: str | None = None,
                      template: str | None = None, device: str = "auto", dtype: str = "auto", settings=None,
                      system: str | None = None, trust_remote_code: bool = False) -> AnswerFn:
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


def make_loglik_answerer(model_path: str, *, adapter: str | None = None, device: str = "auto", dtype: str = "auto",
                         trust_remote_code: bool = False) -> AnswerFn:
    """`mmtune eval mcq --mode loglik`: the model (+ adapter) scoring each option letter."""
    from mmtune.eval.loglik import loglik_answerer

    loaded = load_for_inference(model_path, adapter=adapter, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code)
    return loglik_answerer(loaded.model, loaded.tokenizer)
