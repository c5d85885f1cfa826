"""`mmtune convert to-hf | pth_to_hf | merge`."""

from __future__ import annotations

import logging

from mmtune.cli.common import add_parser, add_set_option

EPILOG = """\
examples:
  mmtune convert to-hf my_recipe.yaml work_dirs/nova/checkpoint-600 hf_adapter
  mmtune convert merge Qwen/Qwen2.5-0.5B-Instruct hf_adapter merged --max-shard-size 2GB
"""
TO_HF_EPILOG = """\
examples:
  mmtune convert to-hf work_dirs/nova/final hf_adapter                 # the run's own recipe (config.yaml)
  mmtune convert to-hf my_recipe.yaml work_dirs/nova/final hf_adapter
  mmtune convert pth_to_hf my_recipe.yaml work_dirs/nova/checkpoint-300 hf_300   # XTuner's name
LoRA/QLoRA runs give a peft adapter dir; full fine-tunes give a full model. The tokenizer is
saved with the training chat template, so `apply_chat_template` reproduces the training format.
"""
log = logging.getLogger("mmtune.export")

MERGE_EPILOG = """\
examples:
  mmtune convert merge Qwen/Qwen2.5-0.5B-Instruct hf_adapter merged
  mmtune convert merge ./internlm2-chat-1_8b hf_adapter merged --max-shard-size 2GB
  mmtune convert merge internlm/internlm2-chat-1_8b hf_adapter merged_ilm2 --layout internlm2   # InternLM2's layout
An InternLM2 base loads natively (as Llama; no remote code); the merged model is written as Llama
(loads anywhere without remote code) unless --layout internlm2 asks for InternLM2's own layout.
"""


def register(sub) -> None:
    p = add_parser(sub, "convert", "export checkpoints to Hugging Face format and merge adapters", EPILOG)
    commands = p.add_subparsers(dest="convert_command", metavar="COMMAND", required=True)
    for name in ("to-hf", "pth_to_hf"):
        c = add_parser(commands, name, "checkpoint -> plain Hugging Face directory", TO_HF_EPILOG)
        c.add_argument("paths", nargs="+", metavar="[CONFIG] CHECKPOINT OUT",
                       help="the recipe the checkpoint was trained with (optional: the run's work dir keeps it "
                            "as config.yaml), the checkpoint-N or final directory of the run, and a new or empty "
                            "output directory")
        c.add_argument("--overwrite", action="store_true", help="clear a non-empty output directory first")
        add_layout_option(c)
        add_set_option(c)
        c.set_defaults(func=run_to_hf)
    m = add_parser(commands, "merge", "merge a LoRA adapter into its base model", MERGE_EPILOG)
    m.add_argument("base", metavar="BASE", help="base model directory or hub id")
    m.add_argument("adapter", metavar="ADAPTER", help="peft adapter directory (from convert to-hf)")
    m.add_argument("out", metavar="OUT", help="output directory")
    m.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default: 5GB)")
    m.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    m.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the base model")
    m.add_argument("--force", action="store_true",
                   help="merge into a base other than the one the adapter records (the same model elsewhere)")
    m.add_argument("--overwrite", action="store_true", help="clear a non-empty output directory first")
    add_layout_option(m)
    m.set_defaults(func=run_merge)


def add_layout_option(parser) -> None:
    parser.add_argument("--layout", choices=["llama", "internlm2"], default="llama",
                        help="llama (default): the layout transformers, vLLM, SGLang and LMDeploy load without remote "
                             "code; internlm2: InternLM2's own layout and config, for a model trained from an "
                             "InternLM2 checkpoint")


def report_servable(out) -> None:
    """Say whether vLLM, SGLang and LMDeploy find what they read (docs/deploy.md has the commands)."""
    from mmtune.export.servable import serving_problems

    problems = serving_problems(out)
    if not problems:
        print("servable by vLLM, SGLang and LMDeploy as it is (docs/deploy.md: 'Production engines')")
    for problem in problems:
        log.warning("for vLLM/SGLang/LMDeploy: %s", problem)


def run_to_hf(args) -> int:
    from mmtune.config.load import load_config
    from mmtune.errors import MmtuneError
    from mmtune.export.to_hf import checkpoint_to_hf

    if len(args.paths) not in (2, 3):
        raise MmtuneError(f"to-hf takes [CONFIG] CHECKPOINT OUT, got {len(args.paths)} path(s)",
                          hint="e.g. mmtune convert to-hf work_dirs/run/final hf_out")
    *config, checkpoint, out_dir = args.paths
    if not config and args.set:
        raise MmtuneError("--set changes a recipe, and none was given", hint="give the recipe: [CONFIG] CHECKPOINT OUT")
    recipe = load_config(config[0], args.set) if config else None
    out = checkpoint_to_hf(recipe, checkpoint, out_dir, layout=args.layout, overwrite=args.overwrite)
    print(f"exported to {out}")
    report_servable(out)
    return 0


def run_merge(args) -> int:
    from mmtune.export.merge import merge_adapter

    out = merge_adapter(args.base, args.adapter, args.out, max_shard_size=args.max_shard_size,
                        dtype=args.dtype, trust_remote_code=args.trust_remote_code, layout=args.layout,
                        force=args.force, overwrite=args.overwrite)
    print(f"merged model written to {out}")
    report_servable(out)
    return 0
