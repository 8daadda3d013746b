"""Unlabelled images for GANs: real batches, stacked into one block per generator iteration.

A WGAN critic eats a fresh real batch at every critic step, and a generator iteration runs
its n critic steps on the device in one call. So the data here is served as **blocks** of
shape ``(n, B, H, W, C)``, uint8, sharded over the ("data",) mesh along the batch axis (1).
The train step turns them into [-1, 1] floats on the device (the lesson's
``inception_stats`` normalisation, mean 0.5 and std 0.5, is exactly that map).

Real batch ``k`` of a run is a pure function of ``(seed, k)``, so the position in the data
is one integer (real batches consumed) and a resumed run continues with the same batches.

Two kinds of source:

* ``DeviceImages``: a small data set (Fashion-MNIST) held whole in device memory; a block
  is an index array, gathered on the device by the critic program itself.
* ``StreamedImages``: image files (any folder, recursively) or an LSUN LMDB, decoded on the
  host by a grain pipeline (``make_loader``) with worker processes; a background thread
  stacks the next blocks and puts them on the device while the current one trains.
  Unreadable files are skipped by the sources and counted.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from PIL import Image

from jaxgan import parallel
from jaxgan.data import classification, device, folder

SOURCES = ("fashion_mnist", "folder", "lsun")


def to_unit_range(images, dtype=jnp.float32):
  """uint8 [0, 255] -> [-1, 1] (a tanh generator's range), in ``dtype``."""
  return (images.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def block_sharding(mesh: Mesh) -> NamedSharding:
  """A block (n, B, H, W, C) is split over the devices along its batch axis."""
  return parallel.data_sharding(mesh, batch_axis=1)


# ----------------------------------------------------------------------------- Fashion-MNIST

def fit_fashion_mnist(images: np.ndarray, size: int) -> np.ndarray:
  """Brings small (N, h, w, C) uint8 images (Fashion-MNIST: 28×28×1) to ``size``×``size``.

  They are centred on a black square of side ``max(size, 32)``: black is Fashion-MNIST's
  background, so this adds border, not a new look, and leaves the pixels untouched. Below
  32 that 32×32 frame is then resized down (antialiased bicubic), so small sizes keep the
  framing of 32, the size the networks' 16·2^k grids start from.
  """
  n, h, w, c = images.shape
  frame = max(size, 32)
  if h > frame or w > frame:
    raise ValueError(f"{h}×{w} images are larger than the {frame}×{frame} frame; "
                     "this is for small images such as Fashion-MNIST's 28×28")
  top, left = (frame - h) // 2, (frame - w) // 2
  images = np.pad(images, ((0, 0), (top, frame - h - top), (left, frame - w - left), (0, 0)))
  if frame == size:
    return images
  resize = lambda im: np.asarray(Image.fromarray(im).resize((size, size),
                                                             Image.Resampling.BICUBIC))
  if c == 1:
    return np.stack([resize(im[..., 0]) for im in images])[..., None]
  return np.stack([resize(im) for im in images])


def fashion_mnist_images(isize: int, data_dir: str | None = None,
                         max_images: int = 0) -> np.ndarray:
  """Fashion-MNIST's 60,000 training images as (N, isize, isize, 1) uint8.

  Brought to ``isize`` by `fit_fashion_mnist`: at 32, 2 black pixels a side.
  ``max_images`` > 0 keeps only the first images (tests).
  """
  images = classification.load_fashion_mnist("train", data_dir).images
  if max_images:
    images = images[:max_images]
  return fit_fashion_mnist(images, isize)


# ----------------------------------------------------------------------------- in device memory

class DeviceImages:
  """A small uint8 image set held whole on every device; a block is an index array.

  Real batch k is `EpochSampler`'s batch k (a fresh permutation per epoch); a block of n
  batches is their (n, B) indices, gathered on the device inside the critic program.

  Args:
    images: (N, H, W, C) uint8.
    batch_size: global batch size B.
    seed: fixes the order of every epoch.
    mesh: the ("data",) mesh.
  """

  def __init__(self, images: np.ndarray, batch_size: int, seed: int, mesh: Mesh):
    if len(images) < batch_size:
      raise ValueError(f"batch_size={batch_size} is larger than the {len(images)} images: "
                       "lower --config.batch_size (or raise --config.data.max_images).")
    self.num_images = len(images)
    self.image_shape = images.shape[1:]
    self.batch_size = batch_size
    self.sampler = device.EpochSampler(len(images), batch_size, seed)
    self.steps_per_epoch = self.sampler.steps_per_epoch
    self._dataset = device.DeviceDataset(images, mesh)
    self.arrays, self.take = self._dataset.arrays, device.DeviceDataset.take

  def block_indices(self, position: int, n: int) -> np.ndarray:
    """(n, B) indices of real batches ``position .. position + n - 1``."""
    return np.stack([self.sampler.indices(k) for k in range(position, position + n)])

  def blocks(self, position: int, counts: Iterable[int]) -> Iterator[tuple[jax.Array, int]]:
    """Yields ``(block, skipped)`` for consecutive blocks of ``counts`` batches each."""
    for n in counts:
      yield self._dataset.to_device(self.block_indices(position, n), batch_axis=1), 0
      position += n

  def close(self) -> None:
    pass


# ----------------------------------------------------------------------------- streamed

class _Failure:
  def __init__(self, error: BaseException):
    self.error = error


_END = object()  # the counts ran out


class StreamedImages:
  """Image files or an LMDB decoded by grain on the host, delivered as device blocks.

  Args:
    source: an ``ImageFolderSource`` or ``LmdbSource`` (items ``{"image", "skipped"}``).
    batch_size: global batch size B.
    seed: the loader's shuffle seed; batch k depends only on (seed, k).
    mesh: the ("data",) mesh.
    num_workers: grain decoding processes (0: threads of this process).
    prefetch: blocks a background thread keeps ready on the device.
  """

  def __init__(self, source, batch_size: int, seed: int, mesh: Mesh, num_workers: int = 0,
               prefetch: int = 2):
    self.source = source
    self.num_images = len(source)
    self.image_shape = (source.size, source.size, source.channels)
    self.batch_size = batch_size
    # Batches straddle epochs (make_loader), so an epoch is N / B batches, at least one.
    self.steps_per_epoch = max(1, self.num_images // batch_size)
    self.seed = seed
    self.mesh = mesh
    self.num_workers = num_workers
    self.prefetch = max(1, prefetch)
    self.skipped_total = 0
    self._active = []
    # Blocks arrive as decoded images: the critic program takes them as they are.
    self.arrays, self.take = {}, device.StreamedBatches.take

  def _host_blocks(self, position: int, counts: Iterable[int]):
    """(n, b, H, W, C) numpy blocks of this host's rows, and their skip counts."""
    from jaxgan.data.folder import make_loader  # grain is slow to import; only here
    loader = iter(make_loader(
        self.source, self.batch_size, seed=self.seed, start_batch=position,
        num_workers=self.num_workers, shard_index=jax.process_index(),
        shard_count=jax.process_count()))
    for n in counts:
      batches = [next(loader) for _ in range(n)]
      yield (np.stack([b["image"] for b in batches]),
             sum(int(np.sum(b["skipped"])) for b in batches))

  def _to_device(self, host_block: np.ndarray) -> jax.Array:
    n = host_block.shape[0]
    return jax.make_array_from_process_local_data(
        block_sharding(self.mesh), host_block, (n, self.batch_size, *self.image_shape))

  def blocks(self, position: int, counts: Iterable[int]) -> Iterator[tuple[jax.Array, int]]:
    """Yields ``(block, skipped)`` for consecutive blocks of ``counts`` batches each.

    A thread decodes, stacks and uploads up to ``prefetch`` blocks ahead, so host decoding
    overlaps the device's work on the current block. ``skipped`` counts the unreadable
    files passed over in that block (also summed in ``skipped_total``).
    """
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
        for host_block, skipped in self._host_blocks(position, counts):
          if not put((self._to_device(host_block), skipped)):
            return
        put(_END)
      except BaseException as e:  # pylint: disable=broad-except
        put(_Failure(e))  # re-raised in the consumer's thread

    thread = threading.Thread(target=produce, daemon=True, name="wgan-data")
    thread.start()
    self._active.append((stop, thread))
    try:
      while True:
        item = ready.get()
        if item is _END:
          return
        if isinstance(item, _Failure):
          raise item.error
        self.skipped_total += item[1]
        yield item
    finally:
      stop.set()
      thread.join(timeout=30)
      self._active.remove((stop, thread))

  def close(self) -> None:
    for stop, thread in self._active:
      stop.set()
      thread.join(timeout=30)
    self._active = []


# ----------------------------------------------------------------------------- from a config

def _source_hint(source: str) -> str:
  return {"folder": "set --config.data.path to a folder that holds image files",
          "lsun": "set --config.data.path to the LSUN LMDB folder (e.g. bedroom_train_lmdb)",
          }.get(source, "")


def make_image_data(data: ml_collections.ConfigDict, isize: int, batch_size: int, seed: int,
                    mesh: Mesh) -> DeviceImages | StreamedImages:
  """The real images a WGAN config asks for, read and checked before any training.

  ``data.source``: ``fashion_mnist`` (device memory), ``folder`` (any image folder, searched
  recursively) or ``lsun`` (an LSUN LMDB). Folder and LMDB images are centre-cropped and
  resized straight to ``isize`` (the lesson reads LSUN at 128 and resizes to 64; one
  antialiased resize to 64 gives the same picture without the intermediate step).

  Raises:
    FileNotFoundError / ValueError: a missing or empty folder or database, with the fix.
  """
  if data.source not in SOURCES:
    raise ValueError(f"config.data.source={data.source!r} is not one of {SOURCES}: set "
                     "--config.data.source=fashion_mnist, folder or lsun.")
  if data.source == "fashion_mnist":
    if data.channels != 1:
      raise ValueError("Fashion-MNIST is grayscale: set --config.data.channels=1.")
    images = fashion_mnist_images(isize, data.data_dir or None, data.max_images)
    return DeviceImages(images, batch_size, seed, mesh)

  if data.max_images:
    raise ValueError("config.data.max_images applies to fashion_mnist only: use "
                     "--config.data.fraction to sample a folder or LMDB.")
  if not data.path:
    raise ValueError(f"config.data.path is empty: {_source_hint(data.source)}.")
  try:
    if data.source == "folder":
      source = folder.ImageFolderSource(data.path, isize, data.channels, data.fraction, seed)
    else:
      source = folder.LmdbSource(data.path, isize, data.channels, data.fraction, seed,
                                 cache_dir=data.cache_dir or None)
    source.check_readable()
  except (FileNotFoundError, ValueError) as e:
    # Same type, plus the config flag to change.
    raise type(e)(f"{e} ({_source_hint(data.source)}.)") from None
  return StreamedImages(source, batch_size, seed, mesh, data.num_workers, data.prefetch)


def epochs_to_batches(num_epochs: float, steps_per_epoch: int) -> int:
  """Real batches in ``num_epochs`` passes (rounded up, at least one)."""
  return max(1, math.ceil(num_epochs * steps_per_epoch))
