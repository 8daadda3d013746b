"""Unaligned image-to-image data: two unpaired domains A and B (CycleGAN's UnalignedDataset).

CycleGAN never sees a horse next to "its" zebra. Each iteration takes one image of A, in a
shuffled order per epoch, and an image of B drawn at random; an epoch is
``max(|A|, |B|)`` iterations, so the smaller domain is visited more than once (lesson:
1334 for horse2zebra).

Where the domains come from:

* tfds ``cycle_gan/<name>`` (horse2zebra, monet2photo, ...) read through
  ``tfds.data_source``: the prepared array_record files, no TensorFlow;
* the reference's folder layout ``DIR/trainA``, ``trainB``, ``testA``, ``testB`` with any
  image files (unreadable ones are skipped and counted, as `jaxgan.data.folder` does);
* two classes of Fashion-MNIST, A from one half of the training set and B from the other,
  so no image of A has a partner in B: a CPU-sized real task.

Every source gives items ``{"image": uint8 (load_size, load_size, C), "skipped": int32}``
already decoded and resized on the host; the random crop and flip happen on the device.
Which pair goes into step k is `UnalignedSampler`'s pure function of (seed, k), so a
resumed run sees exactly the batches an uninterrupted one would, whether the images sit in
device memory (`load_all`) or stream through grain (`make_unaligned_loader`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from typing import Any, NamedTuple

import numpy as np
from absl import flags, logging
from PIL import Image

from jaxgan.data import feed, folder
from jaxgan.data.classification import (FASHION_MNIST_CLASSES, fit_fashion_mnist,
                                        load_fashion_mnist, open_tfds)
from jaxgan.data.folder import ImageFolderSource, fit_frame

SPLITS = ("trainA", "trainB", "testA", "testB")


@dataclasses.dataclass
class Domains:
  """The train and test sources of domains A and B.

  Each source supports ``len()`` and ``[i]`` → ``{"image", "skipped"}``.
  """
  train_a: Any
  train_b: Any
  test_a: Any
  test_b: Any
  channels: int
  description: str


# ----------------------------------------------------------------------------- sources

def square_of(image: np.ndarray, size: int, channels: int) -> np.ndarray:
  """Centre square and bicubic resize of a decoded array, as `folder.load_image` does files.

  Args:
    image: uint8 (H, W) or (H, W, C) array.
    size: output side.
    channels: 1 (grayscale) or 3 (RGB).

  Returns:
    uint8 (size, size, channels).
  """
  image = np.asarray(image, np.uint8)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  return fit_frame(Image.fromarray(image), size, size, channels)


class ArraySource:
  """Images already in memory as one uint8 (N, H, W, C) array."""

  def __init__(self, images: np.ndarray):
    self.images = images

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self.images[int(index)], "skipped": np.int32(0)}

  def __repr__(self) -> str:
    return f"ArraySource(n={len(self)}, shape={self.images.shape[1:]})"


class TfdsImageSource:
  """One split of a tfds image data set, read without TensorFlow, resized to ``size``."""

  def __init__(self, name: str, split: str, size: int, channels: int = 3,
               data_dir: str | None = None):
    self._source = open_tfds(name, split, data_dir)
    self.name, self.split = name, split
    self.size, self.channels = int(size), int(channels)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = self._source[int(index)]
    return {"image": square_of(record["image"], self.size, self.channels),
            "skipped": np.int32(0)}

  def __repr__(self) -> str:
    return f"TfdsImageSource({self.name}:{self.split}, n={len(self)}, size={self.size})"


class Head:
  """The first ``n`` items of a source (quick experiments, tests)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, min(int(n), len(source))

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, index: int):
    return self.source[int(index)]

  def __repr__(self) -> str:
    return f"Head({self.source!r}, {self.n})"


def head(source, n: int):
  """The first ``n`` items of ``source`` (an `ArraySource` stays one)."""
  if isinstance(source, ArraySource):
    return ArraySource(source.images[:n])
  return Head(source, n)


def tfds_domains(name: str, load_size: int, data_dir: str | None = None) -> Domains:
  """``cycle_gan/<name>`` from tfds: splits trainA, trainB, testA, testB; RGB."""
  full = name if "/" in name else f"cycle_gan/{name}"
  sources = [TfdsImageSource(full, split, load_size, 3, data_dir) for split in SPLITS]
  return Domains(*sources, channels=3, description=f"tfds {full}")


def folder_domains(path: str, load_size: int, channels: int = 3) -> Domains:
  """The reference layout: ``path/trainA``, ``trainB``, ``testA``, ``testB``; ``path`` may
  also be the official zip (``horse2zebra.zip``: ``horse2zebra/trainA/...``), read in place.

  trainA and trainB are required. A missing testA/testB falls back to the first training
  images of that domain for the sample grids; judging such a run is refused
  (`jaxgan.evaluation.runs.CycleGANJudge`), since its floor would be training images.

  Raises:
    FileNotFoundError: ``path`` or one of its train folders is missing; the message
      names the folder.
  """
  if not path:
    raise ValueError("data.source='folder' needs a folder: set --config.data.path=DIR "
                     "(with DIR/trainA and DIR/trainB).")
  if os.path.isfile(path):
    return _zip_domains(path, load_size, channels)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"CycleGAN data folder {path!r} does not exist: set "
                            "--config.data.path to a folder holding trainA/ and trainB/.")
  sources = {}
  for split in SPLITS:
    folder = os.path.join(path, split)
    if not os.path.isdir(folder):
      if split.startswith("train"):
        raise FileNotFoundError(
            f"{folder} is missing: CycleGAN needs both domains, as {path}/trainA and "
            f"{path}/trainB (image files, any names), plus optionally testA/ and testB/.")
      logging.warning("%s is missing: sample grids use the first %s images instead, and "
                      "judging the run (eval.judge) is refused until it exists.", folder,
                      "train" + split[-1])
      continue
    sources[split] = ImageFolderSource(folder, load_size, channels)
    sources[split].check_readable()
  return Domains(sources["trainA"], sources["trainB"],
                 sources.get("testA", sources["trainA"]),
                 sources.get("testB", sources["trainB"]),
                 channels=channels, description=f"folder {path}")


def _zip_domains(path: str, load_size: int, channels: int) -> Domains:
  """`folder_domains` for a zip in the reference's layout."""
  sources = {}
  for split in SPLITS:
    members = folder.zip_members(path, split)
    if not members:
      if split.startswith("train"):
        raise FileNotFoundError(
            f"{path} holds no {split}/ of images: CycleGAN needs both domains, as in the "
            f"official archives (horse2zebra.zip: horse2zebra/trainA/, trainB/, testA/, "
            f"testB/).")
      logging.warning("%s holds no %s/: sample grids use the first %s images instead, and "
                      "judging the run (eval.judge) is refused until it exists.", path,
                      split, "train" + split[-1])
      continue
    sources[split] = folder.ZipImageSource(path, members, load_size, channels)
    sources[split].check_readable()
  return Domains(sources["trainA"], sources["trainB"],
                 sources.get("testA", sources["trainA"]),
                 sources.get("testB", sources["trainB"]),
                 channels=channels, description=f"zip {path}")


def fashion_mnist_domains(class_a: int, class_b: int, load_size: int,
                          data_dir: str | None = None) -> Domains:
  """Two Fashion-MNIST classes as domains, unpaired by construction.

  A takes class ``class_a`` from the first half of the training set and B takes
  ``class_b`` from the second half, so the two never share a source image; the test
  images of each class serve for the sample grids. Images reach ``load_size`` the way
  the WGAN's do (`classification.fit_fashion_mnist`).
  """
  for name, label in (("class_a", class_a), ("class_b", class_b)):
    if not 0 <= label < 10:
      raise ValueError(f"data.{name}={label} is not a Fashion-MNIST class (0-9): "
                       f"{dict(enumerate(FASHION_MNIST_CLASSES))}.")
  if class_a == class_b:
    raise ValueError(f"data.class_a and data.class_b are both {class_a}: pick two classes.")
  train = load_fashion_mnist("train", data_dir or None)
  test = load_fashion_mnist("test", data_dir or None)
  half = len(train) // 2
  pick = lambda data, label, lo, hi: fit_fashion_mnist(
      data.images[lo:hi][data.labels[lo:hi] == label], load_size)
  return Domains(
      ArraySource(pick(train, class_a, 0, half)),
      ArraySource(pick(train, class_b, half, len(train))),
      ArraySource(pick(test, class_a, 0, len(test))),
      ArraySource(pick(test, class_b, 0, len(test))),
      channels=1,
      description=(f"Fashion-MNIST {FASHION_MNIST_CLASSES[class_a]} (A) ↔ "
                   f"{FASHION_MNIST_CLASSES[class_b]} (B)"))


def load_domains(data_config) -> Domains:
  """Dispatches on ``data_config.source`` (tfds, folder, fashion_mnist)."""
  d = data_config
  if d.source == "tfds":
    domains = tfds_domains(d.name, d.load_size, d.data_dir)
  elif d.source == "folder":
    domains = folder_domains(d.path, d.load_size, d.channels)
  elif d.source == "fashion_mnist":
    domains = fashion_mnist_domains(d.class_a, d.class_b, d.load_size, d.data_dir)
  else:
    raise ValueError(f"data.source={d.source!r} is not one of ['fashion_mnist', 'folder', "
                     "'tfds']: set --config.data.source=<one of them>.")
  if d.max_images:
    domains.train_a = head(domains.train_a, d.max_images)
    domains.train_b = head(domains.train_b, d.max_images)
  return domains


def load_all(source, threads: int | None = None) -> tuple[np.ndarray, int]:
  """Decodes a whole source into one array, for data sets small enough for device memory.

  Returns:
    ``(images, skipped)``: uint8 (N, H, W, C) of the readable items in order, and how
    many unreadable ones were left out.

  Raises:
    ValueError: the source holds no readable image.
  """
  if isinstance(source, ArraySource):
    return source.images, 0
  threads = threads or max(1, min(8, os.cpu_count() or 1))
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # PIL frees the GIL
    items = list(pool.map(source.__getitem__, range(len(source))))
  # A skipping source answers an unreadable item i with the next readable file and
  # skipped > 0; that file also comes as itself with skipped == 0, so keep only those.
  images = [item["image"] for item in items if int(item["skipped"]) == 0]
  skipped = len(items) - len(images)
  if not images:
    raise ValueError(f"no readable image in {source!r}.")
  return np.stack(images), skipped


# ----------------------------------------------------------------------------- order

class UnalignedSampler:
  """Which A and B images make up each global batch: a pure function of (seed, step).

  The stream of pairs is endless: item ``t`` belongs to epoch ``t // epoch_size``; its A
  image is that epoch's permutation of ``range(epoch_size)`` at ``t % epoch_size``, taken
  modulo ``|A|`` (as the reference does); its B image is uniform over B, drawn afresh.
  Batch ``k`` is items ``k·batch_size ... (k+1)·batch_size − 1``, so batches may straddle
  epochs and a resume at step k needs no saved iterator.
  """

  def __init__(self, num_a: int, num_b: int, batch_size: int, seed: int):
    if num_a < 1 or num_b < 1:
      raise ValueError(f"both domains need images, got |A|={num_a}, |B|={num_b}.")
    self.num_a, self.num_b = int(num_a), int(num_b)
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.epoch_size = max(self.num_a, self.num_b)
    self._perms: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) > 2:
        self._perms.clear()
      rng = np.random.default_rng([self.seed, 0, epoch])
      self._perms[epoch] = rng.permutation(self.epoch_size)
    return self._perms[epoch]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    """int32 (batch_size,) indices into A (``"a"``) and into B (``"b"``) for ``step``."""
    items = int(step) * self.batch_size + np.arange(self.batch_size)
    a = np.asarray([self._permutation(int(t) // self.epoch_size)[int(t) % self.epoch_size]
                    for t in items]) % self.num_a
    b = np.random.default_rng([self.seed, 1, int(step)]).integers(0, self.num_b,
                                                                   self.batch_size)
    return {"a": a.astype(np.int32), "b": b.astype(np.int32)}


def local_indices(sampler: UnalignedSampler, step: int, shard_index: int | None = None,
                  shard_count: int | None = None) -> dict[str, np.ndarray]:
  """A host's rows of step ``step``'s indices (default: this process's)."""
  return {k: feed.local_rows(v, 0, shard_index, shard_count) for k, v in sampler(step).items()}


def make_unaligned_loader(source_a, source_b, sampler: UnalignedSampler, *,
                          start_step: int, stop_step: int = 2**31 - 1,
                          shard_index: int | None = None, shard_count: int | None = None,
                          num_workers: int = 0, num_threads: int = 0):
  """Streams decoded batches through grain, for domains too big for device memory.

  Yields, for steps ``start_step ... stop_step − 1``, a host's rows of the global batch
  (default: this process's): ``{"a": uint8 (b, s, s, C), "b": uint8 (b, s, s, C),
  "skipped": int32}`` with ``skipped`` the unreadable files passed over. Steps are
  independent items of a grain ``MapDataset``, read ahead by threads (``num_threads``, 0:
  up to 8) in this process or in ``num_workers`` worker processes; step k's content
  depends only on (seed, k).
  """
  import grain  # Lazy: grain imports jax and orbax (seconds).

  def load_step(step):
    rows = local_indices(sampler, int(step), shard_index, shard_count)
    items_a = [source_a[i] for i in rows["a"]]
    items_b = [source_b[i] for i in rows["b"]]
    skipped = sum(int(item["skipped"]) for item in items_a + items_b)
    return {"a": np.stack([item["image"] for item in items_a]),
            "b": np.stack([item["image"] for item in items_b]),
            "skipped": np.int32(skipped)}

  threads = num_threads or max(1, min(8, os.cpu_count() or 1))
  ds = grain.MapDataset.range(start_step, stop_step).map(load_step)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=2 * threads))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (see make_loader)
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


# ----------------------------------------------------------------------------- the feed

class PairData(NamedTuple):
  """The training pairs of a CycleGAN run."""
  feed: feed.DeviceFeed | feed.StreamedFeed
  epoch_size: int  # max(|A|, |B|): iterations of batch 1 an epoch
  num_a: int
  num_b: int


def make_feed(domains: Domains, batch_size: int, seed: int, mesh, *, on_device: bool = True,
              num_workers: int = 0, num_threads: int = 0, prefetch: int = 2) -> PairData:
  """The (A, B) batches of training steps, as the step wants them: ``{"a", "b"}`` uint8.

  With ``on_device`` both domains are decoded once and held (uint8, at load_size) on every
  device, and a batch is the indices of its pairs (`feed.DeviceFeed`); otherwise grain
  decodes each batch on the host (`feed.StreamedFeed`). Either way `UnalignedSampler`
  decides the content of step k from (seed, k) alone.
  """
  if on_device:
    images_a, skipped_a = load_all(domains.train_a, num_threads)
    images_b, skipped_b = load_all(domains.train_b, num_threads)
    if skipped_a + skipped_b:
      logging.warning("left out %d unreadable training images", skipped_a + skipped_b)
    sampler = UnalignedSampler(len(images_a), len(images_b), batch_size, seed)
    pairs = feed.DeviceFeed({"a": images_a, "b": images_b}, sampler, mesh,
                            left_out=skipped_a + skipped_b)
  else:
    sampler = UnalignedSampler(len(domains.train_a), len(domains.train_b), batch_size, seed)

    def loader(start):
      for batch in make_unaligned_loader(domains.train_a, domains.train_b, sampler,
                                         start_step=start, num_workers=num_workers,
                                         num_threads=num_threads):
        skipped = int(batch.pop("skipped"))
        yield batch, skipped
    pairs = feed.StreamedFeed(loader, mesh, prefetch)
  return PairData(pairs, sampler.epoch_size, sampler.num_a, sampler.num_b)
