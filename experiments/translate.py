r"""Translates every image in a folder, at its full size, with a trained CycleGAN.

  python -m experiments.translate --workdir runs/horse2zebra --direction AtoB \
      --input photos/ --output zebras/

Uses the run's config.json and newest checkpoint (or --step). Each image is reflect-padded
to a multiple of 4, translated whole and cropped back, so outputs have the inputs' sizes;
they are written as PNGs under --output at the same relative paths.
"""

from absl import app, flags

from jaxgan.train import cyclegan

FLAGS = flags.FLAGS
# allow_override: --workdir is shared with the training entry points (see cyclegan.py).
flags.DEFINE_string("workdir", None, "A CycleGAN training run (config.json + checkpoints).",
                    allow_override=True)
flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"], "AtoB uses G_A, BtoA uses G_B.")
flags.DEFINE_string("input", None, "Folder of images to translate (searched recursively).")
flags.DEFINE_string("output", None, "Folder for the translated PNGs.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (FLAGS.workdir and FLAGS.input and FLAGS.output):
    raise app.UsageError("--workdir, --input and --output are required.")
  result = cyclegan.translate_folder(FLAGS.workdir, FLAGS.direction, FLAGS.input,
                                     FLAGS.output, step=FLAGS.step)
  print(f"{len(result['written'])} images translated {FLAGS.direction} with the checkpoint "
        f"of step {result['step']} into {FLAGS.output}"
        + (f"; {result['skipped']} unreadable files skipped" if result["skipped"] else ""),
        flush=True)


if __name__ == "__main__":
  app.run(main)
