r"""Trains the lesson's WGAN; the same command in the same workdir resumes.

  python -m experiments.wgan --config experiments/configs/wgan.py:fashion_mnist \
      --workdir runs/wgan_fmnist
  python -m experiments.wgan --config experiments/configs/wgan.py:lsun \
      --config.data.path=/data/lsun/bedroom_train_lmdb --workdir runs/wgan_lsun
"""

from absl import app, flags

from experiments import common
from jaxgan.train import wgan

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("config", "workdir", example="--config "
                 "experiments/configs/wgan.py:fashion_mnist --workdir runs/wgan")
  return wgan.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  common.run(main, "wgan")
