"""A sample-quality report: every score with its spread, and the floor and ceiling that place it.

Extractor interface (what `quality_report` needs, whatever network is behind it)::

  extractor(images) -> (features, probs)

  images:   uint8 (N, H, W, C) numpy array, C = 1 or 3, pixel values 0..255.
  features: (N, D) float array, one row per image, in input order.
  probs:    (N, K) class probabilities (rows sum to 1), or None when the network
            has no classifier head (then the class-coverage scores are left out).

The extractor owns resizing, normalisation and batching. Two are planned:
`jaxgan.evaluation.inception.inception_extractor` (FID's Inception: FID, KID and
1008 ImageNet-class coverage) and a jaxgan classifier trained on the data set
itself, whose features and classes suit small images such as Fashion-MNIST.

A score alone says little, so each comes with two references measured the same
way against the same training images: the floor, held-out real images (what a
perfect generator would score with that many samples), and the ceiling, uniform
noise images shaped like the samples (what no learning at all scores). The
ceiling is a landmark, not always the worst value: noise's wide k-NN balls can
reach every real point, so its recall can come out high.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from jaxgan import images as jaxgan_images
from jaxgan.evaluation import distances, scores

Extractor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _check_images(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"{name} must be uint8 (N, H, W, 1 or 3), got {x.dtype} {x.shape}.")
  return x


def _extract(extractor: Extractor, images: np.ndarray, name: str):
  features, probs = extractor(images)
  features = np.asarray(features)
  if features.ndim != 2 or len(features) != len(images):
    raise ValueError(f"Extractor gave features {features.shape} for {len(images)} {name} images.")
  if probs is not None:
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(probs) != len(images):
      raise ValueError(f"Extractor gave probs {probs.shape} for {len(images)} {name} images.")
  return features, probs


def _scores_of(features, probs, pixels, ref, *, seed, k, fd_bootstrap, kid_subsets,
               kid_subset_size, min_share) -> dict[str, tuple[float, float]]:
  """{metric: (value, spread)} of one image set against the training reference."""
  out = {}
  out["fd"] = scores.frechet_distance_with_spread(features, ref["features"], fd_bootstrap, seed)
  out["kid"] = scores.kernel_inception_distance(features, ref["features"], kid_subsets,
                                                kid_subset_size, seed)
  pr = scores.precision_recall(ref["pr_features"], features, k)
  out["precision"] = (pr.precision, pr.precision_spread)
  out["recall"] = (pr.recall, pr.recall_spread)
  mem = scores.memorisation(features, ref["features"], threshold=ref["threshold"])
  out["memorisation"] = (mem.share, mem.spread)
  if pixels is not None:
    mem = scores.memorisation_pixels(pixels, ref["pixels"], threshold=ref["pixel_threshold"])
    out["memorisation_pixels"] = (mem.share, mem.spread)
  if probs is not None:
    cov = scores.class_coverage(probs, min_share, seed=seed)
    out["classes_covered"] = (cov.covered, cov.covered_spread)
    out["class_entropy"] = (cov.entropy, cov.entropy_spread)
    out["class_entropy_normalised"] = (cov.normalised_entropy, cov.normalised_entropy_spread)
    out["mean_confidence"] = (cov.mean_confidence, cov.mean_confidence_spread)
  return {name: (float(v), float(s)) for name, (v, s) in out.items()}


def quality_report(extractor: Extractor, fake, train, heldout, *, seed: int = 0, k: int = 3,
                   fd_bootstrap: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                   percentile: float = 1.0, min_share: float = 0.02,
                   pixel_memorisation: bool = True) -> dict[str, dict[str, float]]:
  """Scores generated images against training images, with spreads, floors and ceilings.

  Metrics: ``fd``, ``kid``, ``precision``, ``recall``, ``memorisation`` (in the
  extractor's feature space), ``memorisation_pixels`` (if ``pixel_memorisation``),
  and, when the extractor gives probabilities, ``classes_covered``,
  ``class_entropy`` (nats), ``class_entropy_normalised``, ``mean_confidence``.

  How each reference is measured: the floor scores ``heldout`` and the ceiling
  scores ``len(fake)`` uniform-noise images shaped like ``fake``, both against
  ``train`` exactly as ``fake`` is. FD is biased upwards by about 1/N, so pass as
  many held-out images as fakes for a fair floor. Precision and recall use a
  fixed random subset of the training features of ``len(fake)`` rows as the real
  set (the method wants equal sizes). The memorisation thresholds are the
  ``percentile`` of one half of the held-out images' distances to the training set, and
  the memorisation floors the share of the other half below them: the false alarms a
  generator that copies nothing would raise. Pixel memorisation counts near-copies too:
  shifts of up to 2 pixels and mirror images (`scores.aligned_nearest`).

  Args:
    extractor: see the module docstring.
    fake, train, heldout: uint8 (N, H, W, C) images; ``heldout`` real images that
      the generator never trained on.
    seed: seeds the noise images, subsets and bootstraps.
    k: neighbour that sets precision/recall radii.
    fd_bootstrap, kid_subsets, kid_subset_size: spread settings (see `scores`).
    percentile: memorisation threshold percentile.
    min_share: share of samples from which a class counts as covered.
    pixel_memorisation: also run memorisation on raw pixels (needs all three
      image sets to share H, W, C).

  Returns:
    ``{metric: {"value": v, "spread": s, "floor": f, "ceiling": c}}`` of floats.
  """
  fake = _check_images(fake, "fake")
  judge = Reference(extractor, train, heldout, len(fake), seed=seed, k=k,
                    fd_bootstrap=fd_bootstrap, kid_subsets=kid_subsets,
                    kid_subset_size=kid_subset_size, percentile=percentile,
                    min_share=min_share, pixel_memorisation=pixel_memorisation)
  return judge.score(fake)


class Reference:
  """The training side of a report, measured once; `score` then judges any fake set.

  During training the same reference judges every evaluation, so the training features,
  the memorisation thresholds, the floor (``heldout``) and the ceiling (noise images of
  ``num_fake``) are computed here once. Arguments as `quality_report`'s; ``num_fake`` is
  the number of fakes each `score` call will get (it sizes the precision/recall subset
  and the ceiling).
  """

  def __init__(self, extractor: Extractor, train, heldout, num_fake: int, *,
               seed: int = 0, k: int = 3, fd_bootstrap: int = 10, kid_subsets: int = 100,
               kid_subset_size: int = 1000, percentile: float = 1.0,
               min_share: float = 0.02, pixel_memorisation: bool = True):
    train = _check_images(train, "train")
    heldout = _check_images(heldout, "heldout")
    self.extractor, self.pixel_memorisation = extractor, pixel_memorisation
    self.image_shape = train.shape[1:]
    self.options = dict(seed=seed, k=k, fd_bootstrap=fd_bootstrap, kid_subsets=kid_subsets,
                        kid_subset_size=kid_subset_size, min_share=min_share)
    rng = np.random.default_rng(seed)
    train_features, _ = _extract(extractor, train, "train")
    ref = {"features": train_features}
    pr_rows = rng.choice(len(train), min(len(train), num_fake), replace=False)
    ref["pr_features"] = train_features[np.sort(pr_rows)]
    heldout_features, heldout_probs = _extract(extractor, heldout, "heldout")
    # The memorisation thresholds come from one half of the held-out images and their
    # floor from the other: measured on the half that set it, a threshold at the 1st
    # percentile flags 1% by construction; the other half shows the real false alarms.
    order = rng.permutation(len(heldout))
    calibrate, check = ((np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:]))
                        if len(heldout) >= 2 else (order, order))
    ref["threshold"] = scores.memorisation_threshold(train_features,
                                                     heldout_features[calibrate], percentile)
    if pixel_memorisation:
      if heldout.shape[1:] != train.shape[1:]:
        raise ValueError("Pixel memorisation needs train and heldout of one image shape.")
      ref["pixels"] = train
      ref["pixel_threshold"] = float(np.percentile(
          scores.aligned_nearest(heldout[calibrate], train)[0], percentile))
    self.ref = ref
    noise = rng.integers(0, 256, (num_fake, *self.image_shape), dtype=np.uint8)
    self.floor = _scores_of(heldout_features, heldout_probs, None, ref, **self.options)
    mem = scores.memorisation(heldout_features[check], train_features,
                              threshold=ref["threshold"])
    self.floor["memorisation"] = (mem.share, mem.spread)
    if pixel_memorisation:
      mem = scores.memorisation_pixels(heldout[check], train,
                                       threshold=ref["pixel_threshold"])
      self.floor["memorisation_pixels"] = (mem.share, mem.spread)
    self.ceiling = self._measure(*_extract(extractor, noise, "ceiling"), noise)

  def _measure(self, features, probs, images):
    return _scores_of(features, probs, images if self.pixel_memorisation else None,
                      self.ref, **self.options)

  def score(self, fake) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "spread", "floor", "ceiling"}}`` of ``fake`` (uint8 NHWC)."""
    fake = _check_images(fake, "fake")
    if self.pixel_memorisation and fake.shape[1:] != self.image_shape:
      raise ValueError("Pixel memorisation needs fake and train of one image shape: "
                       f"{fake.shape[1:]} vs {self.image_shape}.")
    measured = self._measure(*_extract(self.extractor, fake, "fake"), fake)
    return {metric: {"value": value, "spread": spread, "floor": self.floor[metric][0],
                     "ceiling": self.ceiling[metric][0]}
            for metric, (value, spread) in measured.items()}


def save_nearest_neighbours(path, samples, train, sample_features=None, train_features=None,
                            *, num_rows: int = 8, k: int = 3, **distance_options) -> str:
  """Writes a PNG whose rows show a sample, then its k nearest training images.

  The rows are the ``num_rows`` samples closest to the training set, the likeliest
  copies, closest first. Nearness is measured in the given features, or on raw
  pixels when none are given.

  Args:
    path: PNG to write.
    samples, train: uint8 (N, H, W, C) images of one shape.
    sample_features, train_features: (N, D) and (M, D) features, or both None.
    num_rows: samples shown.
    k: training neighbours per sample.
    **distance_options: ``dtype``, ``block_rows``, ``block_cols`` of `distances`.

  Returns:
    The path written.
  """
  samples, train = _check_images(samples, "samples"), _check_images(train, "train")
  if samples.shape[1:] != train.shape[1:]:
    raise ValueError(f"Image shapes differ: {samples.shape[1:]} vs {train.shape[1:]}.")
  if (sample_features is None) != (train_features is None):
    raise ValueError("Pass both feature sets or neither.")
  if sample_features is None:
    sample_features, train_features = scores.flatten_pixels(samples), scores.flatten_pixels(train)
  d2, idx = distances.nearest_neighbours(sample_features, train_features, k, **distance_options)
  rows = np.argsort(d2[:, 0], kind="stable")[:num_rows]
  tiles = np.concatenate([np.concatenate([samples[r:r + 1], train[idx[r]]]) for r in rows])
  return jaxgan_images.save_png(path, jaxgan_images.make_grid(tiles, ncol=k + 1))
