#!/usr/bin/env bash
# The mmtune demo: teach a tiny model who it is, on CPU, in a few minutes.
# generate self-cognition data -> LoRA fine-tune -> export -> merge -> chat, with answers before and after.
set -euo pipefail
NAME="${DEMO_NAME:-Nova}"
AUTHOR="${DEMO_AUTHOR:-the mmtune team}"
OUT=demo_out
MMTUNE="${MMTUNE:-mmtune}"
RECIPE=tiny_self_cognition_lora   # built-in recipe; `mmtune copy-cfg tiny_self_cognition_lora .` to see it

rm -rf "$OUT"
echo "== 1. a tiny Qwen2-architecture model (random weights, tokenizer trained locally)"
$MMTUNE make-tiny qwen2 "$OUT/models/tiny-qwen2"

echo "== 2. self-cognition data for '$NAME' by '$AUTHOR'"
$MMTUNE data self-cognition --name "$NAME" --author "$AUTHOR" --repeat 4 -o "$OUT/data/self_cognition.jsonl"
$MMTUNE data check "$OUT/data/self_cognition.jsonl"

echo "== 3. before fine-tuning"
$MMTUNE chat "$OUT/models/tiny-qwen2" --query "who are you?" --query "你是谁" --max-new-tokens 24 | tee "$OUT/before.txt"

echo "== 4. LoRA fine-tune"
$MMTUNE train "$RECIPE" --work-dir "$OUT/work"

echo "== 5. export the adapter to Hugging Face format, then merge it into the base model"
$MMTUNE convert to-hf "$RECIPE" "$OUT/work/final" "$OUT/hf_adapter"
$MMTUNE convert merge "$OUT/models/tiny-qwen2" "$OUT/hf_adapter" "$OUT/merged"

echo "== 6. after fine-tuning (the merged model, chat template picked from what training stored)"
$MMTUNE chat "$OUT/merged" --query "who are you?" --query "你是谁" --max-new-tokens 60 | tee "$OUT/after.txt"

if grep -q "$NAME" "$OUT/after.txt"; then
  echo "== demo OK: after fine-tuning the model answers as $NAME (loss curve: $OUT/work/loss.png)"
else
  echo "== demo FAILED: the answers after fine-tuning do not mention $NAME" >&2
  exit 1
fi
