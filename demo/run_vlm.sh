#!/usr/bin/env bash
# The mmtune vision demo: a tiny LLaVA (Qwen2 + CLIP) learns the colours of shapes, on CPU, in a few minutes.
# synthetic shapes -> projector pretrain -> finetune -> export -> chat + MMBench-format eval, before and after.
set -euo pipefail
OUT=demo_out                        # the recipes tiny_llava_{pretrain,finetune} read their paths from here
MMTUNE="${MMTUNE:-mmtune}"
QUESTIONS="${DEMO_QUESTIONS:-colour}"   # question kinds: colour, count, shape, position, existence
HELDOUT=(heldout_00000.png heldout_00001.png heldout_00002.png heldout_00003.png)

rm -rf "$OUT/shapes" "$OUT/work_pretrain" "$OUT/work_finetune" "$OUT/llava_hf" "$OUT/vlm_eval"
mkdir -p "$OUT/vlm_eval"
echo "== 1. tiny models: a Qwen2-architecture LLM and a CLIP vision encoder (random weights, built locally)"
$MMTUNE make-tiny qwen2 "$OUT/models/tiny-qwen2"
$MMTUNE make-tiny clip "$OUT/models/tiny-clip"

echo "== 2. synthetic shapes: captions (pretrain), '$QUESTIONS' questions (finetune), held-out images + MMBench TSVs"
$MMTUNE data shapes -o "$OUT/shapes" --n 600 --seed 0 --questions "$QUESTIONS"
$MMTUNE data check "$OUT/shapes/finetune.json" --image-folder "$OUT/shapes" --config tiny_llava_finetune

echo "== 3. pretrain: the projector alone learns to map image features into the LLM (LLM and encoder frozen)"
$MMTUNE train tiny_llava_pretrain --work-dir "$OUT/work_pretrain"

ask() {  # ask MODEL-ARGS... the colour of each held-out image, in one chat session (/image switches); one line per image
  local replies
  replies=$(for img in "${HELDOUT[@]}"; do printf '/image %s\nWhat colour is the shape?\n' "$OUT/shapes/images/$img"; done |
    $MMTUNE chat "$@" --max-new-tokens 8 | sed -n 's/^.*Assistant: //p' | awk '{print ($0 == "" ? "(no answer)" : $0)}')
  paste -d' ' <(printf '%s:\n' "${HELDOUT[@]}") <(printf '%s\n' "$replies")
}
BEFORE=("$OUT/models/tiny-qwen2" --visual-encoder "$OUT/models/tiny-clip" --llava "$OUT/work_pretrain/final")

echo "== 4. before finetune: held-out images (never trained on) and the MMBench-format dev set"
echo "truth: $(python3 -c "
import json, sys
records = {r['image']: r for r in json.load(open('$OUT/shapes/heldout.json'))}
print(', '.join(f\"{n}={records['images/' + n]['conversations'][1]['value']}\" for n in sys.argv[1:]
                if 'images/' + n in records))" "${HELDOUT[@]}")"
ask "${BEFORE[@]}" | tee "$OUT/vlm_eval/before.txt"
$MMTUNE eval mmbench "${BEFORE[@]}" --data-path "$OUT/shapes/mmbench_dev.tsv" \
  --work-dir "$OUT/vlm_eval/mmbench_before" --no-progress

echo "== 5. finetune from the pretrained projector: projector + LLM on the question-answer conversations"
$MMTUNE train tiny_llava_finetune --work-dir "$OUT/work_finetune"

echo "== 6. export: LLM, vision encoder and projector as one transformers LlavaForConditionalGeneration"
$MMTUNE convert to-hf tiny_llava_finetune "$OUT/work_finetune/final" "$OUT/llava_hf"

echo "== 7. after finetune (the exported model)"
ask "$OUT/llava_hf" | tee "$OUT/vlm_eval/after.txt"
$MMTUNE eval mmbench "$OUT/llava_hf" --data-path "$OUT/shapes/mmbench_dev.tsv" \
  --work-dir "$OUT/vlm_eval/mmbench_after" --no-progress

python3 - "$OUT/vlm_eval" <<'EOF'
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
before, after = (json.loads((root / f"mmbench_{s}" / "summary.json").read_text()) for s in ("before", "after"))
print(f"== MMBench-format dev accuracy on held-out images: before {before['overall']:.2f} -> after "
      f"{after['overall']:.2f} ({after['n']} questions, 4 options each for colour)")
if after["overall"] < 0.5 or after["overall"] < before["overall"] + 0.2:
    sys.exit("== vision demo FAILED: finetuning did not lift held-out accuracy well above chance")
print(f"== vision demo OK (loss curves: demo_out/work_pretrain/loss.png, demo_out/work_finetune/loss.png)")
EOF
