"""Image data sets decoded once: uint8 arrays on disk, read at memory speed.

Decoding a WebP and resizing it costs about a millisecond of a CPU core; a GPU's WGAN
step eats tens of thousands of images a second. So, as the lesson shrank LSUN once with
``md.resize(128)`` before training, ``python -m experiments.prepare`` (`prepare`) decodes
a folder or LSUN LMDB once, at the frame a run stores (`folder.fit_frame`: isize ×
(isize + margin)), and training reads raw pixels (`PreparedImages`):

  PREPARED/index.json            what the folder holds; written last, with every shard whole
  PREPARED/train-00000.npy ...   uint8 (rows, H, W, C): the training split in the source's
                                 order, ``shard_rows`` images a shard (the last fewer)
  PREPARED/train-00000.json ...  that shard's unreadable images (their rows hold zeros)
  PREPARED/heldout-00000.npy ... the held-out split, the same way

Why ``.npy`` shards rather than ``array_record``: every image has the same shape, so a
shard is one array that numpy memory-maps with no parsing; a batch is one fancy index
into the page cache, and a whole split goes to the device in large contiguous blocks.
``array_record`` serialises each record separately (good for examples of varying size)
and every read would parse and copy it. A shard is written under a temporary name and
renamed when complete, so an interrupted prepare never leaves a shard that looks whole;
run again, it keeps the whole shards and writes the rest.

Batch order is the streamed path's (`feed.StreamSampler` over the source's items), and
an unreadable image is replaced by the next readable one, as `folder._SkippingSource`
does, so a prepared set gives a run the very batches the decoding path would
(`PreparedOrder`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

FORMAT = "jaxgan-prepared-1"
SHARD_ROWS = 16384  # 64 x 80 x 3 images: 252 MB a shard; LSUN bedrooms: ~150 shards
_CHUNK = 256  # images a decoding task


class PreparedError(ValueError):
  """A prepared folder that cannot be used as it is; the message names the fix."""


# ----------------------------------------------------------------------------- writing

def shard_name(part: str, index: int) -> str:
  return f"{part}-{index:05d}.npy"


def _decode_chunk(args) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
  """Rows ``start .. stop − 1`` of a source, decoded; unreadable ones as zeros."""
  source, start, stop = args
  out = np.zeros((stop - start, source.size, source.width, source.channels), np.uint8)
  bad = []
  for row in range(start, stop):
    image = source.load_or_none(row)
    if image is None:
      bad.append((row, source.describe(row)))
    else:
      out[row - start] = image
  return start, out, bad


_WORKER_SOURCES: dict[str, Any] = {}


def _init_worker(sources: dict[str, Any]) -> None:
  _WORKER_SOURCES.update(sources)


def _decode_in_worker(args):
  part, start, stop = args
  return _decode_chunk((_WORKER_SOURCES[part], start, stop))


def _shard_is_whole(path: str, rows: int, frame: tuple[int, int, int]) -> bool:
  try:
    check_shard(path, rows, frame)
  except PreparedError:
    return False
  return os.path.exists(path[:-len(".npy")] + ".json")


def _write_json(path: str, value) -> None:
  tmp = f"{path}.partial"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


def prepare(sources: dict[str, Any], out: str, description: dict, *, workers: int = 0,
            shard_rows: int = SHARD_ROWS, progress: bool = True,
            texts: dict[str, str] | None = None, stop_after_shards: int = -1) -> dict:
  """Decodes each split's source once into ``out`` (see the module docstring).

  Args:
    sources: ``{"train": source, "heldout": source}`` (`folder.split_source` at the run's
      stored frame, every item: no ``fraction``); a part may be missing.
    out: the folder to write; whole shards already there are kept (a resumed prepare).
    description: what the index records besides the shards: the source, the frame
      (``size``, ``margin``, ``channels``) and the split (``heldout_fraction``,
      ``split_seed``); a folder prepared with another description is refused.
    workers: decoding processes (0: this process).
    shard_rows: images a shard.
    progress: a progress bar (images/s, time left).
    texts: other files to write into ``out`` (``{"heldout.txt": ...}``).
    stop_after_shards: >= 0: return after writing that many shards (tests of resuming).

  Returns:
    The index, also written to ``out/index.json``.
  """
  os.makedirs(out, exist_ok=True)
  job = {**description, "shard_rows": shard_rows}  # a shard's rows depend on it too
  _check_same_job(out, job)
  _write_json(os.path.join(out, "job.json"), job)
  for name, text in (texts or {}).items():
    with open(os.path.join(out, name + ".partial"), "w") as f:
      f.write(text)
    os.replace(os.path.join(out, name + ".partial"), os.path.join(out, name))
  frame = _frame(description)
  todo = []  # (part, shard index, start, stop) not yet whole on disk
  for part, source in sources.items():
    for s in range(-(-len(source) // shard_rows)):
      start, stop = s * shard_rows, min((s + 1) * shard_rows, len(source))
      if not _shard_is_whole(os.path.join(out, shard_name(part, s)), stop - start, frame):
        todo.append((part, s, start, stop))
  total = sum(stop - start for *_, start, stop in todo)
  if todo:
    logging.info("Preparing %d images into %s (%d shards to write, %d workers).", total,
                 out, len(todo), workers)
  written, began = 0, time.perf_counter()
  chunks = [(part, s, a, min(a + _CHUNK, stop))
            for part, s, start, stop in todo for a in range(start, stop, _CHUNK)]
  bar = _progress_bar(total, progress)
  with _decoder(sources, workers) as decode:
    results = decode([(part, a, b) for part, _, a, b in chunks])
    open_shard = None  # (part, shard index, start, stop, memmap, unreadable rows)
    for (part, s, a, b), (_, images, bad) in zip(chunks, results):
      if open_shard is None or open_shard[:2] != (part, s):
        start, stop = next((t[2], t[3]) for t in todo if t[:2] == (part, s))
        path = os.path.join(out, shard_name(part, s))
        array = np.lib.format.open_memmap(path + ".partial", "w+", np.uint8,
                                          (stop - start,) + frame)
        open_shard = (part, s, start, stop, array, [])
      _, _, start, stop, array, unreadable = open_shard
      array[a - start:b - start] = images
      unreadable.extend(bad)
      bar.update(b - a)
      if b == stop:  # the shard is whole: its skips first, then the rename
        array.flush()
        del array
        path = os.path.join(out, shard_name(part, s))
        _write_json(path[:-len(".npy")] + ".json",
                    {"rows": stop - start, "unreadable": unreadable})
        os.replace(path + ".partial", path)
        open_shard = None
        written += 1
        if written == stop_after_shards:
          bar.close()
          return {}
  bar.close()
  index = _write_index(out, sources, description, shard_rows, time.perf_counter() - began)
  logging.info("Prepared %s: %s", out, summary(index))
  return index


class _InProcess:
  def __init__(self, sources):
    self.sources = sources

  def __enter__(self):
    return lambda tasks: (_decode_chunk((self.sources[p], a, b)) for p, a, b in tasks)

  def __exit__(self, *exc):
    return False


class _Pool:
  def __init__(self, sources, workers):
    # spawn, not fork: the parent may hold JAX's threads, which fork does not copy.
    self.pool = multiprocessing.get_context("spawn").Pool(
        workers, initializer=_init_worker, initargs=(sources,))
    self.window = 4 * workers

  def __enter__(self):
    return self.decode

  def decode(self, tasks):
    """Results in order, with at most a few chunks a worker in flight: decoded images
    must not pile up in memory while the disk writes them more slowly."""
    tasks, pending = iter(tasks), collections.deque()
    for task in itertools.islice(tasks, self.window):
      pending.append(self.pool.apply_async(_decode_in_worker, (task,)))
    while pending:
      result = pending.popleft().get()
      task = next(tasks, None)
      if task is not None:
        pending.append(self.pool.apply_async(_decode_in_worker, (task,)))
      yield result

  def __exit__(self, *exc):
    self.pool.terminate()
    self.pool.join()
    return False


def _decoder(sources, workers: int):
  return _Pool(sources, workers) if workers > 0 else _InProcess(sources)


def _progress_bar(total: int, on: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, unit="img", unit_scale=True, disable=not on or not total,
              desc="prepare", smoothing=0.05)


def _frame(description: dict) -> tuple[int, int, int]:
  return (description["size"], description["size"] + description["margin"],
          description["channels"])


def _check_same_job(out: str, description: dict) -> None:
  job = os.path.join(out, "job.json")
  if os.path.exists(job):
    with open(job) as f:
      before = json.load(f)
    if before != description:
      changed = sorted(k for k in set(before) | set(description)
                       if before.get(k) != description.get(k))
      raise PreparedError(f"{out} holds a prepare of other settings ({', '.join(changed)} "
                          "differ): use a new --out folder, or delete this one.")


def _write_index(out, sources, description, shard_rows, seconds) -> dict:
  parts, unreadable = {}, []
  for part, source in sources.items():
    count = len(source)
    shards = [shard_name(part, s) for s in range(-(-count // shard_rows))]
    for name in shards:
      with open(os.path.join(out, name[:-len(".npy")] + ".json")) as f:
        unreadable.extend(r[1] for r in json.load(f)["unreadable"])
    parts[part] = {"count": count, "shards": shards}
  index = {"format": FORMAT, **description, "shard_rows": shard_rows, "parts": parts,
           "unreadable": {"count": len(unreadable), "names": unreadable},
           "complete": True, "last_prepare_seconds": round(seconds, 1)}
  _write_json(os.path.join(out, "index.json"), index)
  return index


def summary(index: dict) -> str:
  h, w, c = _frame(index)
  counts = ", ".join(f"{p['count']:,} {name}" for name, p in index["parts"].items())
  return (f"{counts} images at {h}x{w}x{c} from {index['source']} "
          f"({index['unreadable']['count']} unreadable skipped)")


# ----------------------------------------------------------------------------- reading

def check_shard(path: str, rows: int, frame: tuple[int, int, int]) -> np.ndarray:
  """The shard at ``path`` memory-mapped, if it holds ``rows`` images of ``frame``."""
  name = os.path.basename(path)
  if not os.path.exists(path):
    raise PreparedError(f"shard {path} is missing: rerun the prepare command for this "
                        "folder to write it again.")
  try:
    array = np.load(path, mmap_mode="r")
  except (OSError, ValueError) as e:
    raise PreparedError(f"shard {path} is damaged ({e}): delete it and rerun the prepare "
                        "command for this folder to write it again.") from None
  if array.dtype != np.uint8 or array.shape != (rows,) + tuple(frame):
    raise PreparedError(f"shard {path} is damaged: it holds {array.dtype} {array.shape}, "
                        f"not uint8 {(rows,) + tuple(frame)}; delete {name} and rerun the "
                        "prepare command for this folder.")
  return array


def read_index(path: str, fix: str) -> dict:
  """``path/index.json``, checked to be a finished prepare; ``fix`` is the command to run."""
  index_file = os.path.join(path, "index.json")
  if not os.path.exists(index_file):
    if os.path.exists(os.path.join(path, "job.json")):
      raise PreparedError(f"the prepare of {path} did not finish: rerun it to continue "
                          f"where it stopped ({fix}).")
    raise PreparedError(f"{path} is not a prepared data set (no index.json): {fix}.")
  with open(index_file) as f:
    index = json.load(f)
  if index.get("format") != FORMAT or not index.get("complete"):
    raise PreparedError(f"{index_file} is not a finished {FORMAT} index: {fix}.")
  return index


class PreparedImages:
  """One part of a prepared folder, memory-mapped: ``take(rows)`` reads a batch.

  Attributes:
    unreadable: bool per row: an image the prepare could not decode (stored as zeros).
  """

  def __init__(self, path: str, index: dict, part: str):
    if part not in index["parts"]:
      raise PreparedError(f"{path} holds no {part} images: prepare it with a held-out "
                          "split (data.heldout_fraction > 0), or set --config.eval.heldout "
                          "to images the run never trains on.")
    self.path, self.frame = path, _frame(index)
    info, rows = index["parts"][part], index["shard_rows"]
    self.count, self.shard_rows = info["count"], rows
    self.shards = []
    self.unreadable = np.zeros(self.count, bool)
    for s, name in enumerate(info["shards"]):
      n = min(rows, self.count - s * rows)
      self.shards.append(check_shard(os.path.join(path, name), n, self.frame))
      sidecar = os.path.join(path, name[:-len(".npy")] + ".json")
      try:
        with open(sidecar) as f:
          unreadable = json.load(f)["unreadable"]
      except (OSError, ValueError, KeyError) as e:
        raise PreparedError(f"{sidecar} is missing or damaged ({e}): delete {name} and "
                            "rerun the prepare command for this folder.") from None
      for row, _ in unreadable:
        self.unreadable[row] = True

  def __len__(self) -> int:
    return self.count

  @property
  def nbytes(self) -> int:
    return self.count * int(np.prod(self.frame))

  def take(self, rows: np.ndarray) -> np.ndarray:
    """uint8 (len(rows), H, W, C): the images at ``rows``, in that order."""
    rows = np.asarray(rows, np.int64)
    shard = rows // self.shard_rows
    if len(rows) and shard.min() == shard.max():  # the common case on small sets
      return np.take(self.shards[int(shard[0])], rows - shard[0] * self.shard_rows, axis=0)
    out = np.empty((len(rows),) + self.frame, np.uint8)
    for s in np.unique(shard):
      at = np.flatnonzero(shard == s)
      out[at] = np.take(self.shards[int(s)], rows[at] - s * self.shard_rows, axis=0)
    return out

  def blocks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, images)`` in order, each block within one shard (for uploads)."""
    for s, shard in enumerate(self.shards):
      for a in range(0, len(shard), size):
        yield s * self.shard_rows + a, np.asarray(shard[a:a + size])


class PreparedOrder:
  """Which prepared rows make up batch k, as the decoding path would read them.

  The decoding path reads item ``i`` of its source (a ``fraction`` sample of the training
  split, `folder.split_source`) at each position of a `feed.StreamSampler`, and passes
  an unreadable item over for the next readable one. Here item ``i`` is prepared row
  ``items[i]``; ``substitute`` follows the same rule over the rows' ``unreadable`` flags.
  """

  def __init__(self, images: PreparedImages, items: np.ndarray, sampler):
    readable = np.flatnonzero(~images.unreadable[items])
    if not len(readable):
      raise PreparedError(f"none of the images prepared in {images.path} could be read "
                          "(index.json names them): check that the prepare's data.path "
                          "holds images, then prepare again into a new folder.")
    n = len(items)
    # Item i is replaced by the first readable item at or after it (wrapping round).
    nxt = np.searchsorted(readable, np.arange(n))
    wrapped = nxt == len(readable)
    target = readable[np.where(wrapped, 0, nxt)]
    self.skips = np.where(wrapped, target + n, target) - np.arange(n)
    self.rows_of_item = np.asarray(items, np.int64)[target]
    self.sampler = sampler

  def rows(self, k: int) -> np.ndarray:
    return self.rows_of_item[self.sampler(k)].astype(np.int32)

  def skipped(self, items: np.ndarray) -> int:
    """Unreadable images passed over to read these items (as the decoding path counts)."""
    return int(np.sum(self.skips[items]))


def host_loader(images: PreparedImages, order: PreparedOrder, local: Callable,
                num_threads: int = 4) -> Callable[[int], Iterator[tuple[np.ndarray, int]]]:
  """``start -> (this process's rows of batch k, images skipped)`` for k = start, ...,
  read from the memory-mapped shards by ``num_threads`` threads, in order, ahead of use
  (`feed.StreamedFeed`'s loader). ``local(array) -> this process's share of it``."""

  def read(k):
    items = local(order.sampler(k))
    return images.take(order.rows_of_item[items]), order.skipped(items)

  def rows(start: int):
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
      window = 4 * max(1, num_threads)
      ahead = {k: pool.submit(read, k) for k in range(start, start + window)}
      for k in itertools.count(start):
        yield ahead.pop(k).result()
        ahead[k + window] = pool.submit(read, k + window)
  return rows


# ----------------------------------------------------------------------------- devices

def fits_on_device(nbytes: int, devices, share: float = 0.5) -> bool:
  """Whether ``nbytes`` take at most ``share`` of each device's memory (of the host's
  physical memory on CPUs, which report none), leaving the rest for training."""
  limits, sharing_host_memory = [], 0
  for device in devices:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
      limits.append(stats["bytes_limit"])
    else:
      sharing_host_memory += 1
  if sharing_host_memory:  # CPU devices: one copy each, all in the host's memory
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits.append(ram / sharing_host_memory)
  return nbytes <= share * min(limits)


def to_device(images: PreparedImages, mesh, block_rows: int = 4096):
  """The whole part on every device of ``mesh``, uploaded a block at a time into one
  buffer that each block's program updates in place (no second copy on the device)."""
  import jax  # pylint: disable=g-import-not-at-top  (the prepare workers need no jax)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jaxgan import parallel  # pylint: disable=g-import-not-at-top

  sharding = parallel.replicated(mesh)
  shape = (len(images),) + images.frame
  buffer = jax.jit(lambda: jnp.zeros(shape, jnp.uint8), out_shardings=sharding)()
  write = jax.jit(lambda buf, block, start: jax.lax.dynamic_update_slice_in_dim(
      buf, block, start, 0), donate_argnums=0, out_shardings=sharding)
  for start, block in images.blocks(block_rows):
    buffer = write(buffer, jax.device_put(block, sharding), np.int32(start))
  return buffer


# ----------------------------------------------------------------------------- runs

PREPARE_COMMAND = ("python -m experiments.prepare --config <this run's --config and "
                   "--config.* flags> --out {path}")


def open_part(path: str, part: str, *, size: int, margin: int, channels: int,
              heldout_fraction: float, split_seed: int) -> PreparedImages:
  """A prepared folder's ``part``, checked against the run that reads it: the stored frame
  (size × (size + margin) × channels) and the held-out split must be the run's."""
  fix = "prepare it with " + PREPARE_COMMAND.format(path=path)
  index = read_index(path, fix)
  want = {"size": size, "margin": margin, "channels": channels,
          "heldout_fraction": heldout_fraction, "split_seed": split_seed}
  differ = {k: (index.get(k), v) for k, v in want.items() if index.get(k) != v}
  if differ:
    said = "; ".join(f"{k} {have} there, {need} here" for k, (have, need) in differ.items())
    raise PreparedError(f"{path} was prepared for another run ({said}): "
                        f"{fix.replace(path, 'NEW_FOLDER')}, or set this run's config to "
                        "match.")
  return PreparedImages(path, index, part)


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
  """The centred ``size``-wide window of stored frames (fastai's validation crop)."""
  left = (images.shape[2] - size) // 2
  return images[:, :, left:left + size]
