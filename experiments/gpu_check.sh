#!/usr/bin/env bash
# The GPU benchmark, ready for a session that is lent a GPU (H100/H200): the three systems
# at the lesson's sizes in bf16 and fp16, plus the Darknet at batch 512, each timed over
# full training steps by experiments/benchmark.py (images/s, step time, compile time, peak
# memory, share of the chip's bf16 peak; PyTorch side by side where torch is importable).
# Writes one log per line below into ${OUT:-gpu_check}/. Budget: well under 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
python -c "import jax; print(jax.__version__, jax.devices())" > "$out/jax.txt" 2>&1
run() {  # name, then benchmark arguments
  local name=$1; shift
  timeout 240 python -m experiments.benchmark "$@" --steps 20 > "$out/$name.log" 2>&1 \
    || echo "FAILED or timed out: $*" >> "$out/$name.log"
  tail -n 8 "$out/$name.log"
}
run all_bf16 all --precision bf16
run darknet_fp16 darknet --precision fp16
run darknet_b512_bf16 darknet --batch 512 --precision bf16
run wrn22_dawnbench_fp16 darknet --variant dawnbench --precision fp16
