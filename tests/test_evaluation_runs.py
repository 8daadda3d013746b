"""Built-in GAN evaluation end to end: a tiny Darknet judges tiny WGAN and CycleGAN runs,
during training and from the command line."""

import json
import os

import numpy as np
import pytest

from conftest import needs_fashion_mnist, override
from experiments import evaluate as evaluate_cli
from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import metrics
from jaxgan.evaluation import judges
from jaxgan.train import cyclegan, darknet, wgan

pytestmark = needs_fashion_mnist


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
  """The smoke Darknet (Fashion-MNIST, 2 epochs on 64 images): a weak but real judge."""
  workdir = str(tmp_path_factory.mktemp("judge") / "darknet")
  darknet.train_and_evaluate(darknet_configs.get_config("smoke"), workdir)
  return workdir


def test_classifier_judge_gives_features_and_class_probabilities(judge_dir):
  judge = judges.load_judge(f"classifier:{judge_dir}")
  images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 1), np.uint8)
  features, probs = judge.extract(images)
  assert features.shape == (5, 16) and probs.shape == (5, 10)  # nf 4 -> 8 -> 16 channels
  np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
  # 32x32 is cropped to the judge's 28x28: the 2-pixel border does not matter.
  bordered = images.copy()
  bordered[:, :2] = 255
  np.testing.assert_allclose(judge.extract(bordered)[0], features, rtol=1e-5, atol=1e-6)
  assert judge.class_names[9] == "Ankle boot"


def test_wgan_run_records_scores_during_training_and_from_the_cli(judge_dir, tmp_path):
  workdir = str(tmp_path / "wgan")
  config = override(wgan_configs.get_config("smoke"),
                    **{"eval.judge": f"classifier:{judge_dir}"})
  record = wgan.train_and_evaluate(config, workdir)
  judged = [r for r in metrics.read_metrics(workdir) if "fd" in r]
  assert [r["step"] for r in judged] == [3, 6]  # every 3 and at the end
  for r in judged:
    assert r["fd"] > 0 and r["fd_spread"] >= 0 and 0 <= r["precision"] <= 1
    assert r["fd_floor"] < r["fd_ceiling"]  # held-out real images beat noise
    assert 1 <= r["classes_covered"] <= 10 and r["eval_seconds"] > 0
  assert record["fd"] == judged[-1]["fd"]

  out = str(tmp_path / "evaluation.json")
  evaluate_cli.evaluate(f"classifier:{judge_dir}", workdir=workdir, num=64, out=out)
  with open(out) as f:
    document = json.load(f)
  scores = document["samples"]
  assert document["judge"] == f"classifier:{judge_dir}"
  for metric in ("fd", "kid", "precision", "recall", "memorisation", "memorisation_pixels",
                 "classes_covered", "class_entropy", "mean_confidence"):
    assert set(scores[metric]) == {"value", "spread", "floor", "ceiling"}, metric
  assert os.path.exists(os.path.join(workdir, "nearest_training_images.png"))


def test_cyclegan_run_is_judged_per_direction(judge_dir, tmp_path):
  workdir = str(tmp_path / "cyclegan")
  config = override(cyclegan_configs.get_config("smoke"),
                    **{"eval.judge": f"classifier:{judge_dir}"})
  cyclegan.train_and_evaluate(config, workdir)
  last = [r for r in metrics.read_metrics(workdir) if "AtoB_fd" in r][-1]
  assert last["step"] == 12
  for direction in ("AtoB", "BtoA"):
    assert 0 <= last[f"{direction}_translation_rate"] <= 1
    assert last[f"{direction}_cycle_error"] > 0
    assert last[f"{direction}_fd_floor"] < last[f"{direction}_fd_ceiling"]
  document = evaluate_cli.evaluate(f"classifier:{judge_dir}", workdir=workdir, num=16)
  assert set(document) == {"judge", "AtoB", "BtoA", "weights"}
  rate = document["AtoB"]["translation_rate"]
  # Floor: real ankle boots called ankle boots; ceiling: untranslated sneakers called so.
  assert rate["floor"] is not None and rate["ceiling"] is not None
  with open(os.path.join(workdir, "evaluation.json")) as f:
    assert json.load(f)["BtoA"]["cycle_error"]["value"] > 0


def test_folders_and_clear_errors(judge_dir, tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for name in ("real", "fake"):
    os.makedirs(tmp_path / name)
    for i in range(12):
      Image.fromarray(rng.integers(0, 256, (30, 30), np.uint8)).save(tmp_path / name / f"{i}.png")
  document = evaluate_cli.evaluate(f"classifier:{judge_dir}", real=str(tmp_path / "real"),
                                   fake=str(tmp_path / "fake"), size=28, channels=1,
                                   out=str(tmp_path / "folders.json"))
  assert document["fake"]["fd"]["value"] >= 0
  with pytest.raises(FileNotFoundError, match="python -m experiments.darknet"):
    judges.load_judge(f"classifier:{tmp_path / 'no_such_run'}")
  with pytest.raises(ValueError, match="classifier:WORKDIR"):
    judges.load_judge("resnet:whatever")
  with pytest.raises(ValueError, match="not a WGAN or CycleGAN run"):
    evaluate_cli.evaluate(f"classifier:{judge_dir}", workdir=judge_dir)
  with pytest.raises(FileNotFoundError, match="inception"):
    judges.load_judge(f"inception:{tmp_path / 'missing.npz'}")


# ----------------------------------------------------------------------------- held-out sets

def _extractor(images):
  """A stand-in judge: per-image mean pixels as features, no classes (the check under test
  runs before any feature is used)."""
  flat = np.asarray(images, np.float64).reshape(len(images), -1)
  return np.stack([flat.mean(1), flat.std(1)], 1), None


def _write(folder, images):
  from PIL import Image
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(images):
    Image.fromarray(image).save(os.path.join(folder, f"{i:03d}.png"))


def test_a_wgan_heldout_folder_of_training_copies_is_refused(tmp_path):
  from jaxgan.evaluation import runs as judged_runs
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (40, 16, 16, 3), np.uint8)
  _write(tmp_path / "train", train)
  _write(tmp_path / "copies", train[:12])  # the same files' pixels, under other names
  _write(tmp_path / "fresh", rng.integers(0, 256, (12, 16, 16, 3), np.uint8))
  config = override(wgan_configs.get_config("smoke"), **{
      "data.source": "folder", "data.path": str(tmp_path / "train"), "data.channels": 3,
      "data.max_images": 0, "data.heldout_fraction": 0.0,
      "eval.heldout": str(tmp_path / "copies"), "eval.reference_images": 0})
  judge = judges.Judge("stand-in", _extractor)
  with pytest.raises(ValueError, match=r"12 of the 12 held-out images checked are training "
                                       r"images .*--config.eval.heldout"):
    judged_runs.WGANJudge(config, judge, num_fake=12)
  # A sample of the training set finds its share of the copies, scaled up to the whole:
  # 20 of the 40 training images hold about half of the 12 copies.
  with pytest.raises(ValueError, match="training images"):
    judged_runs.WGANJudge(override(config, **{"eval.reference_images": 20}), judge, 12)
  with config.unlocked():
    config.eval.heldout = str(tmp_path / "fresh")
  judged = judged_runs.WGANJudge(config, judge, num_fake=12)
  assert len(judged.heldout) == 12
  # By default a folder run holds out a fixed fifth of its files, and judges against it.
  config = override(config, **{"eval.heldout": "", "data.heldout_fraction": 0.2,
                              "eval.reference_images": 0})
  judged = judged_runs.WGANJudge(config, judge, num_fake=8)
  assert len(judged.train) == 32 and len(judged.heldout) == 8


def test_cyclegan_test_domains_must_be_held_out(tmp_path):
  from jaxgan.data import unaligned
  from jaxgan.evaluation import runs as judged_runs
  rng = np.random.default_rng(1)
  images = lambda n: rng.integers(0, 256, (n, 20, 20, 1), np.uint8)
  train_a, train_b, test_b = images(30), images(30), images(6)
  config = cyclegan_configs.get_config("smoke")
  judge = judges.Judge("stand-in", _extractor)
  copies = unaligned.Domains(*(unaligned.ArraySource(x) for x in (
      train_a, train_b, train_a[:6], test_b)), channels=1, description="copies")
  with pytest.raises(ValueError, match=r"testA of copies: 6 of the 6 held-out images"):
    judged_runs.CycleGANJudge(config, copies, judge)
  # A folder without testA/ falls back to the training images for the sample grids, and
  # judging it is one clear error naming the folder to add.
  for split, data in (("trainA", train_a), ("trainB", train_b), ("testB", test_b)):
    _write(tmp_path / "data" / split, data[..., 0])
  domains = unaligned.folder_domains(str(tmp_path / "data"), load_size=20, channels=1)
  with pytest.raises(ValueError, match=r"no testA/: judging needs .* --config.eval.judge="):
    judged_runs.CycleGANJudge(config, domains, judge)
  fresh = unaligned.Domains(*(unaligned.ArraySource(x) for x in (
      train_a, train_b, images(6), test_b)), channels=1, description="fresh")
  assert set(judged_runs.CycleGANJudge(config, fresh, judge).references) == {"AtoB", "BtoA"}
