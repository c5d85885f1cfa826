"""`mmtune data`: check data files, generate self-cognition and shapes data, preview encoded samples."""

from __future__ import annotations

import argparse

from mmtune.cli.common import add_set_option
from mmtune.data.formats import FORMAT_NAMES, FORMATS
from mmtune.errors import MmtuneError

CHECK_EPILOG = """\
examples:
  mmtune data check train.jsonl
  mmtune data check a.json b.json --format llava
  mmtune data check train.json --config my_recipe.yaml   # also flags samples longer than max_length
  mmtune data check data/shapes/finetune.json --image-folder data/shapes   # also opens every image

With --image-folder, every image must lie inside the folder (no ../, no absolute path or symlink
leading elsewhere) and decode. An <image> placeholder in an assistant answer is always reported.
Exit status is 0 only when every record of every file is good.
"""

SELF_COGNITION_EPILOG = """\
examples:
  mmtune data self-cognition --name Mini --author "Ada Lab" -o data/self.jsonl
  mmtune data self-cognition --name 小助手 --author 某实验室 --lang zh --repeat 20 -o data/self.json

.jsonl is written as OpenAI messages, .json as a LLaVA/ShareGPT list.
"""

SHAPES_EPILOG = """\
examples:
  mmtune data shapes -o data/shapes
  mmtune data shapes -o data/shapes --n 1000 --seed 1 --size 96
  mmtune data shapes -o data/shapes --n 1000 --questions colour,count   # only these kinds of questions
  mmtune data shapes -o data/mixed --n 1000 --questions colour,shape --choices --lang en,zh   # the mixed task
  mmtune data check data/shapes/finetune.json --image-folder data/shapes

writes into DIR (image paths are relative to DIR, so use DIR as the image folder):
  images/*.png            train_*.png for training, heldout_*.png never used in training
  pretrain.json           LLaVA captions ("A red circle on the left.") for projector pretraining
  finetune.json           LLaVA Q&A: shape, colour, count, position, yes/no; single- and multi-turn,
                          plus some text-only records
  finetune_minicpm.json   MiniCPM-V format, incl. two-image comparisons (<image_00>, <image_01>)
  heldout.json            one question per held-out image (LLaVA format, with a "category" key)
  mmbench_dev.tsv         MMBench-style multiple choice on held-out images, with answers
  mmbench_test.tsv        the same on other held-out images, without the answer column

The same --n, --seed and --size always give the same files.
"""

DATA_EPILOG = """\
examples:
  mmtune data check train.jsonl
  mmtune data self-cognition --name Mini --author "Ada Lab" -o data/self.jsonl
  mmtune data shapes -o data/shapes
  mmtune data tools -o data/tools
  mmtune data preview my_recipe.yaml -n 2
"""

TOOLS_EPILOG = """\
examples:
  mmtune data tools -o data/tools
  mmtune data tools -o data/tools --n 800 --seed 1
  mmtune data check data/tools/train.jsonl
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
    add_set_option(check)
    check.add_argument("--image-folder", metavar="DIR",
                       help="folder the records' image paths are relative to: open and check every image")
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

    shapes = commands.add_parser(
        "shapes", help="generate a synthetic image dataset of coloured shapes", epilog=SHAPES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw small images of coloured shapes and write captioning, Q&A, held-out and MMBench-style "
                    "files for trying LLaVA-style training on a CPU.")
    shapes.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    shapes.add_argument("--n", type=int, default=200, metavar="N",
                        help="images in all, a fifth of them held out (default: 200)")
    shapes.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    shapes.add_argument("--size", type=int, default=64, metavar="PX", help="image side in pixels (default: 64)")
    shapes.add_argument("--questions", metavar="KINDS",
                        help="only these question kinds, comma-separated (shape,colour,count,position,existence): "
                             "single-turn fine-tune questions, a curriculum a tiny model learns fast")
    shapes.add_argument("--choices", action="store_true",
                        help="with --questions: also one MMBench-style multiple-choice question (2-4 options) per "
                             "training image, and 2-4 options in the MMBench files")
    shapes.add_argument("--lang", default="en", metavar="LANGS",
                        help="languages of the shape and colour questions, comma-separated: en, zh (default: en)")
    shapes.set_defaults(func=run_shapes)

    tools = commands.add_parser(
        "tools", help="generate a small tool-use dataset (weather, calculator, unit conversion)",
        epilog=TOOLS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write train.jsonl and heldout.jsonl (OpenAI messages with tools; held-out cities, numbers and "
                    "phrasings are new) and tools.json, for trying agent fine-tuning on a CPU.")
    tools.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    tools.add_argument("--n", type=int, default=400, metavar="N", help="training conversations (default: 400)")
    tools.add_argument("--heldout", type=int, default=None, metavar="N", help="held-out conversations (default: n/5)")
    tools.add_argument("--rounds", type=int, default=3, metavar="R",
                       help="questions per training conversation, 1 to R (default: 3)")
    tools.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    tools.set_defaults(func=run_tools)

    preview = commands.add_parser(
        "preview", help="show samples as the model will see them", epilog=PREVIEW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Render and tokenize the first samples of a recipe's data, showing which tokens are trained on.")
    preview.add_argument("config", metavar="CONFIG", help="recipe YAML file or built-in recipe name")
    preview.add_argument("-n", type=int, default=3, help="number of samples (default: 3)")
    preview.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_set_option(preview)
    preview.set_defaults(func=run_preview)


def formats_help() -> str:
    """The registered formats, one line each (the registry is the single list of them)."""
    return "\nformats:\n" + "".join(f"  {name:8} {FORMATS[name].description}\n" for name in FORMAT_NAMES)


def run_check(args: argparse.Namespace) -> int:
    from mmtune.data.check import check_file, format_report

    if args.max_errors < 0:
        raise MmtuneError(f"--max-errors must be 0 or more, got {args.max_errors}")
    length_fn = max_length = replace = None
    if args.config:
        from mmtune.builders.data import sample_length_fn  # needs a tokenizer: import only when asked
        from mmtune.config.load import load_config

        length_fn, max_length = sample_length_fn(args.config, args.set, args.image_folder)
        replace = load_config(args.config, args.set).data.replace
    all_good = True
    for path in args.files:
        report = check_file(path, args.format, length_fn=length_fn, max_length=max_length,
                            image_folder=args.image_folder, replace=replace)
        print(format_report(report, max_errors=args.max_errors or None))
        if report.n_images and not report.images_checked:
            print(f"  note: {report.n_images} images were not opened; pass --image-folder DIR to check them")
        all_good &= report.ok
    return 0 if all_good else 1


def run_shapes(args: argparse.Namespace) -> int:
    from mmtune.data.synth.shapes import make_shapes_dataset

    questions = [k.strip() for k in args.questions.split(",")] if args.questions else None
    langs = tuple(lang.strip() for lang in args.lang.split(",") if lang.strip())
    result = make_shapes_dataset(args.output, n=args.n, seed=args.seed, size=args.size, questions=questions,
                                 choices=args.choices, langs=langs)
    print(f"drew {result.n_train_images} training and {result.n_heldout_images} held-out images "
          f"({args.size}x{args.size}) in {result.out_dir / 'images'}")
    for name, path in result.files.items():
        unit = "rows" if path.suffix == ".tsv" else "records"
        print(f"wrote {result.records[name]} {unit} to {path}")
    return 0


def run_self_cognition(args: argparse.Namespace) -> int:
    from mmtune.data.synth import make_self_cognition, write_conversations

    langs = tuple(lang.strip() for lang in args.lang.split(",") if lang.strip())
    convs = make_self_cognition(args.name, args.author, repeat=args.repeat, langs=langs, seed=args.seed)
    path = write_conversations(convs, args.output)
    print(f"wrote {len(convs)} conversations to {path}")
    return 0


def run_tools(args: argparse.Namespace) -> int:
    from mmtune.data.synth.tools import make_tool_dataset
    from mmtune.errors import MmtuneError

    if args.n < 1:
        raise MmtuneError(f"--n must be at least 1, got {args.n}")
    if args.rounds < 1:
        raise MmtuneError(f"--rounds must be at least 1, got {args.rounds}")
    data = make_tool_dataset(args.output, n=args.n, seed=args.seed, heldout=args.heldout, max_rounds=args.rounds)
    for name, path in data.files.items():
        count = f"{data.records[name]} conversations" if name in data.records else "tool definitions"
        print(f"{name:8} {path}  ({count})")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from mmtune.cli.preview import run_preview as preview

    return preview(args.config, n=args.n, as_json=args.json, overrides=args.set)
