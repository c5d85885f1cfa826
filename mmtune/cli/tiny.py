"""`mmtune make-tiny`: build a tiny real-architecture model for demos and tests."""

from __future__ import annotations

from mmtune.cli.common import add_parser

EPILOG = """\
examples:
  mmtune make-tiny qwen2 demo_out/models/tiny-qwen2
  mmtune make-tiny llama /tmp/tiny-llama
  mmtune make-tiny internlm2 /tmp/tiny-internlm2     # InternLM2's own layout, config and sentencepiece tokenizer
  mmtune make-tiny clip demo_out/models/tiny-clip      # vision encoder + image processor (64 px, 16 px patches)
The model has random weights (a language model comes with a tokenizer trained locally); it loads with
from_pretrained(DIR), like a hub checkpoint.
"""


def register(sub) -> None:
    p = add_parser(sub, "make-tiny", "build a tiny random-weight model (demos, tests)", EPILOG)
    from mmtune.testing.catalog import KINDS

    p.add_argument("family", choices=KINDS,
                   help="architecture: a causal LM (qwen2, llama, internlm2) or a vision encoder (clip, siglip)")
    p.add_argument("out", metavar="DIR", help="output directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from mmtune.testing.catalog import copy_tiny

    print(f"tiny {args.family} model written to {copy_tiny(args.family, args.out)}")
    return 0
