r"""Translates every image in a folder (or a zip), at its full size, with a trained CycleGAN.

  python -m experiments.translate --workdir runs/horse2zebra --direction AtoB \
      --input photos/ --output zebras/
  python -m experiments.translate --workdir runs/horse2zebra --direction AtoB \
      --input horse2zebra.zip --output zebras/      # every image in the archive

Uses the run's config.json and newest checkpoint (or --step). Each image is reflect-padded
to a multiple of 4, translated whole and cropped back, so outputs have the inputs' sizes;
they are written as PNGs under --output at the same relative paths.
"""

import io
import os
import zipfile

import numpy as np
from absl import app, flags, logging
from PIL import Image

from experiments import common
from jaxgan import images as image_io
from jaxgan.data.folder import IMAGE_EXTENSIONS, list_image_files
from jaxgan.train import cyclegan, runs

flags.DEFINE_enum("direction", "AtoB", ["AtoB", "BtoA"], "AtoB uses G_A, BtoA uses G_B.")
flags.DEFINE_string("input", None, "Folder (searched recursively) or zip of images to "
                    "translate.")
flags.DEFINE_string("output", None, "Folder for the translated PNGs.")
FLAGS = flags.FLAGS


def images_in(input_path: str):
  """``(relative name, opener)`` for every image file in a folder (recursively) or zip."""
  if os.path.isfile(input_path):
    try:
      archive = zipfile.ZipFile(input_path)
    except zipfile.BadZipFile as e:
      raise ValueError(f"--input {input_path} is neither a folder nor a readable zip: "
                       f"{e}") from None
    with archive:
      for name in sorted(n for n in archive.namelist()
                         if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS):
        yield name, lambda name=name: Image.open(io.BytesIO(archive.read(name)))
    return
  for path in list_image_files(input_path):
    yield os.path.relpath(path, input_path), lambda path=path: Image.open(path)


def translate_folder(workdir: str, direction: str, input_dir: str, output_dir: str,
                     step: int | None = None, raw: bool = False) -> dict:
  """Translates every image under ``input_dir`` (a folder or a zip) at its own size.

  Outputs are PNGs at the same relative paths under ``output_dir``, same size as the
  inputs. Unreadable files are skipped and counted.

  Args:
    workdir: a CycleGAN training run (config.json + checkpoints).
    direction: ``"AtoB"`` (G_A) or ``"BtoA"`` (G_B).
    input_dir: a folder, or a zip archive; output_dir: a folder.
    step: checkpoint step (default: the newest).
    raw: the weights training updated, not their average (runs with ema_decay > 0).

  Returns:
    ``{"written": [paths], "skipped": n, "step": checkpoint step}``.
  """
  cyclegan.check_direction(direction)
  run = runs.restore(workdir, "cyclegan", step=step)
  translate = cyclegan.whole_image_translator(run.config,
                                              cyclegan.generators(run.state, raw))
  channels = cyclegan.image_channels(run.config)
  mode = "L" if channels == 1 else "RGB"
  written, skipped = [], 0
  for name, open_image in images_in(input_dir):
    try:
      with open_image() as img:
        image = np.asarray(img.convert(mode), np.uint8)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Skipping unreadable image %s: %s: %s", name, type(e).__name__, e)
      skipped += 1
      continue
    out = translate(direction, image.reshape(*image.shape[:2], channels))
    rel = os.path.splitext(name)[0] + ".png"
    written.append(image_io.save_png(os.path.join(output_dir, rel), out))
  weights = cyclegan.weights_used(run.config, raw)
  logging.info("translated %d images %s with step %d (%s) into %s (%d unreadable skipped)",
               len(written), direction, run.step, weights, output_dir, skipped)
  return {"written": written, "skipped": skipped, "step": run.step, "weights": weights}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("workdir", "input", "output", example="--workdir runs/h2z --input photos/ "
                 "--output zebras/")
  result = translate_folder(FLAGS.workdir, FLAGS.direction, FLAGS.input, FLAGS.output,
                            step=FLAGS.step, raw=FLAGS.raw_weights)
  print(f"{len(result['written'])} images translated {FLAGS.direction} with the checkpoint "
        f"of step {result['step']} ({result['weights']}) into {FLAGS.output}"
        + (f"; {result['skipped']} unreadable files skipped" if result["skipped"] else ""),
        flush=True)


if __name__ == "__main__":
  common.run(main)
