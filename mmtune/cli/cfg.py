"""`mmtune list-cfg` and `mmtune copy-cfg`: find and copy built-in recipes."""

from __future__ import annotations

import shutil
from pathlib import Path

from mmtune.cli.common import add_parser
from mmtune.errors import MmtuneError

LIST_EPILOG = """\
examples:
  mmtune list-cfg
  mmtune list-cfg -p qwen
  mmtune list-cfg -p qlora
"""
COPY_EPILOG = """\
examples:
  mmtune copy-cfg qwen2_5_0_5b_instruct_qlora .            # -> ./qwen2_5_0_5b_instruct_qlora.yaml
  mmtune copy-cfg internlm2_chat_1_8b_qlora my_recipe.yaml
The copy is self-contained (any `base:` recipe is merged in), ready to edit.
"""


FLAT_HEADER = """\
# Copied from the built-in recipe {name} (its `base:` recipes merged in).
# Usually edited: model.path, data.datasets (your files; see `mmtune data check`), data.template,
# train.epochs / max_steps, train.micro_batch_size x gradient_accumulation, eval.evaluation_inputs.
# Schema and every key: README "Recipes"; override without editing: mmtune train FILE --set key=value
"""


def register(sub) -> None:
    p = add_parser(sub, "list-cfg", "list built-in recipes", LIST_EPILOG)
    p.add_argument("-p", "--pattern", default="", help="only names containing this text (case-insensitive)")
    p.set_defaults(func=run_list)
    p = add_parser(sub, "copy-cfg", "copy a built-in recipe to edit it", COPY_EPILOG)
    p.add_argument("name", metavar="NAME", help="recipe name from list-cfg")
    p.add_argument("dest", metavar="DEST", help="destination file or directory")
    p.set_defaults(func=run_copy)


def list_recipes(pattern: str = "") -> list[tuple[str, str]]:
    import yaml

    from mmtune.config.load import builtin_recipes

    out = []
    for name, path in builtin_recipes().items():
        if not name.startswith("_") and pattern.lower() in name.lower():  # _name: a shared base
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            out.append((name, data.get("description", "")))
    return out


def run_list(args) -> int:
    rows = list_recipes(args.pattern)
    if not rows:
        print(f"no built-in recipe matches {args.pattern!r}")
        return 1
    width = max(len(n) for n, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def copy_recipe(name: str, dest: str | Path) -> Path:
    import yaml

    from mmtune.config.load import builtin_recipes, load_raw

    known = builtin_recipes()
    if name.removesuffix(".yaml") not in known:
        from mmtune.config.load import resolve_recipe_path

        resolve_recipe_path(name)  # raises with a suggestion
        raise MmtuneError(f"{name!r} is not a built-in recipe")
    src = known[name.removesuffix(".yaml")]
    dest = Path(dest)
    if dest.is_dir() or (not dest.exists() and dest.suffix not in (".yaml", ".yml")):
        dest = dest / src.name  # a directory, created when missing
    if dest.exists():
        raise MmtuneError(f"{dest} already exists", hint="choose another destination or delete it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = src.read_text(encoding="utf-8")
    if "base:" in text:  # flatten inheritance so the copy stands alone
        merged = load_raw(src)
        body = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, width=100)
        dest.write_text(FLAT_HEADER.format(name=src.stem) + body, encoding="utf-8")
    else:
        shutil.copyfile(src, dest)
    return dest


def run_copy(args) -> int:
    print(f"copied to {copy_recipe(args.name, args.dest)}")
    return 0
