r"""Judges a trained GAN (or two image folders) and writes evaluation.json.

  python -m experiments.evaluate --workdir runs/wgan_fmnist --judge classifier:runs/darknet_fmnist
  python -m experiments.evaluate --workdir runs/cyclegan_fmnist --judge classifier:runs/darknet_fmnist
  python -m experiments.evaluate --workdir runs/wgan_lsun --judge inception:fid_inception.npz \
      [--num 10000]
  python -m experiments.evaluate --real real_dir/ --fake fake_dir/ --judge inception:...

Prints a table per image set (metric, value, spread, floor, ceiling) and writes it as JSON
(``--out``, default WORKDIR/evaluation.json). A WGAN run is judged on --num samples from
its newest checkpoint (or --step) against its training images, with Fashion-MNIST's test
split (or the run's eval.heldout) as the floor; pixel memorisation is included and a PNG
of the samples nearest to training images is written beside the JSON. A CycleGAN run is
judged per direction on its test split. For two folders, the real folder is split in
two halves: one is the reference, the other the floor.
"""

import functools
import json
import os

import jax
import numpy as np
from absl import app, flags

from experiments import common
from jaxgan import config as config_lib
from jaxgan.data import folder, unaligned
from jaxgan.evaluation import judges, report, runs as judged_runs
from jaxgan.train import cyclegan, runs, wgan

flags.DEFINE_string("judge", None, "classifier:WORKDIR (a jaxgan Darknet run) or "
                    "inception:WEIGHTS.npz (FID Inception).")
flags.DEFINE_string("real", None, "With --fake: a folder of real images.")
flags.DEFINE_string("fake", None, "With --real: a folder of generated images.")
flags.DEFINE_integer("size", 64, "--real/--fake: images are centre-cropped and resized to it.")
flags.DEFINE_integer("channels", 3, "--real/--fake: 1 (grayscale) or 3.")
FLAGS = flags.FLAGS


def run_kind(workdir: str) -> str:
  """"wgan" or "cyclegan", from the run's config.json; a clear error for anything else."""
  kind = config_lib.run_system(config_lib.read_config(workdir))
  if kind not in ("wgan", "cyclegan"):
    raise ValueError(f"{workdir} is not a WGAN or CycleGAN run (a Darknet run? evaluate it "
                     "with python -m experiments.darknet --mode eval).")
  return kind


def evaluate_wgan(workdir: str, judge: judges.Judge, num: int, seed: int = 0,
                  step: int | None = None, raw: bool = False) -> dict:
  run = runs.restore(workdir, "wgan", step=step)
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, run.config.model.nz))
  print(f"{workdir}: step {run.step}, {wgan.weights_used(run.config, raw)}", flush=True)
  fakes = wgan.samples(wgan.generator_fn(run.config), wgan.sampling_fn(run.config, raw)(
      run.state), z)
  judged = judged_runs.WGANJudge(run.config, judge, num, pixel_memorisation=True)
  scores = judged.score(fakes)
  report.save_nearest_neighbours(os.path.join(workdir, "nearest_training_images.png"),
                                 fakes, judged.train)
  return {"samples": scores}


def evaluate_cyclegan(workdir: str, judge: judges.Judge, num: int,
                      step: int | None = None, raw: bool = False) -> dict:
  run = runs.restore(workdir, "cyclegan", step=step)
  print(f"{workdir}: step {run.step}, {cyclegan.weights_used(run.config, raw)}", flush=True)
  judged = judged_runs.CycleGANJudge(run.config, unaligned.load_domains(run.config.data),
                                     judge, num)
  return judged.score(functools.partial(cyclegan.translator(run.config),
                                        cyclegan.generators(run.state, raw)))


def evaluate_folders(real_dir: str, fake_dir: str, judge: judges.Judge, size: int,
                     channels: int, seed: int = 0) -> dict:
  load = lambda path: unaligned.load_all(folder.ImageFolderSource(path, size, channels))[0]
  real, fake = load(real_dir), load(fake_dir)
  order = np.random.default_rng(seed).permutation(len(real))
  half = len(real) // 2
  if half < 2:
    raise ValueError(f"{real_dir} has {len(real)} readable images: the reference and the "
                     "floor need at least 2 each.")
  return {"fake": report.quality_report(judge.extract, fake, real[order[:half]],
                                        real[order[half:]], seed=seed,
                                        kid_subset_size=min(1000, len(fake), half))}


def evaluate(judge_spec: str, workdir: str | None = None, real: str | None = None,
             fake: str | None = None, num: int = 2000, seed: int = 0,
             step: int | None = None, size: int = 64, channels: int = 3,
             out: str | None = None, raw: bool = False) -> dict:
  """Judges a run (or two folders); writes and returns ``{"judge":, set: {metric: {...}}}``."""
  if workdir:
    kind = run_kind(workdir)  # before the judge: the wrong folder is the likelier mistake
    judge = judges.load_judge(judge_spec)
    if kind == "wgan":
      results = evaluate_wgan(workdir, judge, num, seed, step, raw)
    else:
      results = evaluate_cyclegan(workdir, judge, num, step, raw)
  elif real and fake:
    judge = judges.load_judge(judge_spec)
    results = evaluate_folders(real, fake, judge, size, channels, seed)
  else:
    raise ValueError("give --workdir (a GAN run), or --real and --fake (two image folders).")
  document = {"judge": judge_spec, **results}
  if workdir:
    document["weights"] = {"wgan": wgan, "cyclegan": cyclegan}[kind].weights_used(
        config_lib.read_config(workdir), raw)
  out = out or os.path.join(workdir or ".", "evaluation.json")
  with open(out, "w") as f:
    json.dump(document, f, indent=2)
  for name, scores in results.items():
    print(f"{name} (judge {judge_spec}):\n{judged_runs.table(scores)}\n", flush=True)
  print(f"wrote {out}", flush=True)
  return document


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.require("judge", example="--judge classifier:runs/darknet_fmnist")
  # --num: WGAN samples to judge; CycleGAN test images per direction (0: all).
  num = 2000 if FLAGS.num is None else FLAGS.num
  evaluate(FLAGS.judge, FLAGS.workdir, FLAGS.real, FLAGS.fake, num, FLAGS.seed,
           FLAGS.step, FLAGS.size, FLAGS.channels, FLAGS.out, FLAGS.raw_weights)


if __name__ == "__main__":
  common.run(main)
