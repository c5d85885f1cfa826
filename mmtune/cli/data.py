"""`mmtune data`: check data files, generate self-cognition data, preview encoded samples."""

from __future__ import annotations

import argparse

from mmtune.data.formats import FORMAT_NAMES, FORMATS
from mmtune.errors import MmtuneError

CHECK_EPILOG = """\
examples:
  mmtune data check train.jsonl
  mmtune data check a.json b.json --format llava
  mmtune data check train.json --config my_recipe.yaml   # also flags samples longer than max_length

Exit status is 0 only when every record of every file is good.
"""

SELF_COGNITION_EPILOG = """\
examples:
  mmtune data self-cognition --name Mini --author "Ada Lab" -o data/self.jsonl
  mmtune data self-cognition --name 小助手 --author 某实验室 --lang zh --repeat 20 -o data/self.json

.jsonl is written as OpenAI messages, .json as a LLaVA/ShareGPT list.
"""

DATA_EPILOG = """\
examples:
  mmtune data check train.jsonl
  mmtune data self-cognition --name Mini --author "Ada Lab" -o data/self.jsonl
  mmtune data preview my_recipe.yaml -n 2
"""

PREVIEW_EPILOG = """\
examples:
  mmtune data preview my_recipe.yaml
  mmtune data preview my_recipe.yaml -n 5 --set data.max_length=512
  mmtune data preview my_recipe.yaml --json > samples.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check, generate and preview training data",
                                   description="Check, generate and preview training data.", epilog=DATA_EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    formats = ["auto", *FORMAT_NAMES]

    check = commands.add_parser(
        "check", help="report every bad record of data files", epilog=CHECK_EPILOG + formats_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read data files and report every bad record with file, record index, field and reason.")
    check.add_argument("files", nargs="+", metavar="FILE", help="JSON or JSONL data files")
    check.add_argument("--format", default="auto", choices=formats, help="record format (default: detect)")
    check.add_argument("--config", help="recipe whose tokenizer, template and max_length measure sample lengths")
    check.add_argument("--max-errors", type=int, default=50, metavar="N",
                       help="problems printed per file (default: 50; 0 prints all)")
    check.set_defaults(func=run_check)

    cognition = commands.add_parser(
        "self-cognition", help="generate 'who are you' Q&A for a personal assistant", epilog=SELF_COGNITION_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write identity Q&A (many phrasings of 'who are you?') naming your assistant and its author.")
    cognition.add_argument("--name", required=True, help="the assistant's name")
    cognition.add_argument("--author", required=True, help="who made it")
    cognition.add_argument("--repeat", type=int, default=1, metavar="N", help="repeat the set N times (default: 1)")
    cognition.add_argument("--lang", default="zh,en", help="comma-separated languages: zh, en (default: zh,en)")
    cognition.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    cognition.add_argument("-o", "--output", required=True, metavar="FILE", help="output .jsonl or .json file")
    cognition.set_defaults(func=run_self_cognition)

    preview = commands.add_parser(
        "preview", help="show samples as the model will see them", epilog=PREVIEW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render and tokenize the first samples of a recipe's data, showing which tokens are trained on.")
    preview.add_argument("config", metavar="CONFIG", help="recipe YAML file or built-in recipe name")
    preview.add_argument("-n", type=int, default=3, help="number of samples (default: 3)")
    preview.add_argument("--json", action="store_true", help="print machine-readable JSON")
    preview.add_argument("--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                         help="override a config value (repeatable)")
    preview.set_defaults(func=run_preview)


def formats_help() -> str:
    """The registered formats, one line each (the registry is the single list of them)."""
    return "\nformats:\n" + "".join(f"  {name:8} {FORMATS[name].description}\n" for name in FORMAT_NAMES)


def key_value(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def run_check(args: argparse.Namespace) -> int:
    from mmtune.data.check import check_file, format_report

    if args.max_errors < 0:
        raise MmtuneError(f"--max-errors must be 0 or more, got {args.max_errors}")
    length_fn = max_length = None
    if args.config:
        from mmtune.data.encode import length_fn_from_config  # needs a tokenizer: import only when asked

        length_fn, max_length = length_fn_from_config(args.config)
    all_good = True
    for path in args.files:
        report = check_file(path, args.format, length_fn=length_fn, max_length=max_length)
        print(format_report(report, max_errors=args.max_errors or None))
        all_good &= report.ok
    return 0 if all_good else 1


def run_self_cognition(args: argparse.Namespace) -> int:
    from mmtune.data.synth import make_self_cognition, write_conversations

    langs = tuple(lang.strip() for lang in args.lang.split(",") if lang.strip())
    convs = make_self_cognition(args.name, args.author, repeat=args.repeat, langs=langs, seed=args.seed)
    path = write_conversations(convs, args.output)
    print(f"wrote {len(convs)} conversations to {path}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from mmtune.data.preview import run_preview as preview

    return preview(args.config, n=args.n, as_json=args.json, overrides=args.set)
