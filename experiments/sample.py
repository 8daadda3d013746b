r"""Draws images from a trained WGAN's latest checkpoint.

  python -m experiments.sample --workdir runs/wgan_fmnist --num 64 --out grid.png \
      [--folder samples/] [--seed 0]

Writes an 8-per-row grid to --out and, with --folder, every image as its own PNG.
The same --seed gives the same images.
"""

import math

from absl import app, flags

from experiments import common
from jaxgan import config as config_lib, images
from jaxgan.train import wgan

flags.DEFINE_string("folder", None, "Also write each image as folder/sample_NNNN.png.")
flags.DEFINE_integer("ncol", 0, "Images per grid row (0: 8, or fewer for small --num).")
FLAGS = flags.FLAGS


def write_samples(workdir: str, num: int, out: str, folder: str | None = None,
                  seed: int = 0, ncol: int = 0, raw: bool = False) -> list[str]:
  """Samples, then writes the grid (and the single images); returns the paths written.

  The averaged generator's samples when the run keeps an average, unless ``raw``.
  """
  fakes = wgan.sample(workdir, num, seed, raw=raw)
  ncol = ncol or min(8, math.ceil(math.sqrt(num)))
  paths = [images.save_png(out, images.make_grid(fakes, ncol=ncol))]
  if folder:
    paths += images.save_pngs(folder, fakes)
  return paths


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("workdir", example="--workdir runs/wgan_fmnist (a WGAN run's folder)")
  num, out = FLAGS.num or 64, FLAGS.out or "samples.png"
  paths = write_samples(FLAGS.workdir, num, out, FLAGS.folder, FLAGS.seed,
                        FLAGS.ncol, FLAGS.raw_weights)
  weights = wgan.weights_used(config_lib.read_config(FLAGS.workdir, "wgan"), FLAGS.raw_weights)
  print(f"wrote {out}" + (f" and {len(paths) - 1} images in {FLAGS.folder}"
                          if FLAGS.folder else "") + f", from the {weights}", flush=True)


if __name__ == "__main__":
  common.run(main)
