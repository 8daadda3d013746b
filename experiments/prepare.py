r"""Decodes a WGAN run's image folder or LSUN LMDB once, so training reads raw pixels.

  python -m experiments.prepare --config experiments/configs/wgan.py:lsun \
      --config.data.path=/data/lsun/bedroom_train_lmdb --out /data/lsun/bedroom_64x80
  python -m experiments.wgan --config experiments/configs/wgan.py:lsun \
      --config.data.prepared=/data/lsun/bedroom_64x80 --workdir runs/wgan_lsun

Takes the run's own config, so the stored frame (model.isize × (isize + data.margin) ×
data.channels) and the held-out split (data.heldout_fraction, data.split_seed) are the
run's. Writes both sides of the split, every image (data.fraction is applied when
training reads it), in shards under --out, with index.json and heldout.txt (see
jaxgan.data.prepared). Interrupted, the same command continues where it stopped.
"""

import os

from absl import app, flags

from experiments import common
from jaxgan.data import folder, prepared
from jaxgan.train import wgan

flags.DEFINE_integer("workers", None, "Decoding processes (default: one per CPU core).")
flags.DEFINE_integer("shard_rows", prepared.SHARD_ROWS, "Images a shard.")
FLAGS = flags.FLAGS


def prepare(config, out: str, workers: int | None = None,
            shard_rows: int = prepared.SHARD_ROWS, progress: bool = True,
            stop_after_shards: int = -1) -> dict:
  """Prepares what ``config.data`` names for ``config``'s runs; returns the index."""
  d = config.data
  if d.source not in ("folder", "lsun"):
    raise ValueError(f"data.source={d.source!r}: only folder and lsun images are prepared "
                     "(Fashion-MNIST is read whole already).")
  if not d.path:
    raise ValueError("config.data.path is empty: set --config.data.path to the image folder "
                     "or LSUN LMDB to prepare.")
  size, width = config.model.isize, config.model.isize + d.margin
  whole = d.copy_and_resolve_references()
  with whole.unlocked():
    whole.fraction = 1.0  # every image: a run's data.fraction samples them when reading
  parts = ["train"] + (["heldout"] if d.heldout_fraction > 0 else [])
  try:
    sources = {p: folder.split_source(whole, size, config.seed, p, width=width)
               for p in parts}
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"{e} (set --config.data.path to the {d.source} to prepare.)") from None
  description = {"source": os.path.abspath(d.path), "source_kind": d.source, "size": size,
                 "margin": d.margin, "channels": d.channels,
                 "heldout_fraction": d.heldout_fraction, "split_seed": d.split_seed,
                 # A source that changed under an interrupted prepare is a new job.
                 "items": {p: len(s) for p, s in sources.items()}}
  if workers is None:
    workers = os.cpu_count() or 1
  # The held-out images' names, for the runs to record (wgan.record_heldout).
  texts = {"heldout.txt": "\n".join(wgan.heldout_items(whole)) + "\n"} if (
      "heldout" in sources) else {}
  return prepared.prepare(sources, out, description, workers=workers,
                          shard_rows=shard_rows, progress=progress, texts=texts,
                          stop_after_shards=stop_after_shards)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("config", "out", example="--config experiments/configs/wgan.py:lsun "
                 "--config.data.path=/data/bedroom_train_lmdb --out /data/bedroom_64x80")
  index = prepare(FLAGS.config, FLAGS.out, FLAGS.workers, FLAGS.shard_rows)
  print(f"prepared {FLAGS.out}: {prepared.summary(index)}; train from it with "
        f"--config.data.prepared={FLAGS.out}")


if __name__ == "__main__":
  common.run(main, "wgan")
