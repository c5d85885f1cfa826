#!/bin/bash
# peak RSS: plain Trainer in its own venv and in mmtune's; mmtune full packed / unpacked / packed without
# train.fused_layers (mmtune's venv, which has the test extras: bitsandbytes, deepspeed); mmtune full packed
# in a lean venv (`pip install -e .`, no extras: what a LoRA / full user installs).
root=$(cd "$(dirname "$0")/.." && pwd)
# usage: [RUNS="hf_own mm_full_pack_lean ..."] bench/rss_same_env.sh [WORK_DIR] > results.jsonl   (~20 min)
# needs: the peers as bench/README.md sets them up; LEAN_VENV (default /tmp/lean): python3 -m venv /tmp/lean &&
#   /tmp/lean/bin/pip install torch==2.13.0 && /tmp/lean/bin/pip install -c constraints.txt -e .
out=${1:-/tmp/rss}; mkdir -p "$out"; cd "$out"
lean=${LEAN_VENV:-/tmp/lean}
for rep in 1 2 3; do
  for run in ${RUNS:-hf_own hf_mmvenv mm_full_pack mm_full mm_full_pack_unfused mm_full_pack_lean}; do
    rm -rf w && mkdir w
    case $run in
      hf_own) CUDA_VISIBLE_DEVICES= /tmp/peer/hf/bin/python /work/shared/peer-bench/baseline_hf.py /tmp/peer/assets w/o ;;
      hf_mmvenv) CUDA_VISIBLE_DEVICES= "$root"/.venv/bin/python /work/shared/peer-bench/baseline_hf.py /tmp/peer/assets w/o ;;
      mm_full_pack_lean) MMTUNE_CACHE=w/c BENCH_WORK_DIR=w/o CUDA_VISIBLE_DEVICES= "$lean"/bin/python "$root"/bench/train_throughput.py --worker mm_full_pack --assets /tmp/peer/assets --steps 60 --device cpu ;;
      mm_*) MMTUNE_CACHE=w/c BENCH_WORK_DIR=w/o CUDA_VISIBLE_DEVICES= "$root"/.venv/bin/python "$root"/bench/train_throughput.py --worker $run --assets /tmp/peer/assets --steps 60 --device cpu ;;
    esac 2>/dev/null | grep '^RESULT' | sed "s/^RESULT /{\"name\": \"$run\", \"rep\": $rep, /; s/, {/, /"
  done
done
