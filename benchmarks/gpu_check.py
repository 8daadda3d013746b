r"""The GPU check: jaxgan's figures on a GPU in one run that fits a short loan of one.

  python -m benchmarks.gpu_check --out gpu_check --budget_s 450
  python -m benchmarks.gpu_check --smoke --notorch   # the mechanics, on any machine

First the device's two ceilings, measured: an 8192^3 bf16 matrix product and a
device-to-device copy. Then ``CASES``, most important first, each through
``benchmarks.benchmark.run`` (jaxgan's step, and PyTorch's eager and compiled steps where
torch is importable). A case whose estimate no longer fits in ``--budget_s`` is skipped
and said so; a case that fails leaves its traceback in OUT/errors.txt and the rest go on.
Each result is printed as it finishes and appended to OUT/results.jsonl, so a run cut
short still leaves what it measured. Last, the whole table and what it means for the
GPU targets (docs/gpu.md): the Darknet's 30 CIFAR-10 epochs in step time, the share of
the measured bf16 peak, CycleGAN's 200 horse2zebra epochs in step time, and the ratios
to PyTorch.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback

from absl import app, flags

from benchmarks import benchmark, common
from jaxgan import ops

flags.DEFINE_boolean("smoke", False, "Every case at its system's smoke config, fp32, 2 "
                     "steps: checks this script anywhere in a minute or two.")
FLAGS = flags.FLAGS
OUT, BUDGET_S = "gpu_check", 450.0  # --out (a folder) and --budget_s when not given

CIFAR10_TRAIN_IMAGES = 50_000
DARKNET_EPOCHS = 30
HORSE2ZEBRA_EPOCH_ITERATIONS = 1334  # max(|A|, |B|) (docs/lesson.md, "CycleGAN")
CYCLEGAN_EPOCHS = 200


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  system: str
  variant: str | None = None
  batch: int | None = None
  precision: str | None = None
  steps: int = 30
  torch: bool = True  # PyTorch eager beside jaxgan
  torch_compile: bool = True  # and torch.compile (a minute or more per system)
  estimate_s: float = 120.0  # compiles and timing, for the budget
  formulation: str | None = None  # jaxgan.ops.force this one on every conv ("lax": none)


# Most important first: a run cut short keeps the headline figures. Each "_unpadded"
# case is its system's step with every conv as plain lax (no zero channels, see
# jaxgan.ops.GPU_CHANNEL_MULTIPLE): the A/B for that formulation.
CASES = (
    Case("cyclegan_bf16", "cyclegan", "horse2zebra", None, "bf16", 30, estimate_s=200),
    Case("cyclegan_bf16_unpadded", "cyclegan", "horse2zebra", None, "bf16", 30,
         torch=False, estimate_s=60, formulation="lax"),
    Case("darknet_b512_bf16", "darknet", "cifar10", 512, "bf16", 50, estimate_s=150),
    Case("darknet_b512_bf16_unpadded", "darknet", "cifar10", 512, "bf16", 50, torch=False,
         estimate_s=45, formulation="lax"),
    Case("wgan_bf16", "wgan", "lsun", None, "bf16", 20, estimate_s=150),
    Case("wgan_bf16_unpadded", "wgan", "lsun", None, "bf16", 20, torch=False, estimate_s=40,
         formulation="lax"),
    Case("darknet_b512_fp16", "darknet", "cifar10", 512, "fp16", 50,
         torch_compile=False, estimate_s=60),
    Case("darknet_b256_bf16", "darknet", "cifar10", None, "bf16", 50, torch=False,
         estimate_s=40),
    Case("wrn22_dawnbench_fp16", "darknet", "dawnbench", None, "fp16", 30, torch=False,
         estimate_s=60),
)


def run_case(case: Case, with_torch: bool) -> dict:
  with ops.force(case.formulation) if case.formulation else contextlib.nullcontext():
    return benchmark.run(case.system, case.variant, case.batch, case.precision, case.steps,
                         with_torch=with_torch and case.torch,
                         torch_compile=case.torch_compile)


def named_by_case(result: dict) -> dict:
  """The result with its case's name in the variant column (a padded case and its
  "_unpadded" twin share a variant)."""
  case = result.get("case", result["variant"])
  return dict(result, variant=case,
              torch=[dict(row, variant=case) for row in result.get("torch", [])])


def smoke(case: Case) -> Case:
  return dataclasses.replace(case, variant="smoke", batch=None, precision="fp32", steps=2,
                             torch_compile=False)


def measure_ceilings(size: int = 8192, copy_gib: float = 2.0, repeats: int = 10,
                     warmup: int = 100) -> dict:
  """bf16 matmul TFLOP/s and copy bandwidth (bytes read + written) on device 0."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def median_seconds(fn, *args):
    for _ in range(max(1, warmup)):  # and let the clocks rise: they idle low
      out = fn(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]

  keys = jax.random.split(jax.random.key(0), 3)
  a, b = (jax.random.normal(k, (size, size), jnp.bfloat16) for k in keys[:2])
  matmul_s = median_seconds(jax.jit(jnp.matmul), a, b)
  n = int(copy_gib * 2**30) // 4
  x = jax.random.normal(keys[2], (n,), jnp.float32)
  copy_s = median_seconds(jax.jit(lambda v: v * 1.0001), x)  # reads and writes every byte
  return {"device": jax.devices()[0].device_kind, "jax": jax.__version__,
          "bf16_matmul_tflops": 2 * size**3 / matmul_s / 1e12,
          "copy_tb_per_s": 2 * 4 * n / copy_s / 1e12}


def implications(results: list[dict], ceilings: dict | None) -> list[str]:
  """The GPU targets (docs/gpu.md), read off the results."""
  lines = []
  for r in results:
    label = (f"{r.get('case') or r['variant']}: {r['benchmark']} {r['precision']} batch "
             f"{r['global_batch']}")
    if r["benchmark"] == "darknet":
      seconds = DARKNET_EPOCHS * CIFAR10_TRAIN_IMAGES / r["images_per_sec"]
      lines.append(f"{label}: {DARKNET_EPOCHS} CIFAR-10 epochs in {seconds:.1f} s of step "
                   "time (target < 20 s)")
    if r["benchmark"] == "cyclegan":
      hours = (CYCLEGAN_EPOCHS * HORSE2ZEBRA_EPOCH_ITERATIONS * r["step_ms"] / 1e3 / 3600
               / max(1, r["global_batch"]))
      lines.append(f"{label}: {CYCLEGAN_EPOCHS} horse2zebra epochs in {hours:.2f} h of "
                   "step time (target < 2 h)")
    if r.get("tflops_per_sec") and ceilings and r["precision"] != "fp32":
      share = r["tflops_per_sec"] / ceilings["bf16_matmul_tflops"]
      lines.append(f"{label}: {r['tflops_per_sec']:.1f} TFLOP/s, {share:.1%} of the measured "
                   f"{ceilings['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matmul")
    base = [b for b in results if r.get("case", "").endswith("_unpadded")
            and b.get("case") == r["case"].removesuffix("_unpadded")]
    if base:
      lines.append(f"{label}: zero channels to multiples of 8 (jaxgan.ops 'padded') "
                   f"{r['step_ms']:.3g} -> {base[0]['step_ms']:.3g} ms a step: "
                   f"{r['step_ms'] / base[0]['step_ms']:.2f}x")
    for row in r.get("torch", []):
      lines.append(f"{label}: {r['images_per_sec']:.4g} images/s against {row['impl']} "
                   f"{row['images_per_sec']:.4g}: {row['vs_torch']:.2f}x")
  return lines


def main(argv):
  del argv
  start = time.perf_counter()
  out, budget_s = common.value("out", OUT), common.value("budget_s", BUDGET_S)
  os.makedirs(out, exist_ok=True)
  with_torch = benchmark.torch_available()
  if FLAGS.torch is not None:  # benchmark's --torch flag, shared
    with_torch = FLAGS.torch and with_torch
  if with_torch:
    benchmark.share_with_torch()
  cases = [smoke(c) if FLAGS.smoke else c for c in CASES]
  if FLAGS.cases:
    unknown = set(FLAGS.cases) - {c.name for c in cases}
    if unknown:
      raise app.UsageError(f"--cases: unknown {sorted(unknown)}; known: "
                           f"{[c.name for c in cases]}")
    cases = [c for c in cases if c.name in FLAGS.cases]
  ceilings = None
  if not FLAGS.smoke:
    ceilings = measure_ceilings()
    with open(os.path.join(out, "ceilings.json"), "w") as f:
      json.dump(ceilings, f)
    print(f"ceilings: {ceilings}", flush=True)
  results = []
  for case in cases:
    elapsed = time.perf_counter() - start
    if elapsed + case.estimate_s > budget_s:
      print(f"{case.name}: skipped, {elapsed:.0f} s + its ~{case.estimate_s:.0f} s would "
            f"pass --budget_s {budget_s:.0f}", flush=True)
      continue
    print(f"{case.name}: starting at {elapsed:.0f} s", flush=True)
    try:
      result = run_case(case, with_torch)
    except Exception:  # pylint: disable=broad-except  (record it; the other cases go on)
      with open(os.path.join(out, "errors.txt"), "a") as f:
        f.write(f"== {case.name}\n{traceback.format_exc()}\n")
      print(f"{case.name}: FAILED (see errors.txt): {sys.exc_info()[1]!r}"[:500], flush=True)
      continue
    result["case"] = case.name
    result["seconds"] = time.perf_counter() - start - elapsed
    results.append(result)
    with open(os.path.join(out, "results.jsonl"), "a") as f:
      f.write(json.dumps(result) + "\n")
    benchmark.print_table([named_by_case(result)])
  print(f"\n== all cases, {time.perf_counter() - start:.0f} s", flush=True)
  if results:
    benchmark.print_table([named_by_case(r) for r in results])
    print("\n".join(implications(results, ceilings)), flush=True)


if __name__ == "__main__":
  app.run(main)
