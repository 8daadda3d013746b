"""Tests for jaxgan.evaluation.report: the report's structure and meaning, the neighbour PNG."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxgan.evaluation import report

SIZE = 6  # 6×6 gray images: 36-d pixel features keep every score instant


def smooth_images(rng, n):
  """Images on a 4-d manifold (mixtures of fixed patterns), unlike uniform noise."""
  patterns = np.random.default_rng(100).uniform(-1, 1, (4, SIZE, SIZE, 1))
  mix = rng.standard_normal((n, 4, 1, 1, 1))
  return np.clip(128 + 30 * (mix * patterns).sum(1), 0, 255).astype(np.uint8)


def pixel_extractor(images):
  """A toy extractor: pixels as features, 3 'classes' from the mean brightness."""
  x = images.reshape(len(images), -1).astype(np.float64) / 255
  logits = np.stack([-20 * (x.mean(1) - c) ** 2 for c in (0.4, 0.5, 0.6)], axis=1)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  return x, probs / probs.sum(1, keepdims=True)


def test_report_structure_floor_and_ceiling():
  rng = np.random.default_rng(0)
  train, heldout = smooth_images(rng, 200), smooth_images(rng, 100)
  copies = train[:100]  # a generator that memorised its training set
  got = report.quality_report(pixel_extractor, copies, train, heldout, fd_bootstrap=4,
                              kid_subsets=10, kid_subset_size=50)
  assert set(got) == {"fd", "kid", "precision", "recall", "memorisation", "memorisation_pixels",
                      "classes_covered", "class_entropy", "class_entropy_normalised",
                      "mean_confidence"}
  assert json.loads(json.dumps(got)) == got  # plain floats only
  for entry in got.values():
    assert set(entry) == {"value", "spread", "floor", "ceiling"}
    assert all(np.isfinite(v) for v in entry.values())
  # Copies: memorised in both spaces; held-out real images by construction near 1%.
  assert got["memorisation"]["value"] == got["memorisation_pixels"]["value"] == 1.0
  assert got["memorisation"]["floor"] <= 0.05
  assert got["memorisation"]["ceiling"] == 0.0
  # Noise is off the data manifold: worst FD and KID, no precision.
  assert got["fd"]["floor"] < got["fd"]["ceiling"] and got["fd"]["value"] < got["fd"]["ceiling"]
  assert got["kid"]["floor"] < got["kid"]["ceiling"]
  # Precision's real set is a random half of train, so copies score about as held-out does.
  assert got["precision"]["value"] >= got["precision"]["floor"] > 0.5
  assert got["precision"]["ceiling"] == 0.0


def test_report_without_class_probabilities_leaves_class_scores_out():
  rng = np.random.default_rng(1)
  train, heldout, fake = smooth_images(rng, 60), smooth_images(rng, 40), smooth_images(rng, 40)
  got = report.quality_report(lambda x: (pixel_extractor(x)[0], None), fake, train, heldout,
                              fd_bootstrap=2, kid_subsets=2, kid_subset_size=20,
                              pixel_memorisation=False)
  assert set(got) == {"fd", "kid", "precision", "recall", "memorisation"}


def test_report_rejects_float_images():
  x = np.zeros((4, SIZE, SIZE, 1), np.float32)
  with pytest.raises(ValueError, match="uint8"):
    report.quality_report(pixel_extractor, x, x, x)


def test_nearest_neighbour_png_shows_the_closest_samples_first(tmp_path):
  rng = np.random.default_rng(2)
  train = smooth_images(rng, 30)
  samples = np.concatenate([smooth_images(rng, 2), train[[7, 3]]])  # two copies, last
  path = report.save_nearest_neighbours(tmp_path / "nn.png", samples, train, num_rows=3, k=2)
  grid = np.asarray(Image.open(path))
  pad, step = 2, SIZE + 2
  assert grid.shape == (pad + 3 * step, pad + 3 * step)  # 3 rows of sample + 2 neighbours

  def tile(row, col):
    return grid[pad + row * step:pad + row * step + SIZE, pad + col * step:pad + col * step + SIZE]

  # The copies (distance ~0; rounding decides their order) come first, each beside its
  # original; then the sample nearest to the training set.
  copies = {tuple(tile(r, 0).ravel()) for r in (0, 1)}
  assert copies == {tuple(samples[i, ..., 0].ravel()) for i in (2, 3)}
  for r in (0, 1):
    np.testing.assert_array_equal(tile(r, 0), tile(r, 1))
  d = ((samples[:2].astype(float) - train[:, None].astype(float)) ** 2).sum((2, 3, 4)).min(0)
  np.testing.assert_array_equal(tile(2, 0), samples[np.argmin(d), ..., 0])
