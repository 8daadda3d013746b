r"""Speed of full training steps on whatever devices exist.

  python -m experiments.benchmark darknet [--batch 512] [--precision bf16] [--steps 50]
  python -m experiments.benchmark wgan [--variant lsun]
  python -m experiments.benchmark cyclegan [--variant horse2zebra]

Prints images/s, step time, compile time, peak device memory, and the FLOP/s that XLA's
cost analysis implies, with the share of the device's peak where that peak is known.
The inputs are random uint8 images of the real shape (speed does not depend on their
content); the step is the real one, data-set gather and augmentation included.
This, not a timed test, is where jaxgan's speed figures come from.
"""

import time

import jax
import numpy as np
from absl import app, flags

from experiments.configs import darknet as darknet_configs
from jaxgan import parallel
from jaxgan.data.classification import ImageClassificationData
from jaxgan.train import common, darknet

flags.DEFINE_integer("batch", None, "Global batch size (default: the config's).")
flags.DEFINE_enum("precision", None, ["fp32", "bf16", "fp16"], "Compute precision.")
flags.DEFINE_integer("steps", 30, "Timed steps after the warm-up.")
flags.DEFINE_string("variant", None, "Config variant (default: the system's main one).")
FLAGS = flags.FLAGS

# Dense bf16/fp16 peak of one chip, FLOP/s, from the makers' data sheets.
PEAK_FLOPS_16BIT = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "V100": 125e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def device_peak(precision: str):
  if precision == "fp32":
    return None
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_FLOPS_16BIT.items():
    if name.lower() in kind.lower():
      return peak * jax.device_count()
  return None


def peak_memory_bytes():
  try:
    return max(d.memory_stats().get("peak_bytes_in_use", 0) for d in jax.local_devices())
  except Exception:  # CPU devices keep no memory statistics
    return None


def darknet_benchmark(variant, batch, precision):
  """Returns (step(state) -> state, state, images per step, compiled executable)."""
  config = common.with_overrides(darknet_configs.get_config(variant or "cifar10"),
                                 batch_size=batch, precision=precision)
  size, channels = (28, 1) if config.dataset == "fashion_mnist" else (32, 3)
  n = config.batch_size * 4
  rng = np.random.default_rng(0)
  data = ImageClassificationData(rng.integers(0, 256, (n, size, size, channels), np.uint8),
                                 rng.integers(0, 10, (n,), np.int32), (0.5,) * channels,
                                 (0.25,) * channels, 10)
  clf = darknet.Classifier(config, parallel.make_mesh(), data, data)
  state = clf.init_state()
  perm = clf.epoch_permutation(state, 0)
  totals = clf.zero_totals()
  compile_time = clf.compile(state, perm, totals)

  def step(carry):
    s, t = carry
    return clf.train_step(s, perm, t)

  return step, (state, totals), config.batch_size, clf.compiled_train_step, compile_time, config


def wgan_benchmark(variant, batch, precision):
  from jaxgan.train import wgan  # one generator iteration: its critic steps + the G step
  return wgan.benchmark_setup(variant, batch, precision)


def cyclegan_benchmark(variant, batch, precision):
  from jaxgan.train import cyclegan  # one iteration: both generators, both discriminators
  return cyclegan.benchmark_setup(variant, batch, precision)


BENCHMARKS = {"darknet": darknet_benchmark, "wgan": wgan_benchmark,
              "cyclegan": cyclegan_benchmark}


def run(name: str, variant=None, batch=None, precision=None, steps: int = 30) -> dict:
  step, carry, images_per_step, compiled, compile_time, config = BENCHMARKS[name](
      variant, batch, precision)
  for _ in range(3):  # warm-up: first calls allocate
    carry = step(carry)
  jax.block_until_ready(carry)
  start = time.perf_counter()
  for _ in range(steps):
    carry = step(carry)
  jax.block_until_ready(carry)
  step_time = (time.perf_counter() - start) / steps
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  result = {
      "benchmark": name, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "precision": config.precision, "global_batch": images_per_step,
      "images_per_sec": images_per_step / step_time, "step_ms": 1e3 * step_time,
      "compile_s": compile_time, "peak_memory_gib": None, "tflops_per_sec": None,
      "share_of_peak": None,
  }
  mem = peak_memory_bytes()
  if mem:
    result["peak_memory_gib"] = mem / 2**30
  if flops:
    # cost_analysis counts one device's program; every device runs its own copy.
    total_flops = flops * jax.device_count()
    result["tflops_per_sec"] = total_flops / step_time / 1e12
    peak = device_peak(config.precision)
    if peak:
      result["share_of_peak"] = total_flops / step_time / peak
  return result


def main(argv):
  if len(argv) != 2 or argv[1] not in BENCHMARKS:
    raise app.UsageError(f"usage: python -m experiments.benchmark {{{','.join(BENCHMARKS)}}}")
  result = run(argv[1], FLAGS.variant, FLAGS.batch, FLAGS.precision, FLAGS.steps)
  for key, value in result.items():
    print(f"{key:>16}: {value:.4g}" if isinstance(value, float) else f"{key:>16}: {value}")


if __name__ == "__main__":
  app.run(main)
