"""Small labelled image data sets held whole in memory (and then in device memory).

CIFAR-10 comes through tfds (``cifar10``, prepared once with ``tfds build cifar10``);
Fashion-MNIST from its original IDX files, which Debian's ``dataset-fashion-mnist`` installs
offline. A data set that is not there is one clear error that says how to get it; there is
no fallback to fake data.
"""

import dataclasses
import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclasses.dataclass(frozen=True)
class ImageClassificationData:
  """uint8 NHWC images and int32 labels, with the normalisation statistics to use."""
  images: np.ndarray
  labels: np.ndarray
  mean: tuple
  std: tuple
  num_classes: int

  def __len__(self):
    return len(self.labels)

  def head(self, n: int) -> "ImageClassificationData":
    """The first ``n`` examples (quick experiments, tests); all of them for n = 0."""
    if not n:
      return self
    return dataclasses.replace(self, images=self.images[:n], labels=self.labels[:n])


# Per-channel statistics of the training images, in [0, 1] units. CIFAR-10's are the
# lesson's; Fashion-MNIST's were computed from its 60,000 training images (a test checks).
STATS = {
    "cifar10": ((0.4914, 0.48216, 0.44653), (0.24703, 0.24349, 0.26159)),
    "fashion_mnist": ((0.28604,), (0.35302,)),
}
NUM_CLASSES = {"cifar10": 10, "fashion_mnist": 10}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte IDX file.")
  ndim = data[3]
  dims = np.frombuffer(data, ">u4", count=ndim, offset=4).astype(int)
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if array.size != np.prod(dims):
    raise ValueError(f"{path} is truncated: expected {np.prod(dims)} values, "
                     f"found {array.size}.")
  return array.reshape(dims)


def _find(directory: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
      f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install it with "
      "`apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or point "
      "--config.data_dir at a folder holding the four original IDX files.")


def load_fashion_mnist(split: str, data_dir: str | None = None) -> ImageClassificationData:
  """Fashion-MNIST ``train`` (60,000) or ``test`` (10,000) as (N, 28, 28, 1) uint8."""
  directory = data_dir or FASHION_MNIST_DIR
  prefix = {"train": "train", "test": "t10k"}[split]
  images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))[..., None]
  labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte")).astype(np.int32)
  mean, std = STATS["fashion_mnist"]
  return ImageClassificationData(images, labels, mean, std, 10)


def load_tfds(name: str, split: str, data_dir: str | None = None) -> ImageClassificationData:
  """A tfds image classification set (``cifar10``) read through ``tfds.data_source``.

  Reading uses the array_record files directly: no TensorFlow at training time.
  """
  import tensorflow_datasets as tfds  # Lazy: only this source needs it.
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared".
    where = data_dir or "~/tensorflow_datasets"
    raise FileNotFoundError(
        f"tfds data set {name!r} (split {split!r}) is not prepared in {where}: on a machine "
        f"with internet run `pip install tensorflow tensorflow-datasets && tfds build {name} "
        f"--file_format=array_record` (copy the folder here if needed), or set "
        f"--config.data_dir to where it lives. ({type(e).__name__}: {e})") from None
  records = [source[i] for i in range(len(source))]  # decodes each PNG once, here
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([r["label"] for r in records], np.int32)
  mean, std = STATS.get(name, ((0.5,), (0.5,)))
  return ImageClassificationData(images, labels, mean, std,
                                 NUM_CLASSES.get(name, int(labels.max()) + 1))


def load_classification(name: str, split: str,
                        data_dir: str | None = None) -> ImageClassificationData:
  """Dispatches on the data set name (``cifar10``, ``fashion_mnist``)."""
  data_dir = data_dir or None
  if name == "fashion_mnist":
    return load_fashion_mnist(split, data_dir)
  if name == "cifar10":
    return load_tfds(name, split, data_dir)
  raise ValueError(f"unknown data set {name!r}: use --config.dataset=cifar10 or fashion_mnist.")
