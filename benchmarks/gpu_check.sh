#!/usr/bin/env bash
# The GPU check (docs/gpu.md) on a GPU machine (H100/H200), in one command that ends
# within BUDGET_S (450) + ~2 minutes (the last case's overrun, imports, pip):
# benchmarks/gpu_check.py (the device's ceilings, then the
# three systems at the lesson's sizes in bf16, the Darknet at batch 512 in bf16 and fp16,
# fast.ai's DAWNBench WRN-22; PyTorch AMP eager and compiled beside them where torch is
# importable), most important first, within BUDGET_S seconds.
# Writes gpu.txt, log.txt (the tables), stderr.txt, ceilings.json, results.jsonl and, if a
# case failed, errors.txt into ${OUT:-gpu_check}/. Arguments go to gpu_check.py (try
# `--smoke --notorch` on any machine).
# Where ml_collections is missing (as on the H200 machine of docs/gpu.md), carry it as a
# wheel in .whl/
# (docs/gpu.md): this script installs what .whl/ holds first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
budget="${BUDGET_S:-450}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import jax, sys; print(sys.version, jax.__version__, jax.devices())" \
  >> "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
# The driver skips cases that would not fit in the budget; the timeout is a backstop.
timeout $((budget + 90)) python3 -m benchmarks.gpu_check --out "$out" --budget_s "$budget" "$@" \
  2> "$out/stderr.txt" | tee "$out/log.txt"
echo "exit status: ${PIPESTATUS[0]}"
tail -c 8000000 "$out/stderr.txt" > "$out/stderr.tmp" && mv "$out/stderr.tmp" "$out/stderr.txt"
grep -v "^[WI][0-9]\{4\} " "$out/stderr.txt" | tail -n 15
