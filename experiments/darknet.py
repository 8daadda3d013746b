r"""Trains or evaluates the lesson's Darknet.

  python -m experiments.darknet --config experiments/configs/darknet.py:cifar10 \
      --workdir runs/darknet [--config.batch_size=512]
  python -m experiments.darknet --mode eval --workdir runs/darknet [--tta]
"""

from absl import app, flags

from experiments import common
from jaxgan.train import darknet

flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resumes), or evaluate a checkpoint.")
flags.DEFINE_bool("tta", False, "eval: average predictions with the horizontal flip.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.mode == "eval":
    common.require("workdir", example="--mode eval --workdir runs/darknet")
    darknet.evaluate_checkpoint(FLAGS.workdir, FLAGS.config, tta=FLAGS.tta)
  else:
    common.require("config", "workdir", example="--config "
                   "experiments/configs/darknet.py:fashion_mnist --workdir runs/darknet")
    return darknet.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  common.run(main, "darknet")
