"""Data sets small enough for device memory, and which examples make up each batch.

Fashion-MNIST, CIFAR-10 and a CycleGAN domain pair fit in one accelerator's memory as
uint8 many times over, so they go there once and a step gathers its batch on the device:
no decoding, no per-step host work but a few hundred bytes of indices. Every system uses
the same two pieces:

* a sampler says which examples form global batch ``k``, as a pure function of
  ``(seed, k)``: `EpochSampler` (a fresh permutation per epoch, the last partial batch
  left for a later epoch: static shapes) or `jaxgan.data.unaligned.UnalignedSampler`;
  so a run resumed at batch k sees exactly what an uninterrupted one would;
* `DeviceDataset` holds the arrays on every device and turns this process's rows of
  those indices into a sharded index array, which the jitted step hands to `take`.

Streamed data sets (`StreamedBatches`) deliver decoded images instead; their ``take``
passes the batch through, so a step is written once for both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxgan import parallel


class EpochSampler:
  """Batch ``k`` = examples ``perm_e[i·B : (i+1)·B]``, e = k // steps_per_epoch, i = k % it.

  ``perm_e`` is a permutation of the ``num_examples`` drawn from ``(seed, e)``. An epoch
  holds ``num_examples // batch_size`` whole batches.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < batch_size:
      raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples: "
                       "lower --config.batch_size.")
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.steps_per_epoch = num_examples // batch_size
    self._cache: tuple[int, np.ndarray] | None = None

  def permutation(self, epoch: int) -> np.ndarray:
    if self._cache is None or self._cache[0] != epoch:
      rng = np.random.default_rng([self.seed, 0xDA7A, epoch])
      self._cache = (epoch, rng.permutation(self.num_examples).astype(np.int32))
    return self._cache[1]

  def indices(self, k: int) -> np.ndarray:
    """int32 (batch_size,) example indices of global batch ``k``."""
    epoch, i = divmod(int(k), self.steps_per_epoch)
    return self.permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]


def local_rows(indices: np.ndarray, axis: int = 0) -> np.ndarray:
  """This process's contiguous share of a global index array along ``axis``."""
  count, index = jax.process_count(), jax.process_index()
  rows = indices.shape[axis] // count
  return np.take(indices, np.arange(index * rows, (index + 1) * rows), axis=axis)


class DeviceDataset:
  """uint8 arrays held whole on every device; batches are index arrays gathered there.

  Args:
    arrays: a pytree of numpy arrays with the examples along axis 0 (e.g. ``{"image":
      (N, H, W, C), "label": (N,)}``, or two domains ``{"a": ..., "b": ...}``).
    mesh: the ("data",) mesh.
  """

  def __init__(self, arrays: Any, mesh: Mesh):
    self.mesh = mesh
    self.arrays = parallel.replicate(arrays, mesh)

  def to_device(self, indices, batch_axis: int = 0):
    """Global index arrays (numpy, the same on every process) → sharded device arrays.

    ``batch_axis`` is the axis split over the devices (1 for a WGAN block (n, B)).
    """
    sharding = parallel.data_sharding(self.mesh, batch_axis)
    def put(x):
      local = local_rows(np.asarray(x, np.int32), batch_axis)
      return jax.make_array_from_process_local_data(sharding, local, x.shape)
    return jax.tree.map(put, indices)

  @staticmethod
  def take(arrays, indices):
    """Inside the jitted step: the examples at ``indices`` (any pytree of index arrays).

    ``indices`` mirrors the pytree of arrays it reads: a dict of index arrays keyed like
    ``arrays`` takes from the matching array, a single index array takes from each.
    """
    if isinstance(indices, dict):
      return {k: arrays[k][v] for k, v in indices.items()}
    return jax.tree.map(lambda a: a[indices], arrays)


class StreamedBatches:
  """Decoded batches from the host: ``take`` passes them through (nothing on the device)."""
  arrays: dict = {}

  @staticmethod
  def take(arrays, batch):  # pylint: disable=unused-argument
    return batch


def batches_from(sampler_indices: Callable[[int], Any], start: int,
                 to_device: Callable[[Any], Any]) -> Iterator[Any]:
  """Device index batches for global batches ``start, start + 1, ...`` (endless)."""
  k = start
  while True:
    yield to_device(sampler_indices(k))
    k += 1
