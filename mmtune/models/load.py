"""Load tokenizers and causal LMs the way real checkpoints are loaded: `from_pretrained`.

One place decides dtype, attention implementation, 4-bit quantization and `trust_remote_code`
(off unless the recipe turns it on); `load_pretrained` is the one way mmtune calls
`from_pretrained`, so a path that does not exist or a checkpoint that does not load is one line
naming what and where.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

from mmtune.errors import MmtuneError
from mmtune.models import internlm2  # noqa: F401  (registers the native InternLM2 with transformers)
from mmtune.models import remote_code

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def pick_device(requested: str = "auto") -> str:
    if requested == "cuda" and not torch.cuda.is_available():
        raise MmtuneError("train.device is 'cuda' but no CUDA device is visible", hint="use device: auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def check_source(path: str) -> None:
    """A path that looks local must exist; a hub id must be cached or the hub reachable.

    Local-looking: absolute, ./ ../ ~, existing, more than two parts (a hub id is NAME or ORG/NAME),
    or a first part that is a local folder (`work_dirs/run`). For anything else, a hub id that is
    not in the local cache while the hub cannot be reached is one line at once, instead of
    transformers' retries (tens of seconds) and a message about connections."""
    p = Path(path)
    parts = p.parts
    looks_local = (p.is_absolute() or path.startswith((".", "~")) or p.exists() or len(parts) > 2 or "\\" in path
                   or (len(parts) == 2 and Path(parts[0]).is_dir()))
    if looks_local:
        if not p.expanduser().exists():
            raise MmtuneError(f"path {path!r} does not exist", hint="give a local directory or a hub id")
        return
    if hub_cached(path):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise MmtuneError(f"{path!r} is neither a local directory nor in the Hugging Face cache (HF_HUB_OFFLINE is set)",
                          hint="give the model's local directory, or download it with the hub reachable")
    host = hub_host()
    if not hub_reachable(host):
        raise MmtuneError(f"{path!r} is not a local directory, and the Hugging Face hub ({host}) cannot be reached to "
                          "download it", hint="check the path; give a local directory, or set HF_HUB_OFFLINE=1 to "
                                              "use only models already in the cache")


def hub_cached(repo_id: str) -> bool:
    """Whether the hub cache holds a snapshot of the model repo."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def hub_host() -> str:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


@functools.lru_cache(maxsize=None)
def hub_reachable(host: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the hub opens within `timeout` seconds (no request is sent)."""
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_pretrained(loader, source, what: str, *args, hint: str | None = None, **kwargs):
    """`loader.from_pretrained(*args, source, **kwargs)` (a transformers Auto class or model class,
    or a peft class), with the path checked first and a failure to load turned into one user-error
    line: "cannot load WHAT from SOURCE: the reason". Checkpoints mmtune loads natively (InternLM2)
    never run their own code; a failure inside a checkpoint's own code says so (models/remote_code.py)."""
    source = str(source)
    check_source(source)
    kwargs = remote_code.native_instead_of_remote(source, kwargs)
    try:
        return loader.from_pretrained(*args, source, **kwargs)
    except (OSError, ValueError) as e:
        raise MmtuneError(f"cannot load {what} from {source!r}: {e}".splitlines()[0], hint=hint) from None
    except Exception as e:  # noqa: BLE001 - a missing package or the checkpoint's own code: the user's to fix
        error = remote_code.load_error(e, what, source)
        if error is None:
            raise
        raise error from None


def load_tokenizer(model_cfg, path: str | None = None):
    from transformers import AutoTokenizer

    source = path or model_cfg.tokenizer or model_cfg.path
    tok = load_pretrained(AutoTokenizer, source, "the tokenizer", trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        # Padding positions are masked out of attention and loss; any existing token will do.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def check_bitsandbytes(device: str) -> None:
    """Fail early, before any weights load, when 4-bit quantization cannot run on `device`."""
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001 - any import failure means the same to the user
        raise MmtuneError(f"QLoRA needs bitsandbytes, which cannot be imported: {e}", hint="pip install 'mmtune[qlora]' (or bitsandbytes)") from None
    try:
        layer = bnb.nn.Linear4bit(16, 16, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to(device)
        layer(torch.zeros(1, 16, device=device))
    except Exception as e:  # noqa: BLE001
        raise MmtuneError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit layers on {device}: {e}",
            hint="use method.type: lora, or a device bitsandbytes supports",
        ) from None


def load_causal_lm(model_cfg, *, precision: str = "fp32", quantize_4bit: bool = False, device: str = "cpu", path: str | None = None):
    """The base LM, on `device`, in the dtype the precision asks for (weights in fp32 for fp16 AMP)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    source = path or model_cfg.path
    compute_dtype = PRECISION_DTYPES[precision]
    if model_cfg.dtype != "auto":
        dtype = DTYPES[model_cfg.dtype]
    else:
        # fp16 mixed precision keeps fp32 master weights; bf16 trains in bf16 directly.
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kwargs = dict(dtype=dtype, trust_remote_code=model_cfg.trust_remote_code)
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if quantize_4bit:
        check_bitsandbytes(device)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
        kwargs["device_map"] = {"": device}
    model = load_pretrained(AutoModelForCausalLM, source, "the model", **kwargs)
    if not quantize_4bit:
        model.to(device)
    elif device == "cpu":
        keep_4bit_layers_unpacked(model)  # sample chats must not repack what trains (see there)
    return model


def keep_4bit_layers_unpacked(model) -> int:
    """Keep bitsandbytes' generic CPU kernel for every 4-bit layer of a model that trains.

    In eval mode on an AVX512-BF16 CPU, bitsandbytes repacks a Linear4bit's weights for a faster
    inference kernel (`gemv_4bit`), in place and for good. That kernel has no backward: once a sample
    chat (a no-grad forward in eval mode) has repacked the layers, training goes through it and the
    gradients that flow back through the frozen base layers are silently wrong (torch warns "an
    autograd kernel was not registered"). It also needs in_features divisible by 64, so a 352-wide
    MLP crashes the first sample chat outright. Returns how many layers were switched."""
    import bitsandbytes as bnb

    kept = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            kept += 1
    return kept
