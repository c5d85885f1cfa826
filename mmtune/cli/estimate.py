"""`mmtune estimate-memory CONFIG` — peak GPU memory per GPU, before a launch."""

from __future__ import annotations

from mmtune.cli.common import add_parser, add_set_option

EPILOG = """\
examples:
  mmtune estimate-memory my_recipe.yaml --gpu-mem 24
  mmtune estimate-memory my_recipe.yaml --deepspeed zero3 --gpus 2 4 8 --gpu-mem 80
  mmtune estimate-memory my_recipe.yaml --config-json llama-7b/config.json --set data.max_length=4096
  mmtune estimate-memory my_recipe.yaml --fsdp full_shard --set train.gradient_checkpointing=true

Parameters are counted from the model's config.json on the meta device (no weights are read);
a hub id needs the network, so give a local model dir or --config-json when offline. The
formulas (weights, gradients, optimizer states by method and ZeRO stage / FSDP, activations by
sequence length, micro-batch and checkpointing, logits, overhead) are in mmtune/estimate/
and docs/distributed.md. Planning numbers, not a guarantee.
"""


def register(sub) -> None:
    p = add_parser(sub, "estimate-memory", "predict peak GPU memory per GPU for a recipe", EPILOG)
    p.add_argument("config", metavar="CONFIG", help="recipe YAML file or built-in recipe name")
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8], metavar="N",
                   help="GPU counts for the table's columns (default: 1 2 4 8); the first gets the breakdown")
    p.add_argument("--deepspeed", metavar="zero1|zero2|zero2_offload|zero3|zero3_offload|FILE",
                   help="estimate for DeepSpeed ZeRO with this config")
    p.add_argument("--fsdp", choices=["full_shard", "shard_grad_op"], help="estimate for PyTorch FSDP")
    p.add_argument("--fsdp-offload", action="store_true", help="with --fsdp: parameters and optimizer in CPU RAM")
    p.add_argument("--gpu-mem", type=float, metavar="GiB", help="memory of one GPU: say whether each cell fits")
    p.add_argument("--config-json", metavar="PATH", help="model config.json (or dir) to count instead of the recipe's model.path")
    p.add_argument("--methods", nargs="+", choices=["lora", "qlora", "full"],
                   help="table rows (default: lora, full, and the recipe's method)")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mmtune.config.load import load_config
    from mmtune.errors import MmtuneError
    from mmtune import estimate as memory

    if any(n < 1 for n in args.gpus):
        raise MmtuneError("--gpus takes positive GPU counts")
    if args.fsdp_offload and not args.fsdp:
        raise MmtuneError("--fsdp-offload needs --fsdp full_shard or shard_grad_op")
    recipe = load_config(args.config, args.set)
    size = memory.model_size_for_recipe(recipe, args.config_json)
    base = memory.setup_from_recipe(recipe, gpus=args.gpus[0], deepspeed=args.deepspeed, fsdp=args.fsdp,
                                    fsdp_offload=args.fsdp_offload, hidden_size=size.hidden_size)
    methods = list(args.methods or dict.fromkeys(["lora", "full", recipe.method.type]))
    table = memory.estimate_table(size, base, methods=methods, gpus=args.gpus)

    print(describe(size, base, args))
    print("\nestimated peak memory per GPU:")
    print(format_table(table, args.gpu_mem))
    own = table.get(recipe.method.type, {}).get(args.gpus[0]) or memory.estimate(size, base)
    print(f"\nbreakdown for the recipe ({recipe.method.type}, {args.gpus[0]} GPU{'s' if args.gpus[0] > 1 else ''}):")
    print(format_breakdown(own))
    if args.gpu_mem is not None:
        verdict = "fits" if own.gib <= args.gpu_mem else "does NOT fit"
        print(f"\n{own.gib:.1f} GiB per GPU {verdict} in {args.gpu_mem:g} GiB")
    return 0


def describe(size, setup, args) -> str:
    strategy = {"ddp": "data parallel (no sharding)"}.get(setup.strategy, setup.strategy)
    if args.deepspeed:
        strategy = f"DeepSpeed {args.deepspeed} (ZeRO stage {setup.strategy.removeprefix('zero')})"
    elif args.fsdp:
        strategy = f"FSDP {args.fsdp}" + (" + offload" if args.fsdp_offload else "")
    offload = [name for name, on in (("optimizer", setup.offload_optimizer), ("parameters", setup.offload_params)) if on]
    def saver(on: bool) -> str:  # training turns both savers off where the weights are sharded
        return "on" if on and not setup.params_sharded else "off (sharded weights)" if on else "off"

    lines = [
        f"model: {size.name}: {human(size.params)} parameters, hidden {size.hidden_size}, {size.num_layers} layers, "
        f"vocab {size.vocab_size}; LoRA trains {human(size.lora_params)}",
        f"batch: sequence {setup.seq_len} x micro-batch {setup.micro_batch}, {setup.precision}, "
        f"attention {setup.attention}, gradient checkpointing {'on' if setup.gradient_checkpointing else 'off'}, "
        f"optimizer {setup.optimizer}, chunked loss {saver(setup.chunked_loss)}, "
        f"fused layers {saver(setup.fused_layers)}",
        f"parallelism: {strategy}" + (f", offload: {' + '.join(offload)} to CPU" if offload else ""),
    ]
    if size.vision_params:
        lines.insert(1, f"vision: {human(size.vision_params)} parameters, {size.image_tokens} tokens per image, "
                        f"{size.images_per_sample or setup.images_per_sample} image(s) or slices per sample; projector "
                        f"{human(size.projector_params)}")
    return "\n".join(lines)


METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "full"}


def format_table(table: dict, gpu_mem: float | None = None) -> str:
    """Rows = methods, columns = GPU counts (the MiniCPM-V README's table); marks OOM past gpu_mem."""
    gpus = list(next(iter(table.values())))
    head = ["method"] + [f"{n} GPU" + ("s" if n > 1 else "") for n in gpus]
    rows = []
    for method, row in table.items():
        cells = [METHOD_NAMES.get(method, method)]
        for n in gpus:
            est = row[n]
            if est is None:
                cells.append("n/a")
            else:
                mark = "" if gpu_mem is None else (" ok" if est.gib <= gpu_mem else " OOM")
                cells.append(f"{est.gib:.1f} GiB{mark}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(wd) for c, wd in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def format_breakdown(est) -> str:
    from mmtune.estimate import GiB

    width = max(len(k) for k in est.parts)
    lines = [f"  {k.ljust(width)}  {v / GiB:8.2f} GiB" for k, v in est.parts.items() if v]
    lines.append(f"  {'total'.ljust(width)}  {est.gib:8.2f} GiB")
    return "\n".join(lines)


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))
