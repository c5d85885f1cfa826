"""What export is given and what it writes, checked: the recipe is the run's own, the output
directory holds nothing an export could mix with, and every weights file written is whole.

    recipe = run_recipe(checkpoint)            # WORK_DIR/config.yaml, the resolved recipe of the run
    check_same_run(recipe, checkpoint)         # a recipe for another base model or method is refused
    prepare_out_dir(out, checkpoint, overwrite=False)
    verify_weights(out)                        # after writing: a truncated file is an error, not "exported"
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mmtune.errors import MmtuneError
from mmtune.rundir import missing_shards, read_meta, safetensors_problem

log = logging.getLogger("mmtune.export")


def run_config(checkpoint: Path) -> Path:
    """The resolved recipe of the run a checkpoint-N or final/ directory belongs to (it may not exist)."""
    return checkpoint.parent / "config.yaml"


def run_recipe(checkpoint: Path):
    """The recipe a checkpoint-N or final/ directory was trained with: its work dir's config.yaml."""
    from mmtune.config.load import load_config

    config = run_config(checkpoint)
    if not config.is_file():
        raise MmtuneError(f"{str(checkpoint)!r} has no config.yaml in its work dir to say how it was trained",
                          hint="give the recipe first: mmtune convert to-hf RECIPE CHECKPOINT OUT")
    return load_config(str(config))


def same_model(a: str, b: str) -> bool:
    """Two model references name the same model: the same hub id, or paths to the same directory."""
    return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def check_same_run(recipe, checkpoint: Path) -> None:
    """Refuse a recipe whose base model or method is not the checkpoint's (the export would pair the
    weights with the wrong base); name other sections that differ from the run's config.yaml."""
    meta = read_meta(checkpoint) or {}
    trained = meta.get("base_model")
    if trained and not same_model(trained, recipe.model.path):
        raise MmtuneError(f"the recipe's base model {recipe.model.path!r} is not the one {str(checkpoint)!r} was "
                          f"trained on ({trained!r})",
                          hint="leave the recipe out to use the run's own (its work dir's config.yaml)")
    if meta.get("method") and meta["method"] != recipe.method.type:
        raise MmtuneError(f"the recipe's method {recipe.method.type!r} is not the one {str(checkpoint)!r} was "
                          f"trained with ({meta['method']!r})",
                          hint="leave the recipe out to use the run's own (its work dir's config.yaml)")
    config = run_config(checkpoint)
    if config.is_file():
        from mmtune.config.load import load_config

        ran = load_config(str(config))
        differ = [name for name in ("model", "data", "method") if getattr(ran, name) != getattr(recipe, name)]
        if differ:
            log.warning("the recipe's %s section(s) differ from the run's %s; exporting with the recipe given",
                        "/".join(differ), config)


def prepare_out_dir(out: Path, checkpoint: Path, *, overwrite: bool) -> None:
    """`out` must be new or empty (an export into a dir holding an older adapter or model would leave
    its files to be loaded with the new ones); `overwrite` clears it. Never the checkpoint itself."""
    src = checkpoint.resolve()
    if out.exists() and (out.resolve() == src or out.resolve() in src.parents):
        raise MmtuneError(f"output dir {str(out)!r} holds the checkpoint being exported",
                          hint="give a new directory for the export")
    if out.exists() and not out.is_dir():
        raise MmtuneError(f"output {str(out)!r} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise MmtuneError(f"output dir {str(out)!r} is not empty",
                              hint="give a new directory, or --overwrite to clear it first")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def verify_weights(directory: Path) -> None:
    """Every safetensors file in `directory` (and each shard an index names) is whole: its header
    reads and the file is as long as the header says. A truncated or missing file is an error."""
    directory = Path(directory)
    if missing := missing_shards(directory):
        index, shard = missing[0]
        raise MmtuneError(f"{directory / index} names {shard}, which was not written")
    for path in sorted(directory.glob("*.safetensors")):
        check_safetensors(path)


def check_safetensors(path: Path) -> None:
    problem = safetensors_problem(path)
    if problem is None:
        return
    damaged = "the file is damaged (a full disk, an interrupted copy): export again from a good checkpoint"
    raise MmtuneError(f"{path} {problem}", hint=damaged)
