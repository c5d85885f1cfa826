"""Images through a vision-language model's own processor: training samples, step-time pixels, prompts.

Encoding (once, cached): the conversation is rendered with the model's own chat template
(`ProcessorTemplate`: each `<image>` placeholder an image part), which gives the text and the
character spans of the answers. The processor then does what it does for the model: preprocesses
the images and expands each image placeholder in the text to the tokens the model expects (counts
always match), and tokenizes. It also reports where it replaced what
(`return_text_replacement_offsets`) and each token's characters (`return_offsets_mapping`), so the
answer spans move with the expansions and a token is trained exactly when it starts inside an answer
span: the ids are `processor.apply_chat_template`'s, the labels are the answers and their
end-of-turn tokens, image tokens are never trained. A cut never goes through image tokens.

Loading (every step): the sample's images go through the processor's image processor again (built
with the recipe's settings, `data.processor`), which gives the same tensors the processor gave.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmtune.constants import IGNORE_INDEX
from mmtune.data.encode import EncodedSample
from mmtune.data.images import open_image, resolve_image_path
from mmtune.errors import DataError

Span = tuple[int, int]


@dataclass
class ProcessorImages:
    """How a native VLM family's samples get their image tokens and tensors (see the module doc)."""

    processor: object  # with the recipe's image-processor settings built in (models.processors.with_knobs)
    knobs: dict = field(default_factory=dict)  # settings the processor takes per call (the rest of data.processor)
    image_folder: str | None = None

    def __repr__(self) -> str:
        """What changes the encoded samples (the dataset cache key)."""
        ip = self.processor.image_processor
        digest = hashlib.sha1((ip.to_json_string() + str(self.processor.chat_template)).encode()).hexdigest()[:12]
        # the image folder too: samples keep their images' resolved paths
        folder = str(Path(self.image_folder).resolve()) if self.image_folder else None
        return (f"ProcessorImages({type(self.processor).__name__}, {json.dumps(self.knobs, sort_keys=True)}, {digest}, "
                f"{folder!r})")

    @property
    def image_token(self) -> str:
        """The placeholder the processor expands (Gemma 3: `<start_of_image>`)."""
        return self.processor.image_token

    @property
    def image_token_id(self) -> int:
        """The id of the tokens image features take the place of (Gemma 3: its soft tokens)."""
        tokenizer = self.processor.tokenizer
        return tokenizer.convert_tokens_to_ids(getattr(tokenizer, "image_token", None) or self.image_token)

    def encode_samples(self, encoder, convs, images: list[list[str]], sources: list[str]) -> list:
        """For each conversation: (sample, tokens to keep whole, image paths, no grids), or its DataError."""
        results = []
        for conv, paths, source in zip(convs, images, sources):
            try:
                text, spans = encoder.render(conv)
                sample, keep, resolved = self.encode(text, spans, paths, source)
                results.append((sample, keep, resolved, []))
            except DataError as e:
                results.append(e)
        return results

    # ---- encoding ----------------------------------------------------------------------------------

    def encode(self, text: str, spans: list[Span], images: list, source: str, *, resolve: bool = True):
        """(sample, tokens that must stay whole, resolved image paths) of a rendered conversation whose
        `spans` are trained; `images` are paths (under the image folder) or, with resolve=False, PIL images."""
        n_placeholders = text.count(self.image_token)
        if n_placeholders != len(images):
            raise DataError(f"{n_placeholders} image placeholder(s) in the rendered text but {len(images)} image(s)",
                            where=f"{source}:images")
        paths, pictures = self._open(images, source) if resolve else ([], list(images))
        try:
            out = self.processor(text=[text], images=[pictures] if pictures else None, add_special_tokens=False,
                                 return_offsets_mapping=True, return_text_replacement_offsets=True, **self.knobs)
        except (ValueError, TypeError, RuntimeError) as e:  # e.g. an image smaller than the patch grid
            raise DataError(f"the processor rejects the record's images: {e}".splitlines()[0],
                            where=f"{source}:images") from None
        ids = list(out["input_ids"][0])
        starts = np.fromiter((s for s, _ in out["offset_mapping"][0]), np.int64, len(ids))
        replaced = (out.get("text_replacement_offsets") or [[]])[0] if pictures else []
        if pictures and len(replaced) != len(pictures):
            raise DataError(f"the processor reported {len(replaced)} image replacement(s) for {len(pictures)} image(s); "
                            "cannot place the loss mask", where=f"{source}:images")
        moved = move_spans(spans, replaced, source)
        labels = trained_labels(ids, starts, moved)
        protect = 0
        for r in replaced:  # the last token of the last expansion: a cut must come after it
            protect = max(protect, int(np.searchsorted(starts, r["new_span"][1], side="left")))
        return EncodedSample(ids, labels), protect, paths

    def _open(self, images: list, source: str) -> tuple[list[str], list]:
        if images and self.image_folder is None:
            raise DataError("the record has images but the recipe sets no data.image_folder", where=f"{source}:images")
        paths, pictures = [], []
        for k, image in enumerate(images):
            where = f"{source}:images[{k}]"
            path = str(resolve_image_path(image, self.image_folder, where))
            paths.append(path)
            pictures.append(open_image(path, where))
        return paths, pictures

    # ---- every step, and prompts -------------------------------------------------------------------

    def __call__(self, paths: list[str], grids, source: str) -> dict:
        """The image tensors of a training sample's image files (DataError when one cannot be read)."""
        return self.process([open_image(p, f"{source}:images[{k}]") for k, p in enumerate(paths)])

    def process(self, pictures: list) -> dict:
        out = self.processor.image_processor(images=[pictures], return_tensors="pt")
        return {k: v for k, v in out.items() if hasattr(v, "shape")}

    def prompt_inputs(self, text: str, pictures: list) -> dict:  # noqa: D401
        """The model's inputs for a rendered prompt and its PIL images (inference)."""
        out = self.processor(text=[text], images=[pictures] if pictures else None, add_special_tokens=False,
                             return_tensors="pt", **self.knobs)
        return {k: v for k, v in out.items() if hasattr(v, "shape")}


def move_spans(spans: list[Span], replaced: list[dict], source: str) -> list[Span]:
    """Character spans of the rendered text, moved to where they are in the expanded text."""
    ends = [r["span"][1] for r in replaced]
    gained = [0]
    for r in replaced:
        gained.append(gained[-1] + (r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0]))
    moved = []
    for start, end in spans:
        for r in replaced:
            if start < r["span"][1] and r["span"][0] < end:
                raise DataError("an image placeholder inside an answer the model is trained on",
                                where=f"{source}:images", hint="put images in user turns")
        shift = gained[bisect.bisect_right(ends, start)]  # the placeholders before it (none inside, checked above)
        moved.append((start + shift, end + shift))
    return moved


def trained_labels(ids: list[int], starts: np.ndarray, spans: list[Span]) -> list[int]:
    """A token is trained when it starts inside a span (as mmtune.data.encode rules for text)."""
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
    for start, end in spans:
        inside = (starts >= start) & (starts < end)
        labels[inside] = np.asarray(ids)[inside]
    return labels.tolist()
