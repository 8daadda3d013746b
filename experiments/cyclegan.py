r"""Trains CycleGAN; the same command in the same workdir resumes.

  python -m experiments.cyclegan --config experiments/configs/cyclegan.py:horse2zebra \
      --workdir runs/horse2zebra [--config.batch_size=8]
  python -m experiments.cyclegan --config experiments/configs/cyclegan.py:folder \
      --config.data.path=DATA/horse2zebra --workdir runs/h2z_folder

Writes config.json, metrics.jsonl, tensorboard/, samples/iter_NNNNNN.png and checkpoints/
into the workdir. Translate with ``python -m experiments.translate``.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxgan.train import cyclegan

FLAGS = flags.FLAGS
# --config and --workdir mean the same in every jaxgan entry point; allow_override lets
# several entry points be imported into one process (the tests) without a
# DuplicateFlagError.
config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                "experiments/configs/cyclegan.py:horse2zebra.",
                                lock_config=True, allow_override=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, samples, metrics.",
                    allow_override=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.config is None or FLAGS.workdir is None:
    raise app.UsageError("--config and --workdir are required, e.g. --config "
                         "experiments/configs/cyclegan.py:fashion_mnist --workdir runs/cg")
  cyclegan.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
