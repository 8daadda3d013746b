r"""Speed of full training steps on whatever devices exist.

  python -m experiments.benchmark darknet [--batch 512] [--precision bf16] [--steps 50]
  python -m experiments.benchmark wgan [--variant lsun]
  python -m experiments.benchmark cyclegan [--variant horse2zebra]
  python -m experiments.benchmark all          # one table, the lesson's sizes

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

from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import parallel
from jaxgan.data import unaligned
from jaxgan.data.classification import ImageClassificationData
from jaxgan.train import cyclegan, darknet, wgan

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


def with_overrides(config, **fields):
  """Sets the given config fields, skipping those passed as None (flags left unset)."""
  with config.unlocked():
    for name, value in fields.items():
      if value is not None:
        setattr(config, name, value)
  return config


def flops_of(compiled) -> float:
  """FLOPs of one call of an AOT-compiled program, from XLA's cost analysis (0 if none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _timed_compile(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- the setups
# Each takes a ConfigDict and returns (step(carry) -> carry, carry, images per step,
# FLOPs per step, compile seconds).

def darknet_setup(config):
  """A Darknet training step: batch gather, flip/pad/crop, forward, backward, SGD."""
  size, channels = (28, 1) if config.dataset == "fashion_mnist" else (32, 3)
  n = config.batch_size * 4
  rng = np.random.default_rng(0)
  data = ImageClassificationData(rng.integers(0, 256, (n, size, size, channels), np.uint8),
                                 rng.integers(0, 10, (n,), np.int32), (0.5,) * channels,
                                 (0.25,) * channels, 10)
  clf = darknet.Classifier(config, parallel.make_mesh(), data, data)
  state = clf.init_state()
  batch = next(clf.batches(0))
  _, seconds = _timed_compile(lambda: clf.compile(state, batch))
  step = lambda s: clf.train_step(s, batch)[0]
  return step, state, config.batch_size, flops_of(clf.compiled_train_step), seconds


def wgan_setup(config):
  """A generator iteration: ``critic_iters`` critic steps, then the generator step."""
  wgan.validate_config(config)
  mesh = parallel.make_mesh()
  trainer = wgan.WGAN(config, mesh)
  state = trainer.init_state()
  chunks = wgan.critic_chunks(config.critic_iters, config)
  rng = np.random.default_rng(0)
  blocks = [jax.device_put(rng.integers(0, 256, trainer.block_shape(k), np.uint8),
                           trainer.block_sharding) for k in chunks]
  (critic, gen), seconds = _timed_compile(
      lambda: [p.compile() for p in trainer.lower(state, blocks[0])])
  flops = flops_of(critic) * len(chunks) + flops_of(gen)
  step = lambda s: trainer.iteration(s, blocks)[0]
  return step, state, config.critic_iters * config.batch_size, flops, seconds


def cyclegan_setup(config):
  """A CycleGAN iteration: both generators' step, the pools, both discriminators' step."""
  cyclegan.validate_config(config)
  mesh = parallel.make_mesh()
  channels = cyclegan.image_channels(config)
  rng = np.random.default_rng(0)
  size = config.data.load_size
  images = lambda: rng.integers(0, 256, (4 * config.batch_size, size, size, channels),
                                np.uint8)
  domains = unaligned.Domains(*(unaligned.ArraySource(images()) for _ in range(4)),
                              channels=channels, description="random")
  feed = unaligned.UnalignedFeed(domains, config.batch_size, config.seed, mesh)
  gan = cyclegan.CycleGAN(config, mesh, feed)
  state = gan.init_state()
  batch = next(feed.batches(0))
  _, seconds = _timed_compile(lambda: gan.compile(state, batch))
  step = lambda s: gan.train_step(s, batch)[0]
  return step, state, config.batch_size, flops_of(gan.compiled_train_step), seconds


SYSTEMS = {
    "darknet": (darknet_configs, "cifar10", darknet_setup),
    "wgan": (wgan_configs, "lsun", wgan_setup),
    "cyclegan": (cyclegan_configs, "horse2zebra", cyclegan_setup),
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


def run(name: str, variant=None, batch=None, precision=None, steps: int = 30) -> dict:
  """Times ``steps`` training steps of a system's config variant; returns the figures."""
  configs, default, setup = SYSTEMS[name]
  config = with_overrides(configs.get_config(variant or default), batch_size=batch,
                          precision=precision)
  step, carry, images_per_step, flops, compile_time = setup(config)
  for _ in range(3):  # warm-up: first calls allocate
    carry = step(carry)
  jax.block_until_ready(carry)
  start = time.perf_counter()
  for _ in range(steps):
    carry = step(carry)
  jax.block_until_ready(carry)
  step_time = (time.perf_counter() - start) / steps
  result = {
      "benchmark": name, "variant": variant or default,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
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


def print_table(results: list[dict]) -> None:
  columns = ("benchmark", "variant", "precision", "global_batch", "images_per_sec",
             "step_ms", "compile_s", "tflops_per_sec", "share_of_peak", "peak_memory_gib")
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))
  rows = [[fmt(r[c]) for c in columns] for r in results]
  widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
  print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
  for row in rows:
    print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
  print(f"devices: {results[0]['devices']}", flush=True)


def main(argv):
  names = list(SYSTEMS)
  if len(argv) != 2 or argv[1] not in names + ["all"]:
    raise app.UsageError(f"usage: python -m experiments.benchmark {{{','.join(names)},all}}")
  chosen = names if argv[1] == "all" else [argv[1]]
  variant = FLAGS.variant if len(chosen) == 1 else None
  print_table([run(name, variant, FLAGS.batch, FLAGS.precision, FLAGS.steps)
               for name in chosen])


if __name__ == "__main__":
  app.run(main)
