"""`mmtune` — the command line. Parses, calls a plain function, prints; user errors without tracebacks."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mmtune import __version__
from mmtune.errors import MmtuneError
from mmtune.warning_filters import silence_upstream_warnings

EPILOG = """\
workflow (the personal-assistant fine-tune):
  mmtune data self-cognition --name Nova --author "Ada Lab" -o data/self.jsonl
  mmtune copy-cfg qwen2_5_0_5b_instruct_qlora my_recipe.yaml      # then edit it
  mmtune data preview my_recipe.yaml
  mmtune train my_recipe.yaml --work-dir work_dirs/nova
  mmtune convert to-hf my_recipe.yaml work_dirs/nova/final hf_adapter
  mmtune convert merge Qwen/Qwen2.5-0.5B-Instruct hf_adapter merged
  mmtune chat merged

Run `mmtune COMMAND --help` for each command's options and examples.
"""


def build_parser() -> argparse.ArgumentParser:
    from mmtune.cli import cfg, chat, convert, data, estimate, eval, serve, tiny, train

    parser = argparse.ArgumentParser(
        prog="mmtune",
        description="Fine-tune LLMs and LLaVA-style vision-language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mmtune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, estimate, data, cfg, convert, chat, eval, serve, tiny):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    silence_upstream_warnings()
    # bitsandbytes (imported by peft on every command) warns at import on AVX512-BF16 CPUs that it
    # could not fetch an optional 4-bit kernel from the Hub; its built-in CPU path runs instead.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MmtuneError as e:
        print(f"mmtune: error: {e.format()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\nmmtune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
