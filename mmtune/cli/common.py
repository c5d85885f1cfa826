"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse


def add_parser(sub, name: str, help: str, epilog: str, description: str | None = None, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def key_value(text: str) -> str:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return text


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="append", default=[], type=key_value, metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.lr=1e-4 --set data.max_length=1024 (repeatable)",
    )
