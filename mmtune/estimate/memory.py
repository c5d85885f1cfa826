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

from dataclasses import dataclass, field, replace

from mmtune.errors import MmtuneError
from mmtune.estimate.setup import STRATEGIES, Setup, setup_from_recipe
from mmtune.estimate.sizes import ModelSize, model_size_for_recipe
from mmtune.models import chunked_loss
from mmtune.models.families import FAMILIES
from mmtune.models.trainable import default_groups

GiB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit value + 8-bit absmax per 64-block + fp32 per 256 absmaxes
CUDA_OVERHEAD = 1.0 * GiB


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


# ---- the arithmetic ----------------------------------------------------------------------------------


def trained_parts(setup: Setup, size: ModelSize) -> set[str]:
    """What trains: llm | llm.lora, and for a VLM projector, vision | vision.lora (as in the recipe,
    with training's defaults, mmtune.models.trainable)."""
    if size.vision_params and setup.trainable is not None:
        return set(setup.trainable)
    family = FAMILIES[size.family] if size.family else None
    return set(default_groups(setup.method, setup.stage, vision=bool(size.vision_params), family=family))


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
        rows = min(s * b, chunked_loss.rows_per_chunk(size.vocab_size, chunked_loss.CHUNK_ELEMENTS))
        # the fp32 accumulator of the head's gradient, and its copy in the weight's dtype in backward
        head_grad = size.vocab_size * h * (4 + c) if head_trains else 0
        logits = rows * size.vocab_size * (4 + (c if c < 4 else 0)) + s * b * h * c + head_grad
    else:  # logits, fp32 log-softmax; in backward its fp32 gradient (+ the cast back to c)
        logits = s * b * size.vocab_size * (c + 8 + (c if c < 4 else 0))
    vision = 0.0
    if size.vision_params:
        sv = size.image_tokens
        bv = b * max(1, size.images_per_sample or setup.images_per_sample)
        one_v = layer_activation_bytes(sv, bv, size.vision_hidden, size.vision_heads, c, eager)
        if not vision_trainable:
            vision = one_v
        elif setup.gradient_checkpointing:
            vision = size.vision_layers * 2 * sv * bv * size.vision_hidden * c / 2 + one_v
        else:
            vision = size.vision_layers * one_v
    return acts, logits, vision


def estimate_for_recipe(recipe, *, gpus: int = 1, deepspeed: str | None = None) -> Estimate:
    """The estimate for a recipe as it is, on `gpus` GPUs (with a DeepSpeed config, or plain)."""
    size = model_size_for_recipe(recipe)
    return estimate(size, setup_from_recipe(recipe, gpus=gpus, deepspeed=deepspeed, hidden_size=size.hidden_size))


# ---- the table -------------------------------------------------------------------------------------------


def estimate_table(size: ModelSize, base: Setup, methods=("lora", "full"), gpus=(1, 2, 4, 8)) -> dict:
    """{method: {gpus: Estimate | None}}; None where the combination cannot run (QLoRA + ZeRO-3/FSDP)."""
    table = {}
    for method in methods:
        row = {}
        for n in gpus:
            # the recipe's own trainable parts on its method's row; the defaults of the method elsewhere
            setup = replace(base, method=method, gpus=n, trainable=base.trainable if method == base.method else None)
            sharded = setup.strategy in ("zero3", "fsdp_full_shard", "fsdp_shard_grad_op")
            row[n] = None if method == "qlora" and sharded else estimate(size, setup)
        table[method] = row
    return table
