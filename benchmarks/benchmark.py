r"""Speed of full training steps on whatever devices exist.

  python -m benchmarks.benchmark darknet [--batch 512] [--precision bf16] [--steps 50]
  python -m benchmarks.benchmark wgan [--variant lsun]
  python -m benchmarks.benchmark cyclegan [--variant horse2zebra]
  python -m benchmarks.benchmark all          # one table, each system's main config
  python -m benchmarks.benchmark all --cpu_sizes --steps 3   # the lesson's sizes, fp32
  python -m benchmarks.benchmark all --cpu_sizes --steps 2 --rounds 5  # in turns, medians
  python -m benchmarks.benchmark all --notorch                # jaxgan rows only
  python -m benchmarks.benchmark all --variant smoke --steps 2  # a quick check
  python -m benchmarks.benchmark all --cpu_sizes --xla_defaults  # without jaxgan's XLA options
  python -m benchmarks.benchmark all --out rows.jsonl        # the rows as JSON lines too

Prints images/s, step time, compile time, peak device memory, and the FLOP/s that XLA's
cost analysis implies, with the share of the device's peak where that peak is known.
The inputs are random uint8 images of the real shape (speed does not depend on their
content); the step is the real one (each system's jitted program, as training builds
it), data-set gather and augmentation included.
This, not a timed test, is where jaxgan's speed figures come from.

PyTorch side by side (``--torch``, on by default when torch is importable; torch is never
a requirement and is imported only then): under each jaxgan row, the same training step
written in PyTorch from the same config (``benchmarks/torch_reference.py``) on the same
kind of device, timed the same way (3 warm-up steps, then ``--steps``; on a GPU
``torch.cuda.synchronize`` closes each timing), as "pytorch-eager" and, where a CUDA GPU
exists, "pytorch-compile" (each network in ``torch.compile``; its compile_s is the first
step, compilation included). ``vs_torch`` on a PyTorch row is jaxgan's images/s divided
by that row's: above 1, jaxgan is faster. PyTorch runs fp32, or autocast to the config's
bf16 / fp16 (fp16 with a GradScaler), convs channels-last. With PyTorch rows, the command
sets two environment variables unless they are set already: on a GPU, jaxgan preallocates
45% of the memory instead of 75% (``XLA_PYTHON_CLIENT_MEM_FRACTION``; not when
``XLA_PYTHON_CLIENT_PREALLOCATE`` is set), leaving room for PyTorch; on a CPU, PyTorch's
OpenMP threads sleep instead of spinning at barriers (``OMP_WAIT_POLICY=PASSIVE``), which
on a CPU shared with other jobs nearly doubled PyTorch's speed here.

``--rounds R``: jaxgan's step and PyTorch's are timed in R alternating rounds of
``--steps`` each, both kept built meanwhile; the figures are each one's median round, and
the footer gives the spread of the per-round ratios. On a machine whose speed drifts over
minutes (this project's CPU VMs), one round of each, minutes apart, can be off by 30%.

``--cpu_sizes``: the lesson's sizes shrunk to what a CPU times in minutes, fp32 throughout:
Darknet (the cifar10 config) on 32x32 at batch 64; a WGAN generator iteration (the lsun
config) at 64x64 with critic and generator batches of 64; one CycleGAN iteration (the horse2zebra
config, its 9-block generator) on 128x128 crops of 143x143 images at batch 1. Explicit
``--batch`` / ``--precision`` still win over them.
"""

import contextlib
import importlib.util
import json
import os
import platform
import sys
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import config as config_lib, ops, parallel
from jaxgan.data import feed, unaligned
from jaxgan.data.classification import ImageClassificationData
from jaxgan.train import cyclegan, darknet, wgan

flags.DEFINE_boolean("torch", None, "Add PyTorch rows (default: when torch is importable).")
FLAGS = flags.FLAGS
STEPS, ROUNDS = 30, 1  # --steps and --rounds when not given

# --cpu_sizes: per system, config fields (dotted for nested ones) set before the flags.
CPU_SIZES = {
    "darknet": {"batch_size": 64, "precision": "fp32"},
    "wgan": {"batch_size": 64, "gen_batch_size": 64, "precision": "fp32"},
    "cyclegan": {"data.load_size": 143, "data.crop_size": 128, "batch_size": 1,
                 "precision": "fp32"},
}

# Dense bf16/fp16 peak of one chip, FLOP/s, from the makers' data sheets.
PEAK_FLOPS_16BIT = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "V100": 125e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}


def with_overrides(config, fields: dict | None = None, **named):
  """Sets config fields (dotted names for nested ones), skipping those given as None
  (flags left unset)."""
  given = {k: v for k, v in [*(fields or {}).items(), *named.items()] if v is not None}
  return config_lib.override(config, given)


def torch_available() -> bool:
  """Whether PyTorch can be imported (found without importing it: importing is slow)."""
  return importlib.util.find_spec("torch") is not None


def flops_of(lowered) -> float:
  """FLOPs of one call of a lowered program, from XLA's cost analysis (0 if none).

  Counted on the lowered program, before XLA's passes: after them, a GPU program's
  convolutions are calls into cuDNN that the analysis counts as nothing (an H200's
  Darknet step came out at 1.3 TFLOP/s instead of ~145). The count is of the program as
  written, so it follows ``jaxgan.ops``' reformulations: on a GPU the zero channels add
  3-4% to the GAN steps' counts; on a CPU the phases skip the zeros that a transposed
  conv written as a dilated one would multiply.
  """
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _timed_compile(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- the setups
# Each takes a ConfigDict and returns (step(carry) -> carry, carry, images per step,
# FLOPs per step, compile seconds), from the programs training runs.

def _compiled(program, state, inputs):
  """A `jaxgan.train.loop.Program` lowered and compiled for ``inputs``: (call, FLOPs)."""
  lowered = program.jitted.lower(state, program.arrays, inputs)
  compiled = lowered.compile()
  return (lambda s: compiled(s, program.arrays, inputs)[0]), flops_of(lowered)


def darknet_setup(config):
  """A Darknet training step: batch gather, flip/pad/crop, forward, backward, SGD."""
  size, channels = (28, 1) if config.data.source == "fashion_mnist" else (32, 3)
  n = config.batch_size * 4
  rng = np.random.default_rng(0)
  data = ImageClassificationData(rng.integers(0, 256, (n, size, size, channels), np.uint8),
                                 rng.integers(0, 10, (n,), np.int32), (0.5,) * channels,
                                 (0.25,) * channels, 10)
  task, _ = darknet.make_task(config, parallel.make_mesh(), data, data)
  state = task.init_state()
  inputs = next(task.batches(0, state)).inputs
  (step, flops), seconds = _timed_compile(lambda: _compiled(task.step, state, inputs))
  return step, state, config.batch_size, flops, seconds


def wgan_setup(config):
  """A generator iteration: ``critic_iters`` critic steps, then the generator step."""
  wgan.validate_config(config)
  mesh = parallel.make_mesh()
  programs = wgan.make_programs(config, mesh)  # blocks of decoded images, as streamed
  state = wgan.initial_state(config, mesh)
  isize, rng = config.model.isize, np.random.default_rng(0)
  block = jax.device_put(
      rng.integers(0, 256, (config.critic_iters, config.batch_size, isize, isize,
                            config.data.channels), np.uint8),
      feed.batch_sharding(mesh, batch_axis=1))

  def build():
    critic, _ = _compiled(programs.critic, state, block)
    lowered = programs.generator.lower(state)
    generator = lowered.compile()
    # XLA's cost analysis counts a scan's body once: count one critic step's program,
    # critic_iters times.
    one_step = programs.critic.jitted.lower(state, programs.critic.arrays, block[:1])
    flops = config.critic_iters * flops_of(one_step) + flops_of(lowered)
    return (lambda s: generator(critic(s))[0]), flops

  (step, flops), seconds = _timed_compile(build)
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
  task = cyclegan.make_task(config, mesh, unaligned.make_feed(domains, config.batch_size,
                                                              config.seed, mesh))
  state = task.init_state()
  inputs = next(task.batches(0, state)).inputs
  (step, flops), seconds = _timed_compile(lambda: _compiled(task.step, state, inputs))
  return step, state, config.batch_size, flops, seconds


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


def build(name: str, variant=None, batch=None, precision=None,
          overrides: dict | None = None, xla_defaults: bool = False):
  """A system's step from its config (arguments as ``run``'s), compiled and warmed up.

  Returns the config and the setup's (step, carry, images per step, FLOPs per step,
  compile seconds), the carry 3 steps on: first calls allocate.
  """
  configs, default, setup = SYSTEMS[name]
  config = with_overrides(configs.get_config(variant or default), overrides,
                          batch_size=batch, precision=precision)
  with ops.xla_defaults() if xla_defaults else contextlib.nullcontext():
    step, carry, *rest = setup(config)
  for _ in range(3):
    carry = step(carry)
  jax.block_until_ready(carry)
  return config, (step, carry, *rest)


def run(name: str, variant=None, batch=None, precision=None, steps: int = 30,
        overrides: dict | None = None, with_torch: bool = False,
        xla_defaults: bool = False, rounds: int = 1, torch_compile: bool = True) -> dict:
  """Times ``steps`` training steps of a system's config variant; returns the figures.

  Args:
    name: a key of ``SYSTEMS``.
    variant: the config variant (default: the system's main one).
    batch, precision: override the config's batch size / precision (None: keep).
    steps: timed steps per round, after 3 warm-up steps.
    overrides: more config fields, dotted names for nested ones (``CPU_SIZES``), set
      before ``batch`` and ``precision``.
    with_torch: also time the PyTorch version of the step (``torch_steps``), eager and,
      on a CUDA GPU, compiled.
    xla_defaults: compile without ``jaxgan.ops.compiler_options`` (XLA's defaults).
    rounds: jaxgan and each PyTorch step take turns this many times; step times are
      each one's median round.
    torch_compile: with ``with_torch`` on a CUDA GPU, also the ``torch.compile`` row
      (its compilation takes a minute or more per system).

  Returns:
    jaxgan's figures (benchmark, variant, devices, precision, global_batch,
    images_per_sec, step_ms, compile_s, peak_memory_gib, tflops_per_sec, share_of_peak,
    impl, rounds) and, with ``with_torch``, "torch": the PyTorch rows, each with its
    ``vs_torch`` (jaxgan's images/s over the row's) and ``vs_torch_rounds`` (the same
    ratio in each round).
  """
  config, (step, carry, images_per_step, flops, compile_time) = build(
      name, variant, batch, precision, overrides, xla_defaults)
  mem = peak_memory_bytes()  # before PyTorch shares the device
  rivals = torch_steps(name, config, torch_compile) if with_torch else []
  times, rival_times = [], [[] for _ in rivals]
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      carry = step(carry)
    jax.block_until_ready(carry)
    times.append((time.perf_counter() - start) / steps)
    for rival, spent in zip(rivals, rival_times):
      spent.append(rival.time(steps))
  step_time = float(np.median(times))
  result = {
      "benchmark": name, "variant": variant or SYSTEMS[name][1], "impl": "jaxgan",
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "precision": config.precision, "global_batch": images_per_step,
      "images_per_sec": images_per_step / step_time, "step_ms": 1e3 * step_time,
      "compile_s": compile_time, "peak_memory_gib": None, "tflops_per_sec": None,
      "share_of_peak": None, "xla_options": "defaults" if xla_defaults else "jaxgan",
      "rounds": rounds,
  }
  if mem:
    result["peak_memory_gib"] = mem / 2**30
  if flops:
    # cost_analysis counts one device's program; every device runs its own copy.
    total_flops = flops * jax.device_count()
    result["tflops_per_sec"] = total_flops / step_time / 1e12
    peak = device_peak(config.precision)
    if peak:
      result["share_of_peak"] = total_flops / step_time / peak
  if with_torch:
    result["torch"] = [rival.row(result, spent, times)
                       for rival, spent in zip(rivals, rival_times)]
    del rivals
    release_torch_memory()  # before jaxgan's next system
  return result


def release_torch_memory() -> None:
  import torch  # pylint: disable=import-outside-toplevel  (optional; imported already)
  if torch.cuda.is_available():
    torch.cuda.empty_cache()


class TorchStep:
  """One PyTorch version of a system's step, built and warmed up, timed on demand."""

  def __init__(self, name: str, impl: str, config, compiled: bool, device,
               channels_last: bool = True):
    import torch  # pylint: disable=import-outside-toplevel  (optional)
    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

    self.name, self.impl, self.config, self.compiled = name, impl, config, compiled
    cuda = device.type == "cuda"
    self.sync = torch.cuda.synchronize if cuda else (lambda: None)
    self.step, self.images_per_step = torch_reference.STEPS[name](
        config, compile=compiled, device=device, channels_last=channels_last)
    if cuda:
      torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    self.step()  # the first call: allocation, and under torch.compile the compilation
    self.sync()
    self.first = time.perf_counter() - start
    for _ in range(2):  # warm-up to 3 steps, as jaxgan's
      self.step()
    self.sync()
    self.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    self.device = (torch.cuda.get_device_name() if cuda else
                   f"cpu, {torch.get_num_threads()} threads")

  def time(self, steps: int) -> float:
    """Seconds per step over ``steps`` steps."""
    start = time.perf_counter()
    for _ in range(steps):
      self.step()
    self.sync()
    return (time.perf_counter() - start) / steps

  def row(self, jax_result: dict, times: list[float], jax_times: list[float]) -> dict:
    step_time = float(np.median(times))
    images_per_sec = self.images_per_step / step_time
    return {
        "benchmark": self.name, "variant": jax_result["variant"], "impl": self.impl,
        "precision": self.config.precision, "global_batch": self.images_per_step,
        "images_per_sec": images_per_sec, "step_ms": 1e3 * step_time,
        "compile_s": self.first if self.compiled else None, "tflops_per_sec": None,
        "share_of_peak": None, "peak_memory_gib": self.peak_memory_gib,
        "vs_torch": jax_result["images_per_sec"] / images_per_sec,
        # Same images per step on both sides: the ratio of step times, round by round.
        "vs_torch_rounds": [t / j * jax_result["global_batch"] / self.images_per_step
                            for t, j in zip(times, jax_times)],
        "device": self.device,
    }


def torch_steps(name: str, config, compiled: bool = True) -> list[TorchStep]:
  """The PyTorch versions of one system's step: eager, and compiled on a CUDA GPU
  (unless ``compiled`` is False).

  ``config`` is the one jaxgan's step was built from. A config the PyTorch reference
  does not cover (another model, WGAN-GP) gives none and a note on stderr.
  """
  from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

  device = torch_reference.default_device()
  kinds = [("pytorch-eager", False)] + ([("pytorch-compile", True)]
                                        if compiled and device.type == "cuda" else [])
  steps = []
  for impl, compiled_kind in kinds:
    try:
      steps.append(TorchStep(name, impl, config, compiled_kind, device))
    except NotImplementedError as e:  # a config torch_reference does not cover
      print(f"{name}: no {impl} row: {e}", file=sys.stderr)
      return steps
    except Exception as e:  # pylint: disable=broad-except  (PyTorch's failure, not ours)
      # Seen on an H200 with torch 2.11: torch.compile of the DCGAN generator, channels
      # last, failed a stride assertion in a ConvTranspose weight gradient. Such a
      # failure costs its row, not jaxgan's; a compiled step gets one try in NCHW.
      print(f"{name}: {impl} failed: {e!r}"[:800], file=sys.stderr)
      release_torch_memory()
      if compiled_kind:
        import torch  # pylint: disable=import-outside-toplevel  (imported by TorchStep)
        torch._dynamo.reset()  # pylint: disable=protected-access  (drop the failed graphs)
        try:
          steps.append(TorchStep(name, impl + "-nchw", config, True, device,
                                 channels_last=False))
        except Exception as e2:  # pylint: disable=broad-except
          print(f"{name}: {impl}-nchw failed too: {e2!r}"[:800], file=sys.stderr)
  return steps


def print_table(results: list[dict]) -> None:
  """One row per result, each followed by its PyTorch rows; then the devices (and
  versions) the figures come from."""
  columns = ("benchmark", "variant", "impl", "precision", "global_batch", "images_per_sec",
             "step_ms", "compile_s", "tflops_per_sec", "share_of_peak", "peak_memory_gib",
             "vs_torch")
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("-" if v is None else str(v))
  records = [row for r in results for row in [r, *r.get("torch", [])]]
  rows = [[fmt(r.get(c)) for c in columns] for r in records]
  widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
  print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
  for row in rows:
    print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
  print(f"devices: {results[0]['devices']} (jax {jax.__version__}, {cpu_name()}); XLA "
        f"options: {results[0].get('xla_options', 'jaxgan')}", flush=True)
  torch_rows = [row for r in results for row in r.get("torch", [])]
  if torch_rows and results[0].get("rounds", 1) > 1:
    print(f"medians of {results[0]['rounds']} alternating rounds; jaxgan / PyTorch per "
          "round: " + "; ".join(
              f"{row['benchmark']} {row['impl']} {min(row['vs_torch_rounds']):.2f}-"
              f"{max(row['vs_torch_rounds']):.2f}" for row in torch_rows), flush=True)
  if torch_rows:
    import torch  # pylint: disable=import-outside-toplevel  (already imported by torch_steps)
    print(f"pytorch: {torch.__version__} on {torch_rows[0]['device']}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)


def share_with_torch() -> None:
  """Sets the environment for timing PyTorch beside jaxgan, unless set already.

  Call before JAX first touches a GPU and before torch is imported.
  """
  if not any(k in os.environ for k in ("XLA_PYTHON_CLIENT_MEM_FRACTION",
                                       "XLA_PYTHON_CLIENT_PREALLOCATE")):
    # JAX's default 75% preallocation would leave PyTorch a quarter of the card. No
    # effect on CPUs.
    os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = "0.45"
  # Read when torch loads libgomp. Its threads spin at every barrier by default; on a
  # CPU shared with other jobs a descheduled thread then stalls each op: measured here,
  # Darknet at batch 64 ran at 7-10 images/s spinning, 14 passive.
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cpu_name() -> str:
  """The host CPU's model name (Linux), else the machine type: CPU figures depend on it."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return f"host {line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
  except OSError:
    pass
  return f"host {platform.machine()}"


def main(argv):
  names = list(SYSTEMS)
  if len(argv) != 2 or argv[1] not in names + ["all"]:
    raise app.UsageError(f"usage: python -m benchmarks.benchmark {{{','.join(names)},all}}")
  chosen = names if argv[1] == "all" else [argv[1]]
  # One --variant for every system chosen: smoke and fashion_mnist exist for all three.
  variant = FLAGS.variant
  with_torch = torch_available() if FLAGS.torch is None else FLAGS.torch
  if with_torch and not torch_available():
    raise app.UsageError("--torch needs PyTorch: pip install torch (or drop --torch)")
  if with_torch:
    share_with_torch()
  results = [run(name, variant, FLAGS.batch, FLAGS.precision, common.value("steps", STEPS),
                 CPU_SIZES[name] if FLAGS.cpu_sizes else None, with_torch,
                 FLAGS.xla_defaults, common.value("rounds", ROUNDS))
             for name in chosen]
  print_table(results)
  if FLAGS.out:
    with open(FLAGS.out, "a") as f:
      for result in results:
        f.write(json.dumps(result) + "\n")
  if FLAGS.cpu_sizes:  # the variant column names the config; say what was changed in it
    print("--cpu_sizes: " + "; ".join(
        f"{name} " + ", ".join(f"{k}={v}" for k, v in CPU_SIZES[name].items())
        for name in chosen), flush=True)


if __name__ == "__main__":
  app.run(main)
