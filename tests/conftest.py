"""Test set-up: a persistent XLA compilation cache so the suite compiles each program once."""

import os
import tempfile

import jax
import pytest

jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "jaxgan-test-xla-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FASHION_MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST) and not os.environ.get("CI"),
    reason="apt-get install -y dataset-fashion-mnist (CI installs it and never skips)")


def override(config, **overrides):
  """A copy-free override of a locked config; dotted keys reach nested fields."""
  with config.unlocked():
    for key, value in overrides.items():
      target = config
      *path, last = key.split(".")
      for part in path:
        target = getattr(target, part)
      setattr(target, last, value)
  return config
