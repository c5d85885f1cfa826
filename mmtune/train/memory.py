"""Predict peak GPU memory per GPU before a launch (`mmtune estimate-memory`).

Parameters are counted exactly from the model's config: the model is built on the meta device
(no weights, no download beyond config.json), and LoRA is applied to that meta model with the
recipe's LoRA settings. Everything else is arithmetic, per GPU, with Ψ = all parameters,
Ψt = trainable ones, N = data-parallel GPUs, c = bytes of the compute dtype (2 for bf16/fp16,
4 for fp32):

weights      Ψ·w. w = 2 (bf16: mmtune loads and trains in bf16) or 4 (fp32, and fp16 AMP, which
             keeps fp32 weights); QLoRA: the decoder's Linear weights take NF4 = 0.5 byte + double-
             quantized constants (one 8-bit absmax per 64 values, one fp32 per 256 absmaxes) =
             0.5159 byte, the rest (embeddings, norms, lm_head) stays at c. LoRA adapters are fp32.
             ZeRO-3 / FSDP full_shard: /N, plus a working set of gathered c-byte parameters
             (2 × the largest of one decoder layer and the embedding). Parameter offload: 0 + that set.
gradients    Ψt·g, g = bytes of the trainable weights (DeepSpeed keeps 16-bit gradients, FSDP fp32).
             ZeRO-2/3, FSDP: /N. DeepSpeed optimizer offload: 0.
optimizer    Ψt·k. Plain Trainer: AdamW keeps 2 states in the parameters' dtype (k = 2·w; 8-bit
             AdamW k = 2; SGD k = 0). DeepSpeed and FSDP keep fp32 master weights and fp32 states
             under bf16/fp16 (k = 12 for AdamW, the ZeRO paper's K) and k = 8 under fp32.
             ZeRO-1/2/3, FSDP: /N. Offload: 0.
activations  per decoder layer and token, what autograd saves in a Llama-style layer (RMSNorm,
             attention, SwiGLU MLP), term by term in `decoder_layer_bytes`: for Qwen2-0.5B in bf16,
             full fine-tune, sdpa: 20h + 8i + 4kv + 4a + 8 bytes (57 KiB; 40 KiB with
             `train.fused_layers`), counted on transformers' modules (tests). Eager attention adds
             the s×s scores. Times s·b tokens and the layers. With gradient checkpointing each layer
             keeps its input, s·b·h·c, plus one layer is recomputed. (The often-quoted
             s·b·h·34 bytes of Korthikanti et al. 2022 is for GPT blocks with a 4h MLP and dropout;
             for SwiGLU models it is about half the real figure. It stays for the vision encoder.)
logits       s·b·V·12 (bf16; fp32 too): the c-byte logits and the fp32 log-softmax kept for backward,
             then in backward its fp32 gradient and, under bf16, that gradient cast back to c (the
             profiler's peak on CPU). With `train.chunked_loss` (the default; not under ZeRO-3 /
             FSDP) only one chunk of r = min(s·b, max(256, 2^25/V)) tokens has logits at a time: r·V·(4 + c)
             for the fp32 chunk and its c-byte copy for the hidden-state gradient (fp32: r·V·4),
             plus that gradient, kept for backward, s·b·h·c, plus, when the head trains (full), the
             fp32 accumulator of its weight gradient and its c-byte copy in backward, V·h·(4 + c).
vision       a trainable vision encoder stores activations like the LM (image tokens × images per
             sample as its sequence); a frozen one keeps none beyond one layer's working memory.
overhead     1.0 GiB: CUDA context, cuBLAS/NCCL workspaces, allocator slack; plus DeepSpeed's
             communication buckets (reduce + allgather / prefetch bucket sizes × 2 bytes).

FSDP upcasts trainable parameters to fp32 under mixed precision (so w = 4 for them, k = 8) and
shard_grad_op holds a gathered c-byte copy of all parameters from forward to backward.

These are planning numbers, not a guarantee: fragmentation, the attention kernel and the data
(packing fills every row to max_length) move the real peak. Compare with a measured run
(`torch.cuda.max_memory_allocated` + the CUDA context) before buying hardware on them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from mmtune.errors import MmtuneError

GiB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit value + 8-bit absmax per 64-block + fp32 per 256 absmaxes
CUDA_OVERHEAD = 1.0 * GiB
STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp_shard_grad_op", "fsdp_full_shard")


@dataclass(frozen=True)
class ModelSize:
    """What the estimate needs to know about a model; counted once from its config."""

    name: str
    params: int  # all parameters (tied weights once)
    quantizable_params: int  # decoder Linear weights: what 4-bit QLoRA quantizes
    embedding_params: int  # input embedding (lm_head when untied counts in largest_unit too)
    layer_params: int  # one decoder layer
    hidden_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    intermediate_size: int = 0  # the MLP's inner width (0: unknown, taken as 4 x hidden)
    kv_size: int = 0  # key/value width: key-value heads x head size (0: unknown, taken as hidden)
    lora_params: int = 0  # trainable parameters of the recipe's LoRA
    vision_params: int = 0  # vision encoder (0: text-only model)
    projector_params: int = 0
    vision_hidden: int = 0
    vision_layers: int = 0
    vision_heads: int = 0
    image_tokens: int = 0  # tokens one image is inside the vision encoder

    @property
    def total_params(self) -> int:
        return self.params + self.vision_params + self.projector_params


@dataclass(frozen=True)
class Setup:
    """How the model trains: method, precision, parallelism, batch shape."""

    method: str = "lora"  # lora | qlora | full
    precision: str = "bf16"  # bf16 | fp16 | fp32
    gpus: int = 1
    strategy: str = "ddp"  # one of STRATEGIES ("ddp" on one GPU = plain training)
    offload_optimizer: bool = False
    offload_params: bool = False
    micro_batch: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch_fused"
    attention: str = "sdpa"  # eager keeps the s×s scores
    images_per_sample: int = 1
    stage: str = "finetune"  # VLM: pretrain trains the projector only
    trainable: tuple[str, ...] | None = None  # VLM parts the recipe trains, when it names them
    comm_bucket_elements: int = 0  # DeepSpeed buckets (see deepspeed_setup)
    chunked_loss: bool = False  # train.chunked_loss (activation_bytes ignores it under ZeRO-3 / FSDP)
    fused_layers: bool = False  # train.fused_layers (off under ZeRO-3 / FSDP, as in training)
    lora_rank: int = 16

    @property
    def deepspeed(self) -> bool:
        return self.strategy.startswith("zero")

    @property
    def fsdp(self) -> bool:
        return self.strategy.startswith("fsdp")

    @property
    def params_sharded(self) -> bool:
        """ZeRO-3 / FSDP: weights are whole only inside their modules' hooks, so training runs
        without the chunked loss and the fused layers (mmtune.train.launch.params_sharded)."""
        return self.strategy == "zero3" or self.fsdp


@dataclass
class Estimate:
    setup: Setup
    parts: dict[str, float] = field(default_factory=dict)  # bytes per GPU

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def gib(self) -> float:
        return self.total / GiB


# ---- counting parameters from a config -----------------------------------------------------------


def load_model_config(source: str | Path, trust_remote_code: bool = False):
    """A transformers config from a model dir, a config.json file, or a hub id (needs network)."""
    from transformers import AutoConfig, PretrainedConfig

    path = Path(source).expanduser()
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise MmtuneError(f"{path}: config has no model_type", hint="use a config.json saved by transformers")
        from transformers import CONFIG_MAPPING

        cls = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else PretrainedConfig
        config = cls(**data)
        config.name_or_path = str(path.parent if path.name == "config.json" else path.with_suffix(""))
        return config
    try:
        return AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise MmtuneError(f"cannot read the model config of {str(source)!r}: {e}".splitlines()[0],
                          hint="give a local model dir or --config-json PATH/config.json") from None


def _meta_causal_lm(config, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _text_config(config):
    return getattr(config, "text_config", None) or config


def count_model(config, lora=None, *, name: str = "model", trust_remote_code: bool = False) -> ModelSize:
    """ModelSize of a causal LM config; `lora` (the recipe's LoraConfig section) sets lora_params."""
    import torch

    model = _meta_causal_lm(config, trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    out_emb = model.get_output_embeddings()
    quantizable = sum(m.weight.numel() for m in model.modules()
                      if isinstance(m, torch.nn.Linear) and m is not out_emb)
    embedding = model.get_input_embeddings().weight.numel()
    layers = _decoder_layers(model)
    layer_params = max((sum(p.numel() for p in layer.parameters()) for layer in layers), default=0)
    text = _text_config(config)
    lora_params = _count_lora(model, lora) if lora is not None else 0
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelSize(
        name=name, params=params, quantizable_params=quantizable, embedding_params=embedding,
        layer_params=layer_params, hidden_size=text.hidden_size, num_layers=text.num_hidden_layers,
        num_heads=heads, vocab_size=text.vocab_size, intermediate_size=getattr(text, "intermediate_size", 0) or 0,
        kv_size=kv_heads * head_dim, lora_params=lora_params,
    )


def _decoder_layers(model):
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def _count_lora(meta_model, lora) -> int:
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=0.0, target_modules=lora.target_modules,
                        modules_to_save=list(lora.modules_to_save) or None, task_type="CAUSAL_LM")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter from peft/transformers about the meta model
        peft_model = get_peft_model(meta_model, config)
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


def add_vision(size: ModelSize, vision_config, *, projector: str = "mlp2x_gelu", query_nums: int = 64,
               trust_remote_code: bool = False) -> ModelSize:
    """The LM's ModelSize plus a vision encoder (counted on meta) and its projector (by formula:
    mlp2x_gelu = two Linear layers v·h + h·h; resampler ≈ queries + cross-attention 4·h² + v·h)."""
    import torch
    from transformers import AutoModel

    vcfg = getattr(vision_config, "vision_config", None) or vision_config
    with torch.device("meta"):
        vision = AutoModel.from_config(vcfg, trust_remote_code=trust_remote_code)
    vision_params = sum(p.numel() for p in vision.parameters())
    from mmtune.models.llava import EXTRA_TOKENS  # CLIP adds a CLS token, SigLIP none

    v, h = vcfg.hidden_size, size.hidden_size
    image_tokens = (vcfg.image_size // vcfg.patch_size) ** 2 + EXTRA_TOKENS.get(vcfg.model_type, 1)
    if projector == "resampler":
        proj = query_nums * h + v * h + 4 * h * h + 4 * h
    else:
        proj = v * h + h + h * h + h
    return replace(size, vision_params=vision_params, projector_params=proj, vision_hidden=v,
                   vision_layers=vcfg.num_hidden_layers, vision_heads=vcfg.num_attention_heads,
                   image_tokens=image_tokens)


def synthetic_llama(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=None, vocab_size=32000, tie_word_embeddings=False, name="llama-7b"):
    """A LlamaConfig with the given sizes (defaults: Llama-2-7B), for estimates without a download."""
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                         num_key_value_heads=num_key_value_heads or num_attention_heads,
                         vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings)
    config.name_or_path = name
    return config


# ---- the arithmetic ----------------------------------------------------------------------------------


def trained_parts(setup: Setup, size: ModelSize) -> set[str]:
    """What trains: llm | llm.lora, and for a VLM projector, vision | vision.lora (as in the recipe)."""
    if not size.vision_params:
        return {"llm"} if setup.method == "full" else {"llm.lora"}
    if setup.trainable is not None:
        return set(setup.trainable)
    if setup.stage == "pretrain":
        return {"projector"}
    return {"projector", "llm"} if setup.method == "full" else {"projector", "llm.lora"}


def _optimizer_bytes(setup: Setup, weight_bytes: float) -> float:
    """Bytes of optimizer state (with fp32 master weights where kept) per trainable parameter."""
    eight_bit = setup.optimizer in ("adamw_8bit", "paged_adamw_8bit")
    states = 0 if setup.optimizer == "sgd" else 2 if eight_bit else None
    if setup.deepspeed:
        master = 4 if setup.precision != "fp32" else 0
        return master + (8 if states is None else states)
    if setup.fsdp:  # trainable params are fp32 already (counted as weights)
        return 8 if states is None else states
    return 2 * weight_bytes if states is None else states


def estimate(size: ModelSize, setup: Setup) -> Estimate:
    if setup.method not in ("lora", "qlora", "full"):
        raise MmtuneError(f"unknown method {setup.method!r}")
    if setup.strategy not in STRATEGIES:
        raise MmtuneError(f"unknown strategy {setup.strategy!r}", hint=f"one of {', '.join(STRATEGIES)}")
    n = max(1, setup.gpus)
    c = 4 if setup.precision == "fp32" else 2
    w = 2 if setup.precision == "bf16" else 4  # mmtune: bf16 loads bf16; fp16 AMP keeps fp32 weights
    shard_params = setup.strategy in ("zero3", "fsdp_full_shard")
    shard_grads = setup.strategy in ("zero2", "zero3", "fsdp_shard_grad_op", "fsdp_full_shard")
    shard_optim = setup.strategy != "ddp"
    parts = trained_parts(setup, size)

    # every parameter once, at the bytes it is stored in; trainable ones listed with their bytes
    trainable: list[tuple[float, float]] = []  # (count, bytes per weight)
    if "llm" in parts:
        trainable.append((size.params, w))
        frozen = 0.0
    elif setup.method == "qlora":
        frozen = size.quantizable_params * NF4_BYTES + (size.params - size.quantizable_params) * c
    else:
        frozen = size.params * w
    if "llm.lora" in parts and size.lora_params:
        trainable.append((size.lora_params, 4))  # peft keeps adapters in fp32
    if "vision" in parts:
        trainable.append((size.vision_params, w))
    else:
        frozen += size.vision_params * w
    if "projector" in parts:
        trainable.append((size.projector_params, w))
    else:
        frozen += size.projector_params * w
    if setup.fsdp and setup.precision != "fp32":  # FSDP upcasts trainable parameters to fp32
        trainable = [(count, 4) for count, _ in trainable]
    weights = frozen + sum(count * b for count, b in trainable)
    working_set = 0.0
    if shard_params:
        weights /= n
        working_set = 2 * max(size.layer_params, size.embedding_params) * c
        if setup.offload_params:
            weights = 0.0
    elif setup.strategy == "fsdp_shard_grad_op":  # shards at rest, unsharded from forward to backward
        weights = weights / n + size.total_params * c

    def grad_bytes(b):
        return 2 if setup.deepspeed and setup.precision != "fp32" else b

    grads = sum(count * grad_bytes(b) for count, b in trainable) / (n if shard_grads else 1)
    optim = sum(count * _optimizer_bytes(setup, b) for count, b in trainable) / (n if shard_optim else 1)
    if setup.offload_optimizer:
        optim = 0.0
        if setup.deepspeed or setup.fsdp:  # ZeRO-Offload / FSDP offload keep gradient partitions in CPU RAM
            grads = 0.0

    llm_weights = "full" if "llm" in parts else "lora" if "llm.lora" in parts else "frozen"
    acts, logits, vision_acts = activation_bytes(size, setup, vision_trainable="vision" in parts or "vision.lora" in parts,
                                                llm_weights=llm_weights)
    overhead = CUDA_OVERHEAD + 2 * setup.comm_bucket_elements
    return Estimate(setup, {"weights": weights + working_set, "gradients": grads, "optimizer": optim,
                            "activations": acts, "logits": logits, "vision activations": vision_acts,
                            "overhead": overhead})


def layer_activation_bytes(s: int, b: int, h: int, a: int, c: int, eager: bool) -> float:
    """Korthikanti et al.: s·b·h·(34 + 5·a·s/h) bytes per layer at 2-byte activations (scaled by c/2).
    Used for the vision encoder (a GPT-style block); decoder layers use `decoder_layer_bytes`."""
    per = 34 + (5 * a * s / h if eager else 0)
    return s * b * h * per * c / 2


def decoder_layer_bytes(size: ModelSize, setup: Setup, s: int, c: int, weights: str) -> float:
    """Bytes one Llama-style decoder layer keeps for backward, per token (RMSNorm, attention, SwiGLU
    MLP; Llama, Mistral, Qwen2/3 and the like). Every term is a tensor autograd saves, counted on the
    real transformers modules (tests/train/test_memory_activations.py checks the sum against them):

    norms (2)  plain: the fp32 copy of the input 4h, the fp32 rstd 4, and the normalized c·h when
               the norm weight trains; fused (train.fused_layers): the input c·h and rstd 4
    attention  sdpa/flash: q c·h, k and v 2·c·kv, the output c·h (also o_proj's input), the fp32
               log-sum-exp 4·heads; eager: q and k, v repeated to all heads 3·c·h, o_proj's input
               c·h, and the scores: fp32 softmax + c-byte probabilities, heads·s·(4 + c) (fp32: 4)
    MLP        plain: gate, SiLU(gate) and up 3·c·i; fused: gate and up 2·c·i
    inputs     `weights` "full" (they train): the q/k/v, gate/up and down_proj inputs 2·c·h + c·i;
               "lora" (LoRA / QLoRA: frozen base, peft's fp32 adapters, bf16 under the Trainer's
               autocast): each of the 7 adapted Linears keeps its own c-byte copy of its input,
               6·c·h + c·i (fp32 compute, or DeepSpeed, which casts the adapters to bf16: the shared
               inputs themselves, 2·c·h + c·i), plus the rank-r adapter activations 7·c·r (assumes
               `all-linear` targets); "frozen" (a VLM's projector pretraining): none.
    """
    h, a = size.hidden_size, size.num_heads
    i = size.intermediate_size or 4 * h
    kv = size.kv_size or h
    fused = setup.fused_layers and not setup.params_sharded
    if fused:
        norms = 2 * (c * h + 4)
    else:
        norms = 2 * (4 * h + 4 + (c * h if weights == "full" else 0))
    if setup.attention == "eager":
        attention = 4 * c * h + a * s * (4 + (c if c < 4 else 0))  # fp32: the probabilities are the softmax
    else:
        attention = 2 * c * h + 2 * c * kv + 4 * a
    mlp = (2 if fused else 3) * c * i
    if weights == "frozen":
        inputs = 0
    elif weights == "full" or c >= 4 or setup.deepspeed:  # (DeepSpeed casts the adapters to bf16 too)
        inputs = 2 * c * h + c * i
    else:  # under autocast each adapter casts its input for its fp32 weights: a c-byte copy apiece
        inputs = 6 * c * h + c * i
    if weights == "lora":
        inputs += 7 * c * setup.lora_rank
    return norms + attention + mlp + inputs


def activation_bytes(size: ModelSize, setup: Setup, vision_trainable: bool = False,
                     llm_weights: str = "lora") -> tuple[float, float, float]:
    """(decoder activations, logits, vision-encoder activations) in bytes for one micro-batch.
    `llm_weights`: "full" (the LLM, its head included, trains) | "lora" | "frozen"."""
    c = 4 if setup.precision == "fp32" else 2
    s, b, h, L = setup.seq_len, setup.micro_batch, size.hidden_size, size.num_layers
    eager = setup.attention == "eager"
    head_trains = llm_weights == "full"
    one = s * b * decoder_layer_bytes(size, setup, s, c, llm_weights)
    acts = L * s * b * h * c + one if setup.gradient_checkpointing else L * one
    if setup.chunked_loss and not setup.params_sharded:  # sharded head: the plain loss
        from mmtune.models import chunked_loss

        rows = min(s * b, chunked_loss.rows_per_chunk(size.vocab_size, chunked_loss.CHUNK_ELEMENTS))
        # the fp32 accumulator of the head's gradient, and its copy in the weight's dtype in backward
        head_grad = size.vocab_size * h * (4 + c) if head_trains else 0
        logits = rows * size.vocab_size * (4 + (c if c < 4 else 0)) + s * b * h * c + head_grad
    else:  # logits, fp32 log-softmax; in backward its fp32 gradient (+ the cast back to c)
        logits = s * b * size.vocab_size * (c + 8 + (c if c < 4 else 0))
    vision = 0.0
    if size.vision_params:
        sv = size.image_tokens
        bv = b * max(1, setup.images_per_sample)
        one_v = layer_activation_bytes(sv, bv, size.vision_hidden, size.vision_heads, c, eager)
        if not vision_trainable:
            vision = one_v
        elif setup.gradient_checkpointing:
            vision = size.vision_layers * 2 * sv * bv * size.vision_hidden * c / 2 + one_v
        else:
            vision = size.vision_layers * one_v
    return acts, logits, vision


# ---- from a recipe and CLI flags ------------------------------------------------------------------------


def deepspeed_setup(name_or_file: str, hidden_size: int) -> dict:
    """Setup fields from a DeepSpeed config: strategy, offloads, communication bucket sizes."""
    from mmtune.train.deepspeed import load_deepspeed_config, zero_stage

    config = load_deepspeed_config(name_or_file)
    stage = zero_stage(config)
    zero = config.get("zero_optimization", {})

    def offloaded(key):
        return str((zero.get(key) or {}).get("device", "none")).lower() not in ("none", "")

    def elements(key, default):
        value = zero.get(key, default)
        return default if value == "auto" else int(float(value))

    h2 = hidden_size * hidden_size
    buckets = elements("reduce_bucket_size", 500_000_000) if zero.get("reduce_bucket_size") != "auto" else h2
    if stage == 3:
        prefetch = zero.get("stage3_prefetch_bucket_size", 50_000_000)
        buckets += int(0.9 * h2) if prefetch == "auto" else int(float(prefetch))
    else:
        buckets += elements("allgather_bucket_size", 500_000_000)
    return {"strategy": f"zero{stage}" if stage else "ddp", "offload_optimizer": offloaded("offload_optimizer"),
            "offload_params": offloaded("offload_param"), "comm_bucket_elements": buckets}


def setup_from_recipe(recipe, *, gpus: int = 1, deepspeed: str | None = None, fsdp: str | None = None,
                      fsdp_offload: bool = False, hidden_size: int = 0) -> Setup:
    t = recipe.train
    fields = dict(method=recipe.method.type, precision=t.precision, gpus=gpus, micro_batch=t.micro_batch_size,
                  seq_len=recipe.data.max_length, gradient_checkpointing=t.gradient_checkpointing,
                  optimizer=t.optimizer, attention=recipe.model.attn_implementation or "sdpa",
                  chunked_loss=t.chunked_loss, fused_layers=t.fused_layers, lora_rank=recipe.method.lora.r)
    vision = getattr(recipe.model, "vision", None)
    if vision is not None:
        slicing = getattr(recipe.data, "slice", None)
        fields["images_per_sample"] = slicing.max_slice_nums + 1 if slicing else 1
        fields["stage"] = recipe.method.stage
        fields["trainable"] = tuple(recipe.method.trainable) if recipe.method.trainable is not None else None
    if deepspeed and fsdp:
        raise MmtuneError("--deepspeed and --fsdp are two ways to shard a model: pick one")
    if deepspeed:
        fields.update(deepspeed_setup(deepspeed, hidden_size))
    elif fsdp:
        fields.update(strategy=f"fsdp_{fsdp}", offload_params=fsdp_offload, offload_optimizer=fsdp_offload)
    return Setup(**fields)


def estimate_for_recipe(recipe, *, gpus: int = 1, deepspeed: str | None = None) -> Estimate:
    """The estimate for a recipe as it is, on `gpus` GPUs (with a DeepSpeed config, or plain)."""
    size = model_size_for_recipe(recipe)
    return estimate(size, setup_from_recipe(recipe, gpus=gpus, deepspeed=deepspeed, hidden_size=size.hidden_size))


def model_size_for_recipe(recipe, config_json: str | None = None) -> ModelSize:
    """Count the recipe's model (and vision encoder, when it has one) from configs only."""
    trust = recipe.model.trust_remote_code
    source = config_json or recipe.model.path
    config = load_model_config(source, trust)
    name = Path(str(getattr(config, "name_or_path", "") or source)).name
    size = count_model(config, recipe.method.lora, name=name, trust_remote_code=trust)
    vision = getattr(recipe.model, "vision", None)
    if vision is not None:
        vconfig = load_model_config(vision.path, trust)
        projector = recipe.model.projector
        size = add_vision(size, vconfig, projector=projector.type, query_nums=projector.query_nums, trust_remote_code=trust)
    return size


# ---- the table -------------------------------------------------------------------------------------------


def estimate_table(size: ModelSize, base: Setup, methods=("lora", "full"), gpus=(1, 2, 4, 8)) -> dict:
    """{method: {gpus: Estimate | None}}; None where the combination cannot run (QLoRA + ZeRO-3/FSDP)."""
    table = {}
    for method in methods:
        row = {}
        for n in gpus:
            setup = replace(base, method=method, gpus=n)
            sharded = setup.strategy in ("zero3", "fsdp_full_shard", "fsdp_shard_grad_op")
            row[n] = None if method == "qlora" and sharded else estimate(size, setup)
        table[method] = row
    return table
