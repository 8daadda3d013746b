"""Test set-up: a persistent XLA compilation cache so the suite compiles each program once,
and, on the CPU, LLVM's quick settings: the suite's tiny programs cost more to compile than
to run."""

import importlib.metadata
import importlib.util
import os
import tempfile


def _cpu_only() -> bool:
  """True when JAX will find no accelerator plugin (JAX_PLATFORMS=cpu, or none installed)."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return True
  return (importlib.util.find_spec("jax_plugins") is None
          and not importlib.metadata.entry_points(group="jax_plugins")
          and importlib.util.find_spec("libtpu") is None)


# LLVM without its optimisation passes: the same HLO and XLA passes (routing, layouts and
# the conv census are unchanged), machine code left unoptimised. On this project's 2-core
# VM a cold-cache run of the three smoke trainings (tests/multiprocess_worker.py) took
# 59 s instead of 93 s, and the steps ran no slower at these sizes. XLA's GPU backend
# rejects levels under 2, hence CPU-only. Set before JAX starts its backend; subprocesses
# inherit it (`xla_flags_for` adds a device count to it).
if _cpu_only():
  os.environ["XLA_FLAGS"] = (
      f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip())


def xla_flags_for(devices: int) -> str:
  """This suite's XLA_FLAGS for a subprocess with ``devices`` CPU devices."""
  return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxgan.config import override  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import  (for the tests)

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "jaxgan-test-xla-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST) and not os.environ.get("CI"),
    reason="apt-get install -y dataset-fashion-mnist (CI installs it and never skips)")


def adam_noise_drift(lr: float, b1: float, b2: float, steps: int) -> float:
  """How far Adam can move a parameter in ``steps`` steps, whatever its gradients.

  A parameter whose gradient is zero in exact arithmetic gets rounding noise that depends
  on the summation order (another device count, another batch layout), and Adam scales
  noise up to a step of about lr. Its step t is lr·m̂/√v̂, where m̂ = Σ a_i g_i and
  v̂ = Σ b_i g_i² (the bias-corrected averages' weights); by Cauchy-Schwarz
  |m̂|/√v̂ ≤ √(Σ a_i²/b_i), slightly over 1 from the second step on (1.05 and 1.13 at steps
  2 and 3 for b1 = 0.5, b2 = 0.999). Two runs can drift apart by twice the sum.
  """
  total = 0.0
  for t in range(1, steps + 1):
    ages = range(t)  # how many steps ago each gradient came
    a = [(1 - b1) * b1**k / (1 - b1**t) for k in ages]
    b = [(1 - b2) * b2**k / (1 - b2**t) for k in ages]
    total += sum(x * x / y for x, y in zip(a, b)) ** 0.5
  return lr * total
