"""Load a recipe: YAML file or built-in name, `base:` inheritance, `--set` overrides, validation.

Errors name the key and the fix: an unknown key suggests the closest valid one, a wrong type says
the expected type.
"""

from __future__ import annotations

import difflib
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import BaseModel, ValidationError

from mmtune.config.schema import Recipe
from mmtune.errors import ConfigError

RECIPE_SUFFIX = ".yaml"


# ---------------------------------------------------------------- built-in recipes
def recipes_root() -> Path:
    return Path(str(resources.files("mmtune") / "recipes"))


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe name (file stem) -> path, e.g. 'qwen2_5_0_5b_instruct_lora'."""
    return {p.stem: p for p in sorted(recipes_root().rglob(f"*{RECIPE_SUFFIX}"))}


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = builtin_recipes()
    stem = path.stem if path.suffix == RECIPE_SUFFIX else str(name_or_path)
    if stem in known:
        return known[stem]
    close = difflib.get_close_matches(stem, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"no recipe file or built-in recipe named {str(name_or_path)!r}", hint=hint + "see `mmtune list-cfg`")


# ---------------------------------------------------------------- YAML + inheritance
def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:  # one line: file:line:column and the problem, not PyYAML's 6-line report
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        context = getattr(e, "context", None)
        raise ConfigError(f"invalid YAML: {problem}" + (f" ({context})" if context else ""), where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping of sections (model:, data:, ...)", where=str(path))
    return data


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The recipe's data with `base:` recipes merged underneath (a chain of any depth)."""
    path = resolve_recipe_path(name_or_path).resolve()
    if path in _seen:
        raise ConfigError("recipe inherits from itself", where=" -> ".join(map(str, (*_seen, path))))
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"base: must be a recipe name or path, not {base!r}", where=str(path))
    base_path = path.parent / base if (path.parent / base).is_file() else base
    try:
        resolve_recipe_path(base_path)
    except ConfigError as e:  # say which file names the missing base
        raise ConfigError(f"base: {e.message}", where=str(path), hint=e.hint) from None
    return deep_merge(load_raw(base_path, (*_seen, path)), data)


# ---------------------------------------------------------------- --set overrides
def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply `key.sub=value` strings (`data.datasets.0.path=x` indexes a list); values are parsed as
    YAML (`8`, `true`, `[a, b]`, `null`) where they are more than plain text."""
    data = dict(data)
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), _parse_value(raw))
    return data


def _parse_value(raw: str) -> Any:
    """A number, bool, null, [list] or {mapping} as YAML; other text stays as typed, so that
    `data.system=You are Nova: a helper` is not a mapping and `issue #1` is not cut at a comment."""
    text = raw.strip()
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and text[:1] not in ("'", '"'):
        return text
    if isinstance(value, dict) and not text.startswith("{"):
        return text
    return value


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """data[a][b]... = value for `a.b...`, copying the containers on the way (the input is not changed);
    a number indexes a list (`data.datasets.0.path`), a missing section is created."""
    node: Any = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        slot: Any = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(parts[:i])
                raise ConfigError(f"override {key!r}: {where} is a list of {len(node)}, {part!r} is not an index in it")
            slot = int(part)
            child = node[slot]
        else:
            child = node.get(part)
        if i == len(parts) - 1:
            node[slot] = value
        else:
            node[slot] = child = list(child) if isinstance(child, list) else dict(child) if isinstance(child, dict) else {}
            node = child


# ---------------------------------------------------------------- validation with readable errors
def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema class that owns the location `loc` (list indices skipped)."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation):
    """The BaseModel inside Optional[...] / list[...] if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


# Names other trainers (HF TrainingArguments, XTuner, LLaMA-Factory, peft) use for our fields.
ALIASES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "max_epochs": "epochs",
    "per_device_train_batch_size": "micro_batch_size", "batch_size": "micro_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation", "accumulative_counts": "gradient_accumulation",
    "lr_scheduler_type": "scheduler", "optim": "optimizer", "max_norm": "max_grad_norm",
    "max_seq_length": "max_length", "cutoff_len": "max_length", "packing": "pack_to_max_length",
    "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target": "target_modules",
    "model_name_or_path": "path", "pretrained_model_name_or_path": "path", "torch_dtype": "dtype",
    "evaluation_freq": "every_n_steps",
}


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _model_at(loc[:-1])
        valid = list(owner.model_fields) if owner else []
        # match against our names and the names other trainers use for them (learning_rate -> lr)
        candidates = {name: name for name in valid} | {a: n for a, n in ALIASES.items() if n in valid}
        close = difflib.get_close_matches(str(loc[-1]), list(candidates), n=1, cutoff=0.5)
        hint = (f"did you mean {'.'.join([*map(str, loc[:-1]), candidates[close[0]]])!r}?" if close
                else f"valid keys: {', '.join(valid)}")
        return f"unknown key {dotted!r} ({hint})"
    if kind == "missing":
        return f"missing required key {dotted!r}"
    value = error.get("input")
    return f"{dotted}: {error['msg']} (got {value!r})"


def validate_recipe(data: dict, where: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise ConfigError("; ".join(lines), where=where) from None


def load_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load, inherit, override and validate a recipe."""
    path = resolve_recipe_path(name_or_path)
    data = apply_overrides(load_raw(path), overrides)
    return validate_recipe(data, where=str(path))


def dump_config(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
