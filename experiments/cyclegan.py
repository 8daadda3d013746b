r"""Trains CycleGAN; the same command in the same workdir resumes.

  python -m experiments.cyclegan --config experiments/configs/cyclegan.py:horse2zebra \
      --workdir runs/horse2zebra [--config.batch_size=8]
  python -m experiments.cyclegan --config experiments/configs/cyclegan.py:folder \
      --config.data.path=DATA/horse2zebra --workdir runs/h2z_folder

Writes config.json, metrics.jsonl, tensorboard/, samples/iter_NNNNNN.png and checkpoints/
into the workdir. Translate with ``python -m experiments.translate``.
"""

from absl import app, flags

from experiments import common
from jaxgan.train import cyclegan

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("config", "workdir", example="--config "
                 "experiments/configs/cyclegan.py:fashion_mnist --workdir runs/cyclegan")
  return cyclegan.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  common.run(main, "cyclegan")
