#!/usr/bin/env bash
# The GPU checks of issues #5 and #6 on a lent GPU machine, one device call per step (each well
# inside the 10-minute limit of a call). Prepare here first: `bash bench/gpu/prepare.sh`; then, with
# the device tool's `run` (command, carry):
#
#   bash bench/gpu/check.sh tests          carry .gpu/whl .gpu/whl_extra .gpu/assets   ~3 min
#   bash bench/gpu/check.sh memory         carry .gpu/whl .gpu/whl_extra .gpu/assets   ~5 min
#   bash bench/gpu/check.sh speed 0.5b     carry .gpu/whl .gpu/whl_lf .gpu/assets .gpu/peer   ~6 min
#   bash bench/gpu/check.sh speed 1.5b     (same carry)                                 ~8 min
#
# tests:  the gpu-marked tests (bf16 LoRA/full and QLoRA training on CUDA, the memory savers and the
#         varlen packed attention on CUDA kernels)
# memory: measured peak GPU memory vs `mmtune estimate-memory`, no DeepSpeed / ZeRO-2 / ZeRO-3, LoRA and full
# speed:  mmtune vs the plain Trainer and LLaMA-Factory, tokens/s, memory, MFU (bench/gpu/speed.py)
# Tables go to stdout (the call's output tail); files to $OUT (at most 8 come back).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
step=${1:?usage: check.sh tests|memory|speed SIZE}
export PYTHONUNBUFFERED=1

install() {  # wheels of $1 into $2 (the image has no package index)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl \
    || { echo "installing $1 failed"; exit 3; }
}
install .gpu/whl /tmp/site
[ -d .gpu/whl_extra ] && [ "$step" != speed ] && install .gpu/whl_extra /tmp/site
export PYTHONPATH="$PWD:/tmp/site"

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
python3 - <<'PY'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "|", torch.cuda.get_device_name(0))
for name in ("transformers", "peft", "accelerate", "datasets", "deepspeed", "bitsandbytes", "liger_kernel"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # report, do not stop: the step says what it needs
        print(f"  {name}: not importable ({type(e).__name__}: {e})")
try:
    from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    print("  torch.nn.attention.varlen: yes")
except ImportError:
    print("  torch.nn.attention.varlen: no")
PY

case "$step" in
  tests)
    python3 -m pytest -q -p no:warnings -m gpu tests/gpu tests/models/test_varlen_attention.py 2>&1 | tee "$OUT/tests.txt"
    ;;
  memory)
    python3 bench/gpu/memory.py --out "$OUT" "${@:2}"
    ;;
  speed)
    size=${2:?usage: check.sh speed 0.5b|1.5b [speed.py options]}
    install .gpu/whl_lf /tmp/site_lf
    LF_SITE=/tmp/site_lf python3 bench/gpu/speed.py --size "$size" --out "$OUT" "${@:3}"
    ;;
  *)
    echo "unknown step $step (tests | memory | speed SIZE)"; exit 2
    ;;
esac
