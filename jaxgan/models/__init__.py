"""Flax Linen modules for the three systems of lesson 12."""

import jax
import numpy as np

from jaxgan.models.darknet import Darknet, ResLayer, WideResNet, wrn_22
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator


def count_params(params) -> int:
  """Number of parameters in a pytree, counted as PyTorch counts them.

  Pass the ``params`` collection only: BatchNorm running statistics live in
  ``batch_stats`` and PyTorch does not count its buffers either.
  """
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
