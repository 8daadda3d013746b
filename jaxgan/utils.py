"""Small helpers shared by every system."""

import jax
import numpy as np


def count_params(params) -> int:
  """Number of parameters in a pytree, counted as PyTorch counts them.

  Pass the ``params`` collection only: BatchNorm running statistics live in
  ``batch_stats`` and PyTorch does not count its buffers either.
  """
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
