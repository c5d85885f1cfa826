#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what the offline GPU machine lacks, for bench/gpu/check.sh.
# Run here, from the repository root, with network access to PyPI:   bash bench/gpu/prepare.sh
#
#   .gpu/whl/      mmtune's own needs beyond the machine's image (transformers, peft, datasets,
#                  pydantic at the versions of constraints.txt; liger-kernel)
#   .gpu/whl_extra/ deepspeed, and bitsandbytes cut to its CUDA 13 libraries
#   .gpu/whl_lf/   LLaMA-Factory 0.9.5 and the versions it pins (bench/gpu/lf_requirements.txt)
#   .gpu/assets/   the peer-bench kit's tokenizer and 2,000 conversations (built if missing)
#   .gpu/peer/     the kit's LLaMA-Factory wrapper and config (run_lf.py, lf_sft.yaml)
#
# The machine runs Python 3.12 on x86-64 (/work/.library/device/KINDS.md): compiled wheels are
# fetched for that, whatever this machine runs. Each device call carries at most 64 MiB; check.sh's
# steps name what they need (see the table printed at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
KIT=${KIT:-../shared/peer-bench}
ASSETS=${ASSETS:-/tmp/peer/assets}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# the versions the suite passed on (constraints.txt); regex: transformers checks its version at import
pin() { grep -i -m1 -E "^${1//-/[-_]}==" constraints.txt || { echo "prepare.sh: $1 is not in constraints.txt" >&2; exit 1; }; }
CORE=(liger-kernel==0.8.5)
for name in transformers tokenizers peft datasets dill multiprocess pydantic pydantic-core annotated-types \
            typing-inspection hjson regex sentencepiece; do
  CORE+=("$(pin "$name")")
done

rm -rf .gpu/whl .gpu/whl_extra .gpu/whl_lf .gpu/peer && mkdir -p .gpu/whl .gpu/whl_extra .gpu/whl_lf .gpu/peer .gpu/tmp
for req in "${CORE[@]}"; do
  "$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/whl "$req"
done
# DeepSpeed is published as an sdist: build its pure-Python wheel (ops compile on first use there)
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl_extra "$(pin deepspeed)"
# bitsandbytes ships libraries for every CUDA and ROCm release (43 MB); the machine's torch is cu130
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/tmp "$(pin bitsandbytes)"
"$PY" - .gpu/tmp/bitsandbytes-*.whl .gpu/whl_extra <<'PYEOF'
import re, sys, zipfile
from pathlib import Path
src, out = Path(sys.argv[1]), Path(sys.argv[2]) / Path(sys.argv[1]).name
drop = re.compile(r"libbitsandbytes_(cuda1[12]\d|rocm\d+)\.so$")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
    for item in zin.infolist():
        if drop.search(item.filename):
            continue
        data = zin.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"\n".join(l for l in data.split(b"\n") if not drop.search(l.split(b",")[0].decode())) + b"\n"
        zout.writestr(item, data)
print(f"bitsandbytes: {src.stat().st_size >> 20} MiB -> {out.stat().st_size >> 20} MiB (CUDA 13 and CPU libraries)")
PYEOF
rm -rf .gpu/tmp
sed 's/[[:space:]]*#.*//' bench/gpu/lf_requirements.txt | grep -v '^[[:space:]]*$' | while read -r req; do
  "$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .gpu/whl_lf "$req"
done

if [ ! -f "$ASSETS/data/messages.jsonl" ]; then
  "$PY" "$KIT/make_assets.py" "$ASSETS"
fi
rm -rf .gpu/assets && mkdir -p .gpu/assets/data
cp "$ASSETS"/*.json "$ASSETS"/*.jinja .gpu/assets/ 2>/dev/null || cp "$ASSETS"/*.json .gpu/assets/
rm -f .gpu/assets/config.json .gpu/assets/generation_config.json  # the GPU models are built there from configs
cp "$ASSETS"/data/* .gpu/assets/data/
cp "$KIT/run_lf.py" "$KIT/lf_sft.yaml" .gpu/peer/

echo
echo "carried per step of bench/gpu/check.sh (limit 64 MiB with the working tree):"
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
for set in "tests: .gpu/whl .gpu/whl_extra .gpu/assets" "memory: .gpu/whl .gpu/whl_extra .gpu/assets" \
           "speed: .gpu/whl .gpu/whl_lf .gpu/assets .gpu/peer"; do
  name=${set%%:*}; dirs=${set#*: }
  bytes=$(du -cb $dirs | tail -1 | cut -f1)
  echo "  $name: $(( (bytes + tree) >> 20 )) MiB ($dirs + tracked files)"
done
