"""Small labelled image data sets held whole in memory (and then in device memory).

CIFAR-10 comes from its official Python batches (``cifar-10-python.tar.gz`` as
downloaded, or the ``cifar-10-batches-py/`` folder it unpacks to) when the data directory
points at them, read without TensorFlow and through an unpickler that allows only what
those files need; otherwise through tfds (``cifar10``, prepared once with ``tfds build
cifar10``). Fashion-MNIST from its original IDX files, which Debian's ``dataset-fashion-mnist`` installs
offline. A data set that is not there is one clear error that says how to get it; there is
no fallback to fake data. The GANs read Fashion-MNIST's images too, framed to their sizes
by `fit_fashion_mnist`.
"""

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import zlib
from typing import NamedTuple

import numpy as np
from PIL import Image

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


class Facts(NamedTuple):
  """What a network trained on a data set is built from, known without reading it."""
  image_shape: tuple[int, int, int]
  num_classes: int
  mean: tuple  # per channel, of the training images, in [0, 1] units
  std: tuple


# CIFAR-10's statistics are the lesson's; Fashion-MNIST's were computed from its 60,000
# training images (a test checks).
FACTS = {
    "cifar10": Facts((32, 32, 3), 10, (0.4914, 0.48216, 0.44653), (0.24703, 0.24349, 0.26159)),
    "fashion_mnist": Facts((28, 28, 1), 10, (0.28604,), (0.35302,)),
}
SOURCES = ("tfds", "fashion_mnist")
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
  facts = FACTS["fashion_mnist"]
  return ImageClassificationData(images, labels, facts.mean, facts.std, facts.num_classes)


# Data sets jaxgan also reads from their own files, and how to point at them.
_OWN_FILES = {"cifar10": " (or at the official cifar-10-python.tar.gz or its "
                         "cifar-10-batches-py/ folder, read without TensorFlow)"}


def open_tfds(name: str, split: str, data_dir: str | None = None):
  """``tfds.data_source`` of a prepared tfds data set: its array_record files, read without
  TensorFlow. One clear error, naming the build command, if it is not prepared."""
  import tensorflow_datasets as tfds  # Lazy: only the tfds sources need it.
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # tfds raises several types for "not prepared".
    where = data_dir or "~/tensorflow_datasets"
    raise FileNotFoundError(
        f"tfds data set {name!r} (split {split!r}) is not prepared in {where}: on a machine "
        f"with internet run `pip install tensorflow tensorflow-datasets && tfds build {name} "
        f"--file_format=array_record` (copy the folder here if needed), or set "
        f"--config.data.data_dir to where it lives{_OWN_FILES.get(name, '')}. "
        f"({type(e).__name__}: {e})") from None


def load_tfds(name: str, split: str, data_dir: str | None = None) -> ImageClassificationData:
  """A tfds image classification set (``cifar10``), decoded into memory once."""
  source = open_tfds(name, split, data_dir)
  records = [source[i] for i in range(len(source))]  # decodes each PNG once, here
  images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  labels = np.asarray([r["label"] for r in records], np.int32)
  facts = FACTS[name]
  return ImageClassificationData(images, labels, facts.mean, facts.std, facts.num_classes)


# ----------------------------------------------------------------------------- CIFAR-10's own files

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _CifarUnpickler(pickle.Unpickler):
  """Unpickles CIFAR-10's Python batches and nothing else.

  The 2009 files are Python 2 pickles (protocol 2) of a dict with bytes keys whose
  ``b"data"`` is a uint8 numpy array, rebuilt through ``numpy.core.multiarray._reconstruct``
  (``numpy._core`` when numpy 2 writes the same thing; ``_codecs.encode`` when Python 3
  writes protocol-2 bytes). Any other global a pickle names, which is how a hostile file
  would run code, is refused.
  """
  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"refusing {module}.{name}: not in a CIFAR-10 batch")
    if name == "_reconstruct":  # the same function, wherever this numpy keeps it
      return np.ndarray.__reduce__(np.zeros(0))[0]
    return super().find_class(module, name)


def find_cifar10_files(data_dir: str | None) -> str | None:
  """The official CIFAR-10 tarball or folder ``data_dir`` points at (itself, or inside it)."""
  if not data_dir:
    return None
  if os.path.isfile(data_dir):
    return data_dir
  for candidate in (data_dir, os.path.join(data_dir, CIFAR10_FOLDER),
                    os.path.join(data_dir, CIFAR10_TARBALL)):
    if os.path.isfile(os.path.join(candidate, "test_batch")) or (
        candidate.endswith(".tar.gz") and os.path.isfile(candidate)):
      return candidate
  return None


def _read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    data = np.asarray(batch[b"data"], np.uint8)
    labels = np.asarray(batch[b"labels"], np.int32)
    images = data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)
  except Exception as e:  # pylint: disable=broad-except  (any damage: one clear error)
    raise ValueError(f"{where} is not a CIFAR-10 Python batch ({type(e).__name__}: {e}): "
                     f"download cifar-10-python.tar.gz again from "
                     f"https://www.cs.toronto.edu/~kriz/cifar.html.") from None
  if len(labels) != len(images):
    raise ValueError(f"{where} holds {len(images)} images but {len(labels)} labels.")
  return images, labels


def load_cifar10_files(path: str, split: str) -> ImageClassificationData:
  """CIFAR-10's ``train`` (data_batch_1..5) or ``test`` (test_batch) from its official
  tarball or unpacked folder; no TensorFlow, no unpacking step."""
  parts = []
  if os.path.isfile(path):
    try:
      with tarfile.open(path, "r:gz") as archive:
        for name in CIFAR10_BATCHES[split]:
          member = f"{CIFAR10_FOLDER}/{name}"
          try:
            raw = archive.extractfile(member).read()
          except KeyError:
            raise ValueError(f"{path} has no {member}: it is not cifar-10-python.tar.gz "
                             "(point --config.data.data_dir at that file or the "
                             f"{CIFAR10_FOLDER}/ folder it unpacks to).") from None
          parts.append(_read_batch(raw, f"{path}:{member}"))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
      raise ValueError(f"{path} is not a readable tar.gz ({type(e).__name__}: {e}): it may "
                       "be truncated; download cifar-10-python.tar.gz again.") from None
  else:
    for name in CIFAR10_BATCHES[split]:
      file = os.path.join(path, name)
      if not os.path.isfile(file):
        raise FileNotFoundError(f"{file} is missing: {path} is not a complete "
                                f"{CIFAR10_FOLDER}/ folder.")
      with open(file, "rb") as f:
        parts.append(_read_batch(f.read(), file))
  facts = FACTS["cifar10"]
  return ImageClassificationData(np.concatenate([p[0] for p in parts]),
                                 np.concatenate([p[1] for p in parts]), facts.mean,
                                 facts.std, facts.num_classes)


def data_set(data_config) -> str:
  """The key of `FACTS` a config's ``data`` names: ``fashion_mnist`` or the tfds name."""
  return "fashion_mnist" if data_config.source == "fashion_mnist" else data_config.name


def check_data_config(data_config) -> None:
  """A source and name this module reads, or one error naming the fix."""
  if data_config.source not in SOURCES:
    raise ValueError(f"config.data.source={data_config.source!r} is not one of "
                     f"{list(SOURCES)}: set --config.data.source=tfds (with "
                     "--config.data.name=cifar10) or fashion_mnist.")
  if data_set(data_config) not in FACTS:
    raise ValueError(f"config.data.name={data_config.name!r} is not a data set jaxgan "
                     f"knows: set --config.data.name=cifar10 (or --config.data.source="
                     "fashion_mnist).")


def load_split(data_config, split: str) -> ImageClassificationData:
  """The ``train`` or ``test`` split a config's ``data`` names, checked against `FACTS`.

  CIFAR-10 is read from its official files where ``data.data_dir`` points at them, else
  through tfds (``data.data_dir`` is then tfds's data_dir).
  """
  data_dir = data_config.data_dir or None
  if data_config.source == "fashion_mnist":
    data = load_fashion_mnist(split, data_dir)
  elif data_config.name == "cifar10" and find_cifar10_files(data_dir):
    data = load_cifar10_files(find_cifar10_files(data_dir), split)
  else:
    data = load_tfds(data_config.name, split, data_dir)
  expected = FACTS[data_set(data_config)].image_shape
  if data.images.shape[1:] != expected:
    raise ValueError(f"{data_set(data_config)} {split} images are {data.images.shape[1:]}, "
                     f"not {expected}: the data set in {data_dir or 'the default folder'} "
                     "is not the one its name says.")
  return data


# ----------------------------------------------------------------------------- for the GANs

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


def fashion_mnist_images(size: int, split: str = "train", data_dir: str | None = None,
                         max_images: int = 0) -> np.ndarray:
  """Fashion-MNIST's images of ``split`` as (N, size, size, 1) uint8 (`fit_fashion_mnist`).

  ``max_images`` > 0 keeps only the first images (tests).
  """
  images = load_fashion_mnist(split, data_dir or None).images
  if max_images:
    images = images[:max_images]
  return fit_fashion_mnist(images, size)
