r"""Trains or evaluates the lesson's Darknet.

  python -m experiments.darknet --config experiments/configs/darknet.py:cifar10 \
      --workdir runs/darknet [--config.batch_size=512]
  python -m experiments.darknet --mode eval --workdir runs/darknet [--tta]
"""

from absl import app, flags
from ml_collections import config_flags

from jaxgan.train import common, darknet

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                "experiments/configs/darknet.py:cifar10.", lock_config=True,
                                allow_override=True)  # shared by every entry point
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, config.json.",
                    allow_override=True)
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resumes), or evaluate a checkpoint.")
flags.DEFINE_bool("tta", False, "eval: average predictions with the horizontal flip.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  if FLAGS.mode == "eval":
    darknet.evaluate_checkpoint(FLAGS.workdir, FLAGS.config, tta=FLAGS.tta)
  else:
    if FLAGS.config is None:
      raise app.UsageError("--config is required to train, e.g. "
                           "--config experiments/configs/darknet.py:fashion_mnist")
    darknet.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
