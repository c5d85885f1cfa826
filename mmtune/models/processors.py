"""Load a vision-language checkpoint's processor, also on machines without torchvision.

transformers' processors for most VLM families carry a video processor, and video processors need
torchvision; without it `AutoProcessor.from_pretrained` fails although images need nothing of it
(the image processors have a PIL backend). mmtune trains on images only, so when that happens the
processor is assembled from its image processor, tokenizer and chat template, with a stand-in for
the video processor that says "video is not supported" if it is ever called (mmtune refuses video
records before that).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.models.load import check_source, load_pretrained

log = logging.getLogger(__name__)


class NoVideo:
    """The video processor's place in a processor built without torchvision."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)  # what the processor reads off its video processor (MiniCPM-V: slice_mode)

    def __call__(self, *args, **kwargs):
        raise MmtuneError("video is not supported by mmtune yet (images only)")

    def save_pretrained(self, *args, **kwargs):
        return []

    def to_dict(self) -> dict:
        return {}


def without_video(cls: type) -> type:
    """`cls` (a transformers processor class) accepting a NoVideo for its video processor."""

    class Processor(cls):
        def check_argument_for_proper_class(self, argument_name, argument):
            if isinstance(argument, NoVideo):
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    Processor.__name__ = Processor.__qualname__ = cls.__name__  # saved configs name the real class
    return Processor


def load_processor(source: str, *, trust_remote_code: bool = False, video_stub: dict | None = None):
    """The processor of a VLM checkpoint (see the module doc)."""
    from transformers import AutoProcessor

    source = str(source)
    check_source(source)
    try:
        return AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (ImportError, ValueError) as e:  # "requires torchvision", or no video processor it can place
        if "torchvision" not in str(e).lower() and "video" not in str(e).lower():
            return load_pretrained(AutoProcessor, source, "the processor", trust_remote_code=trust_remote_code)
    log.info("no torchvision: the processor of %s is built from its image processor and tokenizer (images only)",
             source)
    return _assemble(source, trust_remote_code, video_stub or {})


def with_knobs(processor, knobs: dict):
    """(processor, the knobs left for each call): `processor` rebuilt with the recipe's processor
    settings (`data.processor`) that its image processor takes, so that the saved processor and an
    export preprocess as training did (in plain transformers and serving engines too); a processor
    reads some of them when it is built (MiniCPM-V: `downsample_mode`, `use_image_id`)."""
    if not knobs:
        return processor, {}
    ip = processor.image_processor
    accepted = set(getattr(getattr(ip, "valid_kwargs", None), "__annotations__", {})) | set(ip.to_dict())
    baked = {k: v for k, v in knobs.items() if k in accepted}
    if not baked:
        return processor, dict(knobs)
    image_processor = type(ip).from_dict(ip.to_dict(), **baked)
    attributes = set(processor.get_attributes())
    kwargs = {k: v for k, v in processor.to_dict().items()
              if k not in attributes and k not in ("processor_class", "chat_template") and not isinstance(v, dict)}
    subs = {name: getattr(processor, name) for name in attributes}
    subs["image_processor"] = image_processor
    rebuilt = type(processor)(**subs, chat_template=processor.chat_template, **kwargs)
    return rebuilt, {k: v for k, v in knobs.items() if k not in baked}


def save_processor(processor, out) -> None:
    """Save a processor so that `AutoProcessor.from_pretrained(out)` loads it. One assembled without
    torchvision is saved as hub checkpoints that ship no video processor config are: processor settings
    in processor_config.json, the image processor in preprocessor_config.json (which transformers'
    video processors fall back to)."""
    if not isinstance(getattr(processor, "video_processor", None), NoVideo):
        processor.save_pretrained(str(out))
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(str(out))
    processor.image_processor.save_pretrained(str(out))  # preprocessor_config.json, as hub checkpoints have it
    config = {k: v for k, v in processor.to_dict().items() if k not in ("video_processor", "image_processor")}
    (out / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if isinstance(processor.chat_template, str):
        (out / "chat_template.jinja").write_text(processor.chat_template, encoding="utf-8")


def _assemble(source: str, trust_remote_code: bool, video_stub: dict):
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    config = _processor_config(source)
    name = config.pop("processor_class", None)
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise MmtuneError(f"cannot load the processor from {source!r}: its processor_config.json names no processor "
                          f"class transformers has ({name!r})")
    image_processor = load_pretrained(AutoImageProcessor, source, "the image processor",
                                      trust_remote_code=trust_remote_code)
    tokenizer = load_pretrained(AutoTokenizer, source, "the tokenizer", trust_remote_code=trust_remote_code)
    template = _chat_template(source) or getattr(tokenizer, "chat_template", None)
    stub = {k: getattr(image_processor, k, v) for k, v in video_stub.items()}
    kwargs = {k: v for k, v in config.items() if not isinstance(v, dict)}
    return without_video(cls)(image_processor=image_processor, tokenizer=tokenizer, video_processor=NoVideo(**stub),
                              chat_template=template, **kwargs)


def _processor_config(source: str) -> dict:
    path = Path(source) / "processor_config.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from transformers.utils import cached_file

    try:
        found = cached_file(source, "processor_config.json")
    except OSError:
        found = None
    return json.loads(Path(found).read_text(encoding="utf-8")) if found else {}


def _chat_template(source: str) -> str | None:
    for name in ("chat_template.jinja", "chat_template.json"):
        path = Path(source) / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None
