"""Image data sets read from disk: a folder of image files or an LSUN-style LMDB.

These are for data too big to hold in device memory (LSUN bedrooms: 3M JPEGs).
A source decodes, resizes and centre-crops one image on the host; `make_loader`
wraps it in a grain pipeline that shuffles per epoch, repeats, batches and
shards deterministically, so a resumed run can continue from a batch number.

Corrupt files are common in scraped data sets. Rather than crash (or shrink a
batch, which would change its shape and force a recompile), a source replaces
an unreadable item by the next readable one and reports how many it passed
over in the ``"skipped"`` field, which the training loop can sum.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import flags
from absl import logging
from PIL import Image

if TYPE_CHECKING:
  import grain

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm"})

_LSUN_HINT = (
    "LSUN ships each category as a zipped LMDB folder such as `bedroom_train_lmdb` "
    "(holding data.mdb); download it with LSUN's download.py "
    "(python download.py -c bedroom), unzip it and pass that folder. "
    "Reading it needs the lmdb package: `pip install lmdb`.")


def _is_image_file(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_image_files(root: str | os.PathLike, recursive: bool = True) -> list[str]:
  """Returns the sorted paths of the image files under ``root``.

  Files are recognised by extension (`IMAGE_EXTENSIONS`, any case); others are
  ignored. Hidden folders are not skipped.

  Raises:
    FileNotFoundError: ``root`` is not a folder.
    ValueError: ``root`` holds no image files.
  """
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"Image folder {root!r} does not exist (or is not a folder). Check the "
        "path, or download and unpack the data set there first.")
  if recursive:
    paths = [
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(root, followlinks=True)
        for name in names if _is_image_file(name)
    ]
  else:
    paths = [
        entry.path for entry in os.scandir(root)
        if entry.is_file() and _is_image_file(entry.name)
    ]
  if not paths:
    where = "under" if recursive else "directly in"
    raise ValueError(
        f"No image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found {where} "
        f"{root!r}. Point to the folder that holds the images"
        + ("" if recursive else ", or list recursively") + ".")
  return sorted(paths)


def load_image(path_or_bytes: str | os.PathLike | bytes, size: int,
               channels: int = 3, width: int | None = None) -> np.ndarray:
  """Decodes an image and fits it to ``size`` × ``width`` (`fit_frame`).

  With ``width`` None (a square) the shorter side is scaled to ``size`` and the centre
  square kept. JPEGs are first decoded at a reduced DCT scale when that still leaves at
  least the output's pixels per side, which is much faster for LSUN-sized inputs.

  Args:
    path_or_bytes: a file path or the encoded bytes (e.g. an LMDB value).
    size: output height.
    channels: 3 for RGB, 1 for grayscale (L). Alpha is dropped; palette
      images are expanded.
    width: output width (default ``size``).

  Returns:
    uint8 array of shape (size, width, channels).

  Raises:
    OSError (including PIL.UnidentifiedImageError) or another exception on
    unreadable or truncated data.
  """
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}.")
  width = size if width is None else width
  mode = "L" if channels == 1 else "RGB"
  source = io.BytesIO(path_or_bytes) if isinstance(
      path_or_bytes, (bytes, bytearray, memoryview)) else os.fspath(path_or_bytes)
  with Image.open(source) as img:
    if img.format == "JPEG":
      img.draft(mode, (width, size))
    # PIL decodes lazily; load() now so truncation raises here (it does,
    # as long as ImageFile.LOAD_TRUNCATED_IMAGES stays False) and not later.
    img.load()
    return fit_frame(img, size, width, channels)


def fit_frame(img: Image.Image, height: int, width: int, channels: int = 3) -> np.ndarray:
  """A decoded image resized to cover ``height`` × ``width`` and centre-cropped to it.

  The largest centred box of the output's aspect is resized in one step (PIL's
  antialiased bicubic): for a square output that is the centre square with the shorter
  side scaled to ``height``; for a wider one (the WGAN's 64×80), an image at least that
  wide keeps its height scaled to ``height``, and a narrower one loses rows above and
  below instead.

  Returns:
    uint8 (height, width, channels): grayscale (L) for 1 channel, RGB for 3.
  """
  mode = "L" if channels == 1 else "RGB"
  if img.mode == "P" and "transparency" in img.info:
    img = img.convert("RGBA")  # PIL warns on P -> RGB with transparency.
  if img.mode != mode:
    img = img.convert(mode)
  w, h = img.size
  if w * height > h * width:  # wider than the output: crop the sides
    box_w, box_h = h * width / height, float(h)
  else:  # narrower (or the same shape): crop top and bottom
    box_w, box_h = float(w), w * height / width
  left, top = (w - box_w) / 2, (h - box_h) / 2
  if (w, h) != (width, height):  # PIL's resample at scale 1 would copy it anyway
    img = img.resize((width, height), Image.Resampling.BICUBIC,
                     box=(left, top, left + box_w, top + box_h))
  array = np.asarray(img, dtype=np.uint8)
  return array[..., None] if channels == 1 else array


def sample_rows(n: int, fraction: float, seed: int) -> np.ndarray:
  """Sorted indices of a deterministic random ``fraction`` of ``range(n)``: the items a
  source keeps at ``fraction``, seeded by ``seed``."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
  if fraction == 1.0:
    return np.arange(n, dtype=np.int64)
  keep = max(1, int(round(n * fraction)))
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(n, size=keep, replace=False)).astype(np.int64)


class _SkippingSource:
  """Random access over items that may fail to decode; see the module docstring."""

  def __init__(self, size: int, channels: int, width: int | None = None):
    if size < 1:
      raise ValueError(f"size must be positive, got {size}.")
    if channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {channels}.")
    self.size = int(size)
    self.width = self.size if width is None else int(width)
    self.channels = int(channels)

  def __len__(self) -> int:
    raise NotImplementedError

  def _load(self, index: int) -> np.ndarray:
    raise NotImplementedError

  def _describe(self, index: int) -> str:
    raise NotImplementedError

  def _where(self) -> str:
    raise NotImplementedError

  def _prepare(self) -> None:
    """Acquires per-process resources; its errors are not per-item, so not skipped."""

  def describe(self, index: int) -> str:
    """Where item ``index`` comes from: a file path, or an LMDB and key."""
    return self._describe(index)

  def load_or_none(self, index: int) -> np.ndarray | None:
    """Item ``index`` decoded, or None (with a warning naming it) if it cannot be."""
    self._prepare()
    try:
      return self._load(index)
    except Exception as e:  # pylint: disable=broad-except
      # Corrupt files make PIL raise all sorts (OSError, SyntaxError,
      # struct.error, ...); any of them means "skip this one".
      logging.warning("Skipping unreadable image %s: %s: %s",
                      self._describe(index), type(e).__name__, e)
      return None

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    n = len(self)
    index = int(index)
    for skipped in range(n):
      image = self.load_or_none((index + skipped) % n)
      if image is not None:
        return {"image": image, "skipped": np.int32(skipped)}
    raise ValueError(
        f"None of the {n} images in {self._where()} could be read (see the "
        "warnings above); the data set is corrupt or not an image data set.")

  def check_readable(self) -> None:
    """Reads one image now (skipping unreadable ones, as any read does), so a folder with
    none readable is one clear error before training rather than inside a worker."""
    self[0]


class ImageFolderSource(_SkippingSource):
  """Grain random-access source over image files.

  Item ``i`` is ``{"image": uint8 (size, width, channels), "skipped": int32}``:
  the ``i``-th file (sorted order) after `load_image`, or, if it cannot be
  read, the next readable file (wrapping round), with ``skipped`` counting the
  files passed over. A warning names each unreadable file.

  Args:
    root_or_paths: a folder (searched recursively, see `list_image_files`) or
      a sequence of file paths.
    size: output height (and width, unless ``width`` is given).
    channels: 3 (RGB) or 1 (grayscale).
    fraction: keep this random fraction of the files (at least one); the
      lesson trains WGAN on 10% of LSUN. The sample depends only on ``seed``
      and the file list.
    seed: seed of that sample.
    width: output width (`fit_frame`); default ``size``.
    rows: only these files of the sorted list (a split, `split_rows`); ``fraction``
      then samples among them.
  """

  def __init__(self, root_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
               size: int, channels: int = 3, fraction: float = 1.0, seed: int = 0,
               width: int | None = None, rows: np.ndarray | None = None):
    super().__init__(size, channels, width)
    if isinstance(root_or_paths, (str, os.PathLike)):
      self.root = os.fspath(root_or_paths)
      paths = list_image_files(self.root)
    else:
      paths = [os.fspath(p) for p in root_or_paths]
      self.root = None
      if not paths:
        raise ValueError("ImageFolderSource got an empty list of paths.")
    self.num_files = len(paths)
    if rows is not None:
      paths = [paths[int(r)] for r in rows]
    keep = sample_rows(len(paths), fraction, seed)
    self.paths = [paths[k] for k in keep]

  def __len__(self) -> int:
    return len(self.paths)

  def _load(self, index: int) -> np.ndarray:
    return load_image(self.paths[index], self.size, self.channels, self.width)

  def _describe(self, index: int) -> str:
    return self.paths[index]

  def _where(self) -> str:
    return repr(self.root) if self.root else "the given file list"

  def __repr__(self) -> str:
    return (f"ImageFolderSource({self._where()}, n={len(self)}, size={self.size}, "
            f"channels={self.channels})")


class ZipImageSource(_SkippingSource):
  """Image files inside a zip archive, read in place (no unpacking step).

  Items as `ImageFolderSource`'s; ``members`` are the archive's names, in order. Each
  thread and process opens the archive for itself (a ``ZipFile`` is not safe to share),
  and the source pickles without its handles.
  """

  def __init__(self, path: str | os.PathLike, members: Sequence[str], size: int,
               channels: int = 3):
    super().__init__(size, channels)
    self.path, self.members = os.fspath(path), list(members)
    if not self.members:
      raise ValueError(f"ZipImageSource got no members of {self.path}.")
    self._local = threading.local()

  def _archive(self) -> zipfile.ZipFile:
    if getattr(self._local, "pid", None) != os.getpid():
      self._local.archive, self._local.pid = zipfile.ZipFile(self.path), os.getpid()
    return self._local.archive

  def __len__(self) -> int:
    return len(self.members)

  def _load(self, index: int) -> np.ndarray:
    return load_image(self._archive().read(self.members[index]), self.size, self.channels)

  def _describe(self, index: int) -> str:
    return f"{self.path}:{self.members[index]}"

  def _where(self) -> str:
    return repr(self.path)

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    del state["_local"]
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._local = threading.local()

  def __repr__(self) -> str:
    return f"ZipImageSource({self.path!r}, n={len(self)}, size={self.size})"


def zip_members(path: str, folder: str) -> list[str]:
  """The sorted image files of ``folder`` inside the zip at ``path``, at any depth (the
  official CycleGAN archives keep ``horse2zebra/trainA/...``).

  Raises:
    ValueError: ``path`` is not a readable zip archive.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
  except (zipfile.BadZipFile, OSError) as e:
    raise ValueError(f"{path} is not a readable zip archive ({type(e).__name__}: {e}): it "
                     "may be truncated; download it again.") from None
  return sorted(n for n in names if _is_image_file(n)
                and os.path.basename(os.path.dirname(n)) == folder)


def split_rows(num_items: int, heldout_fraction: float, seed: int):
  """A fixed split of a data set's items: ``(training rows, held-out rows)``, each sorted.

  As fastai 0.7's ``get_cv_idxs`` holds out a validation set (``int(fraction · n)``
  rows of a seeded permutation), here over an LMDB's key order or a folder's sorted file
  list; fastai's own split (its permutation of its CSV's order) cannot be recovered, so
  the proportions are the lesson's, not the images.
  """
  heldout = int(heldout_fraction * num_items)
  order = np.random.default_rng(seed).permutation(num_items)
  return np.sort(order[heldout:]), np.sort(order[:heldout])


def _import_lmdb():
  try:
    import lmdb  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("Reading LMDB data sets (LSUN) needs the lmdb package: "
                      "`pip install lmdb`.") from e
  return lmdb


def _lmdb_data_file(path: str) -> str:
  return os.path.join(path, "data.mdb") if os.path.isdir(path) else path


# py-lmdb refuses to open one database twice in a process, so every source
# (and every unpickled copy) reading a database shares one handle per process.
_ENVS: dict[str, tuple[int, Any]] = {}
_ENVS_LOCK = threading.Lock()


def _shared_env(path: str):
  with _ENVS_LOCK:
    pid, env = _ENVS.get(path, (None, None))
    if pid != os.getpid():  # Never reuse a handle inherited through fork().
      lmdb = _import_lmdb()
      env = lmdb.open(path, subdir=os.path.isdir(path), readonly=True, lock=False,
                      readahead=False, meminit=False, max_readers=512)
      _ENVS[path] = (os.getpid(), env)
    return env


class LmdbSource(_SkippingSource):
  """Grain random-access source over an LSUN-style LMDB (values = encoded images).

  Same items as `ImageFolderSource`; keys are arbitrary and read in database
  (sorted byte) order. Listing LSUN bedrooms' 3M keys takes a while, so the
  key list is cached as ``.npy`` in ``cache_dir``, named after the absolute
  database path and its size on disk, and memory-mapped on later runs (worker
  processes then share it through the page cache).

  The source pickles without its LMDB handle and reopens the database lazily,
  read-only and lock-free, in whichever process reads from it (grain workers).

  Args:
    path: the LMDB folder (holding data.mdb), e.g. ``bedroom_train_lmdb``, or
      the data file itself.
    size, channels, fraction, seed, width: as for `ImageFolderSource`.
    cache_dir: where the key list is cached; default ``~/.cache/jaxgan``.
    rows: only these rows of the key list (a split, `split_rows`); ``fraction`` then
      samples among them.
  """

  def __init__(self, path: str | os.PathLike, size: int, channels: int = 3,
               fraction: float = 1.0, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, width: int | None = None,
               rows: np.ndarray | None = None):
    super().__init__(size, channels, width)
    self.path = os.path.abspath(os.fspath(path))
    if not os.path.exists(_lmdb_data_file(self.path)):
      raise FileNotFoundError(f"No LMDB database at {self.path!r}. {_LSUN_HINT}")
    _import_lmdb()
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else os.path.join(
        os.path.expanduser("~"), ".cache", "jaxgan")
    self._env = None
    self._keys = None
    self.keys_file = self._cached_key_file(cache_dir)
    n = len(self._key_array())
    if n == 0:
      raise ValueError(f"LMDB database {self.path!r} is empty.")
    # None = all keys: spares pickling a 3M-entry index array to every worker.
    self.indices = None if rows is None else np.asarray(rows, np.int64)
    if fraction != 1.0:
      base = np.arange(n) if self.indices is None else self.indices
      self.indices = base[sample_rows(len(base), fraction, seed)]
    self._len = n if self.indices is None else len(self.indices)

  @property
  def num_keys(self) -> int:
    """Keys in the whole database (a split's rows index them)."""
    return len(self._key_array())

  def keys(self, rows) -> list[bytes]:
    """The database keys at ``rows`` of the key list."""
    keys = self._key_array()
    return [bytes(keys[int(r)])[:-1] for r in rows]

  def _open(self):
    if self._env is None:
      self._env = _shared_env(self.path)
    return self._env

  def _prepare(self) -> None:
    self._open()
    self._key_array()

  def _cached_key_file(self, cache_dir: str) -> str:
    size = os.path.getsize(_lmdb_data_file(self.path))
    tag = hashlib.sha1(f"{self.path}\0{size}".encode()).hexdigest()[:16]
    keys_file = os.path.join(cache_dir, f"lmdb_keys_{tag}.npy")
    if os.path.exists(keys_file):
      try:
        n = len(np.load(keys_file, mmap_mode="r"))
        if n == self._open().stat()["entries"]:
          return keys_file
      except (OSError, ValueError):
        pass
      logging.warning("Key cache %s is stale or unreadable; rebuilding.", keys_file)
    logging.info("Listing the keys of %s (once; cached in %s).", self.path, keys_file)
    with self._open().begin(write=False) as txn:
      keys = list(txn.cursor().iternext(keys=True, values=False))
    # numpy's fixed-width bytes dtype drops trailing NUL bytes, and keys are
    # arbitrary bytes, so each key is stored with a one-byte terminator.
    width = max((len(k) for k in keys), default=0) + 1
    array = np.array([k + b"|" for k in keys], dtype=f"S{width}")
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{keys_file}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, keys_file)  # Atomic: concurrent hosts may build it too.
    return keys_file

  def _key_array(self) -> np.ndarray:
    if self._keys is None:
      self._keys = np.load(self.keys_file, mmap_mode="r")
    return self._keys

  def _key(self, index: int) -> bytes:
    row = index if self.indices is None else self.indices[index]
    return bytes(self._key_array()[row])[:-1]

  def __len__(self) -> int:
    return self._len

  def _load(self, index: int) -> np.ndarray:
    key = self._key(index)
    with self._open().begin(write=False, buffers=False) as txn:
      value = txn.get(key)
    if value is None:
      raise KeyError(f"key {key!r} is listed but missing (stale key cache?)")
    return load_image(value, self.size, self.channels, self.width)

  def _describe(self, index: int) -> str:
    return f"{self.path} [key {self._key(index)!r}]"

  def _where(self) -> str:
    return repr(self.path)

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_env"] = None  # LMDB handles and mmaps do not cross processes.
    state["_keys"] = None
    return state

  def __repr__(self) -> str:
    return (f"LmdbSource({self.path!r}, n={len(self)}, size={self.size}, "
            f"channels={self.channels})")


_ENDLESS = 1 << 62  # stream positions: more than any run reads


class _ReadAt:
  """Stream position → the source's item there (picklable, for grain's workers)."""

  def __init__(self, source, sampler):
    self.source, self.sampler = source, sampler

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    return self.source[self.sampler.at(position)]


def make_loader(source, batch_size: int, *, seed: int, start_batch: int = 0,
                num_workers: int = 0, shard_index: int = 0, shard_count: int = 1,
                read_options: grain.ReadOptions | None = None) -> grain.IterDataset:
  """An endless, shuffled, batched grain pipeline over a random-access ``source``.

  Order: every epoch is a fresh permutation of the source (a different one each
  epoch, all fixed by ``seed``); epochs follow each other without a gap, and
  batches may straddle an epoch boundary (`jaxgan.data.feed.StreamSampler`). Global batch ``k`` holds elements
  ``k * batch_size ... (k + 1) * batch_size - 1`` of that stream, so **batch k
  is a pure function of (seed, k)**: it does not depend on how many batches
  were read before, on ``num_workers``, or on the process. Resuming at step k
  is therefore just ``make_loader(..., start_batch=k)``; no iterator state
  needs checkpointing.

  Multi-host: each host passes its ``shard_index`` of ``shard_count`` and gets
  rows ``[shard_index * b, (shard_index + 1) * b)`` of every global batch,
  ``b = batch_size // shard_count``; only those rows are decoded.

  Args:
    source: `ImageFolderSource`, `LmdbSource`, or any object with ``__len__``
      and ``__getitem__`` returning dicts of numpy arrays.
    batch_size: the global batch size.
    seed: shuffle seed.
    start_batch: index of the first global batch to yield.
    num_workers: grain worker processes (0: threads in this process only).
    shard_index, shard_count: this host's slice of each global batch.
    read_options: grain read threads/buffer (default: up to 8 threads, 2
      batches in flight per thread).

  Returns:
    A ``grain.IterDataset``; iterating it yields dicts of stacked arrays,
    e.g. ``{"image": (b, H, W, C) uint8, "skipped": (b,) int32}``.
  """
  # Imported here: grain pulls in jax and orbax when they are installed
  # (seconds), which the sources alone do not need.
  import grain  # pylint: disable=g-import-not-at-top

  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}.")
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f"Need 0 <= shard_index < shard_count, got {shard_index=}, "
                     f"{shard_count=}.")
  if batch_size % shard_count:
    raise ValueError(f"The global batch_size {batch_size} must be divisible by "
                     f"shard_count {shard_count} (the number of hosts).")
  if start_batch < 0:
    raise ValueError(f"start_batch must be >= 0, got {start_batch}.")
  if len(source) == 0:
    raise ValueError(f"The source {source!r} is empty.")
  from jaxgan.data import feed  # pylint: disable=g-import-not-at-top  (imports jax)

  local_batch = batch_size // shard_count
  # Position p of the endless stream is the image `feed.StreamSampler` puts there: the
  # same order as data prepared once (`jaxgan.data.prepared`) is read in.
  ds = grain.MapDataset.range(_ENDLESS).map(
      _ReadAt(source, feed.StreamSampler(len(source), batch_size, seed)))
  # Global batch k = local batches k * shard_count ... k * shard_count + shard_count - 1.
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds[shard_index::shard_count]
  ds = ds[start_batch:]
  if read_options is None:
    threads = max(1, min(8, os.cpu_count() or 1))
    read_options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
  it = ds.to_iter_dataset(read_options)
  if num_workers > 0:
    # grain's worker start-up reads absl flags and raises UnparsedFlagAccessError
    # outside an absl app (tests, notebooks); defaults are what we want there.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def rows_from(source, batch_size: int, *, seed: int, num_workers: int = 0,
              num_threads: int = 0):
  """`make_loader` as a `jaxgan.data.feed.StreamedFeed` wants it: ``start -> (this
  process's rows of batch k, unreadable files skipped)`` for k = start, start + 1, ...

  ``num_threads``: decoding threads per process (0: up to 8).
  """
  import jax  # pylint: disable=g-import-not-at-top

  def rows(start: int):
    import grain  # pylint: disable=g-import-not-at-top  (slow to import; only here)
    read_options = (grain.ReadOptions(num_threads=num_threads,
                                      prefetch_buffer_size=2 * num_threads)
                    if num_threads > 0 else None)
    for batch in make_loader(source, batch_size, seed=seed, start_batch=start,
                             num_workers=num_workers, read_options=read_options,
                             shard_index=jax.process_index(),
                             shard_count=jax.process_count()):
      yield batch["image"], int(np.sum(batch["skipped"]))
  return rows


def split_source(data, size: int, seed: int, split: str, width: int | None = None):
  """The images a WGAN config's ``data`` names (an image folder or an LSUN LMDB), as a
  source of one side of its fixed split.

  With ``data.heldout_fraction`` > 0 the items are split once (`split_rows`, seeded by
  ``data.split_seed``): ``split="train"`` gives the training rows (a ``data.fraction``
  sample of them, seeded by ``seed``), ``"heldout"`` the rest; with 0 there is no split
  and ``"train"`` is every item.

  Raises:
    ValueError: ``"heldout"`` without a split.
  """
  lsun = data.source == "lsun"
  if lsun:
    make = lambda **kw: LmdbSource(data.path, size, data.channels, seed=seed,
                                   cache_dir=data.cache_dir or None, width=width, **kw)
    total = make().num_keys
  else:
    make = lambda **kw: ImageFolderSource(data.path, size, data.channels, seed=seed,
                                          width=width, **kw)
    total = len(list_image_files(data.path))
  if data.heldout_fraction <= 0:
    if split == "heldout":
      raise ValueError(f"{data.path} has no held-out split (data.heldout_fraction=0): set "
                       "--config.data.heldout_fraction=0.2, or --config.eval.heldout=PATH.")
    return make(fraction=data.fraction)
  train_rows, heldout_rows = split_rows(total, data.heldout_fraction, data.split_seed)
  if split == "train":
    return make(fraction=data.fraction, rows=train_rows)
  if not len(heldout_rows):
    raise ValueError(f"{data.path}'s {total} images leave none held out at "
                     f"data.heldout_fraction={data.heldout_fraction}: raise it, or set "
                     "--config.eval.heldout=PATH.")
  return make(rows=heldout_rows)
