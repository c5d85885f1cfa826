"""`mmtune make-tiny`: build a tiny real-architecture model for demos and tests."""

from __future__ import annotations

from mmtune.cli.common import add_parser

EPILOG = """\
examples:
  mmtune make-tiny qwen2 demo_out/models/tiny-qwen2
  mmtune make-tiny llama /tmp/tiny-llama
  mmtune make-tiny internlm2 /tmp/tiny-internlm2     # InternLM2's own layout, config and sentencepiece tokenizer
  mmtune make-tiny qwen2_tools /tmp/tiny-qwen2-tools # pre-trained to copy values into JSON (agent demo; minutes once)
  mmtune make-tiny clip demo_out/models/tiny-clip      # vision encoder + image processor (64 px, 16 px patches)
  mmtune make-tiny qwen2_5_vl /tmp/tiny-qwen2.5-vl     # a vision-language model + its processor and chat template
VLM kinds: minicpmv4_6, qwen2_5_vl, qwen3_vl, internvl, gemma3, smolvlm, llava_onevision (transformers' own
classes; the processor loads with AutoProcessor, or without torchvision through mmtune).
The model has random weights (a language model comes with a tokenizer trained locally), except qwen2_tools:
the agent demo's base, pre-trained for a few CPU minutes (cached after the first build) on a generic corpus
to copy names and numbers from a sentence into JSON, as pretrained models can. It loads with
from_pretrained(DIR), like a hub checkpoint.
"""


def register(sub) -> None:
    p = add_parser(sub, "make-tiny", "build a tiny random-weight model (demos, tests)", EPILOG)
    from mmtune.testing.catalog import KINDS

    p.add_argument("family", choices=KINDS,
                   help="architecture: a causal LM (qwen2, qwen2_tools, llama, internlm2), a vision encoder (clip, siglip) or a "
                        "vision-language model (minicpmv4_6, qwen2_5_vl, qwen3_vl, internvl, gemma3, smolvlm, "
                        "llava_onevision)")
    p.add_argument("out", metavar="DIR", help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmtune.testing.catalog import copy_tiny

    print(f"tiny {args.family} model written to {copy_tiny(args.family, args.out)}")
    return 0
