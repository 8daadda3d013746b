"""How batches reach a training step: sharded over the devices, batch k a pure function of k.

Every system reads its training data the same way. A *sampler* says which examples make
up global batch ``k``, as a pure function of ``(seed, k)``, so a run resumed at batch k
sees exactly what an uninterrupted one would. A *feed* turns those batches into what the
jitted step consumes, split over the ("data",) mesh along the batch axis:

* `DeviceFeed`: a data set small enough for device memory (Fashion-MNIST, CIFAR-10, a
  CycleGAN domain pair) goes there once, as uint8; a batch travels as the indices of its
  examples (this process's rows, a few hundred bytes), and `DeviceFeed.gather` picks the
  examples inside the step's program.
* `StreamedFeed`: images decoded on the host (image folders, LSUN's LMDB) arrive as the
  batch itself, uploaded by a background thread ahead of the step; its ``gather`` passes
  them on.

A feed yields a `Batch` for consecutive global batches from a start: one batch at a time,
or with ``block_sizes`` blocks of n batches stacked along a new first axis (the WGAN's
critic steps eat n real batches in one program), split over the devices along axis 1.
``Batch.skipped`` counts the unreadable images passed over to make it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxgan import parallel


class Batch(NamedTuple):
  """What a step consumes, on the devices, and the unreadable images skipped to make it."""
  inputs: Any
  skipped: int = 0


def batch_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Split along ``batch_axis`` over the devices (1 for a block (n, B, ...))."""
  return NamedSharding(mesh, P(*([None] * batch_axis), "data"))


def local_rows(array: np.ndarray, axis: int = 0, shard_index: int | None = None,
               shard_count: int | None = None) -> np.ndarray:
  """Shard ``shard_index`` of ``shard_count`` (default: this process's share) of a global
  array, contiguous along ``axis``."""
  index = jax.process_index() if shard_index is None else shard_index
  count = jax.process_count() if shard_count is None else shard_count
  rows = array.shape[axis] // count
  return np.take(array, np.arange(index * rows, (index + 1) * rows), axis=axis)


def _upload(local, mesh: Mesh, batch_axis: int):
  """This process's rows of a global batch (a pytree of numpy arrays) → global arrays."""
  sharding = batch_sharding(mesh, batch_axis)

  def put(x):
    shape = list(x.shape)
    shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x, tuple(shape))
  return jax.tree.map(put, local)


def _stack(batches: list):
  return jax.tree.map(lambda *xs: np.stack(xs), *batches)


class EpochSampler:
  """Batch ``k`` = examples ``perm_e[i·B : (i+1)·B]``, e = k // steps_per_epoch, i = k % it.

  ``perm_e`` is a permutation of the ``num_examples`` drawn from ``(seed, e)``. An epoch
  holds ``num_examples // batch_size`` whole batches (static shapes); the remainder waits
  for a later epoch's permutation.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < batch_size:
      raise ValueError(f"batch_size={batch_size} is larger than the {num_examples} examples: "
                       "lower --config.batch_size.")
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.steps_per_epoch = num_examples // batch_size
    self._cache: dict[int, np.ndarray] = {}

  def permutation(self, epoch: int) -> np.ndarray:
    perm = self._cache.get(epoch)
    if perm is None:
      rng = np.random.default_rng([self.seed, 0xDA7A, epoch])
      perm = rng.permutation(self.num_examples).astype(np.int32)
      # Two epochs kept: a batch (or readers in parallel) may straddle a boundary. A new
      # dict, never changed once published, so reader threads need no lock.
      kept = {e: p for e, p in self._cache.items() if e == epoch - 1}
      self._cache = {**kept, epoch: perm}
    return perm

  def __call__(self, k: int) -> np.ndarray:
    """int32 (batch_size,) example indices of global batch ``k``."""
    epoch, i = divmod(int(k), self.steps_per_epoch)
    return self.permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size]


class StreamSampler(EpochSampler):
  """Batch ``k`` = positions ``k·B .. (k+1)·B − 1`` of an endless stream of permutations.

  The stream is ``perm_0 ++ perm_1 ++ ...`` (`EpochSampler.permutation`), so batches
  straddle epochs and no example waits: the order of data sets read from disk (image
  folders, LSUN), whether streamed, prepared on the host or prepared on the device.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples < 1:
      raise ValueError("the data set is empty.")
    self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
    self.steps_per_epoch = max(1, num_examples // batch_size)
    self._cache = {}

  def at(self, position: int) -> int:
    """The example at one position of the stream."""
    epoch, i = divmod(int(position), self.num_examples)
    return int(self.permutation(epoch)[i])

  def __call__(self, k: int) -> np.ndarray:
    start, n = int(k) * self.batch_size, self.num_examples
    end = start + self.batch_size
    parts = [self.permutation(e)[max(start - e * n, 0):min(end - e * n, n)]
             for e in range(start // n, (end - 1) // n + 1)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def in_order(batch_size: int) -> Callable[[int], np.ndarray]:
  """A sampler that reads examples in order: batch k is ``k·B .. (k+1)·B − 1`` (test sets)."""
  return lambda k: np.arange(k * batch_size, (k + 1) * batch_size, dtype=np.int32)


class DeviceFeed:
  """uint8 arrays held whole on every device; a batch is the indices of its examples.

  Args:
    arrays: a pytree of numpy arrays with the examples along axis 0 (``{"image": (N, H,
      W, C), "label": (N,)}``, two domains ``{"a": ..., "b": ...}``, or one image array).
    sampler: ``k -> global indices of batch k`` (numpy int arrays; a dict of them keyed
      like ``arrays`` takes each from its own array).
    mesh: the ("data",) mesh.
    left_out: unreadable files dropped while loading; the first batch of a run reports
      them as skipped.
    skipped: ``k -> unreadable images passed over to make batch k`` (this process's
      rows; a prepared set, `jaxgan.data.prepared.PreparedOrder`), if any.
    on_device: ``arrays`` are on the devices already (replicated).
  """

  def __init__(self, arrays: Any, sampler: Callable[[int], Any], mesh: Mesh,
               left_out: int = 0, skipped: Callable[[int], int] | None = None,
               on_device: bool = False):
    self.mesh, self.sampler, self.left_out = mesh, sampler, left_out
    self.skipped = skipped
    self.arrays = arrays if on_device else parallel.replicate(arrays, mesh)

  def gather(self, arrays, indices):
    """Inside the step's program: the examples at ``indices``, split like the indices."""
    axis = jax.tree.leaves(indices)[0].ndim - 1  # 1 for a block (n, B)
    if isinstance(indices, dict):
      picked = {k: arrays[k][v] for k, v in indices.items()}
    else:
      picked = jax.tree.map(lambda a: a[indices], arrays)
    sharding = batch_sharding(self.mesh, axis)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), picked)

  def indices(self, k: int, n: int | None = None):
    """Global indices of batch ``k``, or of the block of batches ``k .. k + n − 1``."""
    if n is None:
      return self.sampler(k)
    return _stack([self.sampler(i) for i in range(k, k + n)])

  def batches(self, start: int, block_sizes: Iterable[int] | None = None) -> Iterator[Batch]:
    """Batches ``start, start + 1, ...`` (endless), or blocks of ``block_sizes`` batches."""
    sizes = iter(block_sizes) if block_sizes is not None else None
    k, skipped = start, self.left_out if start == 0 else 0
    while True:
      n = None if sizes is None else next(sizes, None)
      if sizes is not None and n is None:
        return
      indices = jax.tree.map(lambda x: np.asarray(x, np.int32), self.indices(k, n))
      axis = 0 if n is None else 1
      if self.skipped is not None:
        skipped += sum(self.skipped(i) for i in range(k, k + (n or 1)))
      yield Batch(_upload(jax.tree.map(lambda x: local_rows(x, axis), indices), self.mesh,
                          axis), skipped)
      k, skipped = k + (n or 1), 0


class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


_END = object()


class StreamedFeed:
  """Batches decoded on the host, uploaded ahead of the step by a background thread.

  Args:
    loader: ``start -> iterator of (rows, skipped)`` for global batches ``start, start +
      1, ...``: this process's rows of each batch (a pytree of numpy arrays) and the
      unreadable images skipped to fill them. Batch k must depend on k alone.
    mesh: the ("data",) mesh.
    prefetch: batches (or blocks) kept ready on the devices.
  """
  arrays: dict = {}

  def __init__(self, loader: Callable[[int], Iterator[tuple[Any, int]]], mesh: Mesh,
               prefetch: int = 2):
    self.loader, self.mesh, self.prefetch = loader, mesh, max(1, prefetch)

  @staticmethod
  def gather(arrays, batch):  # pylint: disable=unused-argument
    return batch

  def _host_batches(self, start, block_sizes):
    rows = self.loader(start)
    if block_sizes is None:
      yield from ((local, skipped, 0) for local, skipped in rows)
      return
    for n in block_sizes:
      taken = [next(rows) for _ in range(n)]
      yield _stack([r for r, _ in taken]), sum(s for _, s in taken), 1

  def batches(self, start: int, block_sizes: Iterable[int] | None = None) -> Iterator[Batch]:
    """As `DeviceFeed.batches`; a thread decodes, stacks and uploads up to ``prefetch``
    ahead, so host decoding overlaps the device's work. Closing the iterator stops it."""
    ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
    stop = threading.Event()

    def put(item) -> bool:
      while not stop.is_set():
        try:
          ready.put(item, timeout=0.1)
          return True
        except queue.Full:
          continue
      return False

    def produce():
      try:
        for local, skipped, axis in self._host_batches(start, block_sizes):
          if not put(Batch(_upload(local, self.mesh, axis), skipped)):
            return
        put(_END)
      except BaseException as e:  # pylint: disable=broad-except
        put(_Failure(e))  # raised again in the consumer's thread

    thread = threading.Thread(target=produce, daemon=True, name="jaxgan-feed")
    thread.start()
    try:
      while True:
        item = ready.get()
        if item is _END:
          return
        if isinstance(item, _Failure):
          raise item.error
        yield item
    finally:
      stop.set()
      thread.join(timeout=30)
