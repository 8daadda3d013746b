r"""Trains the lesson's WGAN; the same command in the same workdir resumes.

  python -m experiments.wgan --config experiments/configs/wgan.py:fashion_mnist \
      --workdir runs/wgan_fmnist
  python -m experiments.wgan --config experiments/configs/wgan.py:lsun \
      --config.data.path=/data/lsun/bedroom_train_lmdb --workdir runs/wgan_lsun
"""

from absl import app, flags
from ml_collections import config_flags

from jaxgan.train import common, wgan

FLAGS = flags.FLAGS


def define_once(define, name, *args, **kwargs):
  """Defines a flag unless another entry point imported in this process (tests) already
  defined one of that name; --config and --workdir mean the same everywhere."""
  if name not in FLAGS:
    define(name, *args, **kwargs)


define_once(config_flags.DEFINE_config_file, "config", None, "Config file and variant, e.g. "
            "experiments/configs/wgan.py:fashion_mnist.", lock_config=True)
define_once(flags.DEFINE_string, "workdir", None,
            "Run directory: checkpoints, samples, metrics, config.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required, e.g. --config "
                         "experiments/configs/wgan.py:fashion_mnist --workdir runs/wgan")
  common.quiet_library_logs()
  wgan.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
