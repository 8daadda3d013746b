"""Sample-quality scores on feature sets, each with its spread.

Every function takes features as (N, D) arrays of any real dtype, or class
probabilities as (N, K), and returns plain Python numbers (in NamedTuples), so
results go straight into JSON. FD and KID run in float64; the neighbour-based
scores convert a block at a time (see `distances`).

Spreads say how much a score moves with the finite sample it was computed on:

* FD: std over bootstrap resamples of the evaluated set against the fixed
  reference (the resample keeps N, so FD's 1/N bias stays the same).
* KID: std over the random subsets its value is averaged from.
* Precision, recall, memorisation: the binomial standard error
  sqrt(p(1 − p) / n) of a share of n points, which is the bootstrap std over
  those points in closed form (the opposite set's manifold or the threshold
  held fixed).
* Class coverage: std over bootstrap resamples of the samples.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxgan.evaluation import distances


class Score(NamedTuple):
  value: float
  spread: float


def _features(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a (N, D) array, got shape {x.shape}.")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} holds NaN or infinite values.")
  return x


def _std(values) -> float:
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _proportion_spread(p: float, n: int) -> float:
  return float(np.sqrt(p * (1.0 - p) / n))


# ----------------------------------------------------------------------------- Fréchet distance

def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """Mean (D,) and unbiased covariance (D, D) of (N, D) features, float64."""
  x = _features(features, "features")
  if len(x) < 2:
    raise ValueError("A covariance needs at least 2 samples.")
  return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a covariance; rounding's tiny negative eigenvalues become 0."""
  w, v = np.linalg.eigh((sigma + sigma.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _trace_sqrt_product(sqrt_s1: np.ndarray, s2: np.ndarray) -> float:
  """tr sqrt(S1^½ S2 S1^½) = Σ √λ(S1 S2), from a symmetric PSD matrix, so no complex parts."""
  m = sqrt_s1 @ s2 @ sqrt_s1
  w = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
  """‖μ1 − μ2‖² + tr S1 + tr S2 − 2 tr sqrt(S2^½ S1 S2^½), in float64.

  Well defined for singular covariances (fewer samples than dimensions): the
  symmetric form has real, non-negative eigenvalues, unlike sqrtm(S1 S2).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"Shapes differ: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}.")
  diff = mu1 - mu2
  fd = (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
        - 2.0 * _trace_sqrt_product(_psd_sqrt(sigma2), sigma1))
  # A squared distance; only rounding can take it below 0.
  return max(float(fd), 0.0)


def frechet_distance(a, b) -> float:
  """Fréchet distance between Gaussians fitted to features ``a`` and ``b`` (FID on Inception)."""
  return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def frechet_distance_with_spread(a, b, num_bootstrap: int = 10, seed=0) -> Score:
  """FD(a, b) and its std over bootstrap resamples of ``a`` (``b`` is the fixed reference).

  Args:
    a: (N, D) features of the evaluated set.
    b: (M, D) reference features.
    num_bootstrap: resamples; each costs a D×D covariance and two D³ products.
    seed: int or numpy Generator.
  """
  a = _features(a, "a")
  mu_b, sigma_b = gaussian_stats(b)
  sqrt_b, trace_b = _psd_sqrt(sigma_b), float(np.trace(sigma_b))

  def fd(x):
    mu, sigma = gaussian_stats(x)
    diff = mu - mu_b
    return max(float(diff @ diff + np.trace(sigma) + trace_b
                     - 2.0 * _trace_sqrt_product(sqrt_b, sigma)), 0.0)

  rng = np.random.default_rng(seed)
  reps = [fd(a[rng.integers(0, len(a), len(a))]) for _ in range(num_bootstrap)]
  return Score(fd(a), _std(reps))


# ----------------------------------------------------------------------------- KID

def polynomial_kernel(x, y) -> np.ndarray:
  """KID's kernel k(x, y) = (x·y / d + 1)³ between the rows of x and y."""
  t = x @ y.T
  t /= x.shape[1]
  t += 1.0
  return t * t * t  # in place and by products: cheaper than ** 3 on a 1000 x 1000 block


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
  m = len(x)
  kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
  # Unbiased: within-set means leave out the i = j terms.
  within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
  return float(within - 2.0 * kxy.mean())


def kernel_inception_distance(a, b, num_subsets: int = 100, subset_size: int = 1000,
                              seed=0) -> Score:
  """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic kernel.

  Each of ``num_subsets`` rounds draws ``subset_size`` rows of each set without
  replacement (fewer if a set is smaller) and computes the unbiased MMD²; the
  score is their mean, the spread their std. Unlike FD it is unbiased, so it can
  come out slightly negative when the two sets share a distribution.

  Args:
    a, b: (N, D) and (M, D) features.
    num_subsets: rounds.
    subset_size: rows per set per round.
    seed: int or numpy Generator.
  """
  a, b = _features(a, "a"), _features(b, "b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"Feature sizes differ: {a.shape[1]} vs {b.shape[1]}.")
  m = min(subset_size, len(a), len(b))
  if m < 2 or num_subsets < 1:
    raise ValueError(f"Need subsets of at least 2 rows and 1 subset, got {m=}, {num_subsets=}.")
  rng = np.random.default_rng(seed)
  values = [
      _mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                     b[rng.choice(len(b), m, replace=False)])
      for _ in range(num_subsets)
  ]
  return Score(float(np.mean(values)), _std(values))


# ----------------------------------------------------------------------------- precision / recall

class PrecisionRecall(NamedTuple):
  precision: float
  recall: float
  precision_spread: float
  recall_spread: float


def precision_recall(real, fake, k: int = 3, **distance_options) -> PrecisionRecall:
  """Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifold estimate.

  A set's manifold is the union of balls around its points, each reaching the
  point's k-th nearest neighbour in the same set. Precision is the share of fake
  points inside the real manifold (fidelity), recall the share of real points
  inside the fake manifold (diversity). The paper uses k = 3 and equal set sizes.

  Args:
    real: (N, D) real features.
    fake: (M, D) generated features.
    k: neighbour that sets each ball's radius.
    **distance_options: ``dtype``, ``block_rows``, ``block_cols`` of `distances`.
  """
  real, fake = distances.as_matrix(real, "real"), distances.as_matrix(fake, "fake")
  real_r2 = distances.kth_neighbour_sq_radius(real, k, **distance_options)
  fake_r2 = distances.kth_neighbour_sq_radius(fake, k, **distance_options)
  precision = float(distances.inside_any_ball(fake, real, real_r2, **distance_options).mean())
  recall = float(distances.inside_any_ball(real, fake, fake_r2, **distance_options).mean())
  return PrecisionRecall(precision, recall, _proportion_spread(precision, len(fake)),
                         _proportion_spread(recall, len(real)))


# ----------------------------------------------------------------------------- memorisation

class Memorisation(NamedTuple):
  share: float            # samples closer to the training set than the threshold
  spread: float
  threshold: float        # a distance, not squared
  distances: np.ndarray   # (N,) each sample's distance to its nearest training point
  nearest: np.ndarray     # (N,) index of that training point


def _nearest_distance(x, train, **distance_options) -> tuple[np.ndarray, np.ndarray]:
  d2, idx = distances.nearest_neighbours(x, train, 1, **distance_options)
  return np.sqrt(d2[:, 0]), idx[:, 0]


def memorisation_threshold(train, heldout, percentile: float = 1.0,
                           **distance_options) -> float:
  """The ``percentile``-th percentile of held-out-real → nearest-training-point distances."""
  d, _ = _nearest_distance(distances.as_matrix(heldout, "heldout"),
                           distances.as_matrix(train, "train"), **distance_options)
  return float(np.percentile(d, percentile))


def memorisation(samples, train, heldout=None, *, percentile: float = 1.0,
                 threshold: float | None = None, **distance_options) -> Memorisation:
  """Share of samples nearer to a training point than real unseen data ever is.

  The threshold is the ``percentile``-th percentile (1st by default) of the
  distances from held-out real points to their nearest training point: a
  generator that does not copy lands about ``percentile`` / 100 of its samples
  below it by chance, one that copies its training set far more. The features
  decide what "near" means: pass pixels (`memorisation_pixels`) for literal
  copies, classifier features for copies up to small shifts and noise.

  Args:
    samples: (N, D) features of generated samples.
    train: (M, D) features of the training set.
    heldout: (L, D) features of real data the generator never saw; not needed
      when ``threshold`` is given.
    percentile: which percentile of held-out distances is the threshold.
    threshold: a threshold from `memorisation_threshold`, to score several sample
      sets against one.
    **distance_options: ``dtype``, ``block_rows``, ``block_cols`` of `distances`.
  """
  samples = distances.as_matrix(samples, "samples")
  train = distances.as_matrix(train, "train")
  if (heldout is None) == (threshold is None):
    raise ValueError("Pass exactly one of heldout and threshold.")
  if threshold is None:
    threshold = memorisation_threshold(train, heldout, percentile, **distance_options)
  d, idx = _nearest_distance(samples, train, **distance_options)
  share = float((d < threshold).mean())
  return Memorisation(share, _proportion_spread(share, len(samples)), float(threshold), d, idx)


def flatten_pixels(images) -> np.ndarray:
  """(N, ...) images → (N, pixels) in their own dtype and units (a view where possible).

  No float copy: `distances` converts a block at a time, so 60k 64×64 RGB uint8
  images stay 0.7 GB instead of 3 GB as float32.
  """
  images = np.asarray(images)
  return images.reshape(len(images), -1)


def _pooled(windows, factor: int) -> np.ndarray:
  """(N, h, w, C) → (N, h/f · w/f · C) box averages: what `aligned_nearest` retrieves
  candidates by, cheaply."""
  n, h, w, c = windows.shape
  h, w = h - h % factor, w - w % factor
  x = np.asarray(windows[:, :h, :w], np.float32).reshape(n, h // factor, factor,
                                                          w // factor, factor, c)
  return x.mean(axis=(2, 4)).reshape(n, -1)


def aligned_nearest(queries, train, *, max_shift: int = 2, candidates: int = 4,
                    pool: int = 4, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Each query image's pixel distance to its nearest training image, up to a shift of
  ``max_shift`` pixels either way and a left-right mirror.

  Distances are measured on the central (H − 2s) × (W − 2s) window, so that no shift
  reads outside an image; s is ``max_shift``, or less for images under 16 pixels a side,
  so that the window keeps at least three quarters of each side. For each of the 2 (2s + 1)² shifted and mirrored versions of a
  query, box-averaged windows (``pool`` × ``pool``) pick its ``candidates`` nearest
  training images, and the exact distance to each is taken in that alignment: an exact
  copy in any alignment is found at distance 0.

  Args:
    queries, train: images (N, H, W, C) of one shape, any dtype (pixel units kept).

  Returns:
    ``(distances (N,), nearest training index (N,))``.
  """
  queries, train = np.asarray(queries), np.asarray(train)
  h, w = train.shape[1:3]
  s = min(max_shift, min(h, w) // 8)
  centre = lambda x: np.asarray(x[:, s:h - s, s:w - s], np.float32)
  train_windows = centre(train)
  pooled = _pooled(train_windows, pool)
  flat = train_windows.reshape(len(train), -1)
  norms = np.einsum("nd,nd->n", flat, flat)
  k = min(candidates, len(train))
  out_d = np.full(len(queries), np.inf)
  out_i = np.zeros(len(queries), np.int64)
  for start in range(0, len(queries), block):
    chunk = queries[start:start + block]
    rows = np.arange(start, start + len(chunk))
    for view in (chunk, chunk[:, :, ::-1]):
      for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
          q = centre(np.roll(view, (dy, dx), axis=(1, 2)))
          _, found = distances.nearest_neighbours(_pooled(q, pool), pooled, k)
          q = q.reshape(len(q), -1)
          d2 = (np.einsum("nd,nd->n", q, q)[:, None]
                - 2 * np.einsum("nd,nkd->nk", q, flat[found]) + norms[found])
          j = d2.argmin(axis=1)
          best = np.sqrt(np.maximum(d2[np.arange(len(q)), j], 0))
          better = best < out_d[rows]
          out_d[rows[better]] = best[better]
          out_i[rows[better]] = found[np.arange(len(q)), j][better]
  return out_d, out_i


def memorisation_pixels(samples, train, heldout=None, *, percentile: float = 1.0,
                        threshold: float | None = None, max_shift: int = 2) -> Memorisation:
  """`memorisation` on raw pixels, catching near-copies: a sample counts as a copy when
  it is nearer to a training image, up to a shift of ``max_shift`` pixels and a mirror
  (`aligned_nearest`), than the ``percentile`` of held-out real images are.

  Args:
    samples, train, heldout: images (N, H, W, C) of one size; distances in pixel units.
    percentile, threshold: as for `memorisation`.
  """
  if (heldout is None) == (threshold is None):
    raise ValueError("Pass exactly one of heldout and threshold.")
  if threshold is None:
    threshold = float(np.percentile(aligned_nearest(heldout, train, max_shift=max_shift)[0],
                                    percentile))
  d, idx = aligned_nearest(samples, train, max_shift=max_shift)
  share = float((d < threshold).mean())
  return Memorisation(share, _proportion_spread(share, len(d)), float(threshold), d, idx)


# ----------------------------------------------------------------------------- class coverage

class ClassCoverage(NamedTuple):
  covered: int                 # classes holding at least min_share of the samples
  entropy: float               # of the predicted-class histogram, nats
  normalised_entropy: float    # entropy / log K: 1 uniform, 0 one class
  mean_confidence: float       # mean max-probability
  covered_spread: float
  entropy_spread: float
  normalised_entropy_spread: float
  mean_confidence_spread: float
  histogram: np.ndarray        # (K,) share of samples predicted as each class


def _coverage_values(labels, confidence, num_classes, min_share):
  hist = np.bincount(labels, minlength=num_classes) / len(labels)
  nonzero = hist[hist > 0]
  entropy = float(-(nonzero * np.log(nonzero)).sum())
  normalised = entropy / np.log(num_classes) if num_classes > 1 else 0.0
  return (int((hist >= min_share).sum()), entropy, float(normalised),
          float(confidence.mean())), hist


def class_coverage(probs, min_share: float = 0.02, num_bootstrap: int = 20,
                   seed=0) -> ClassCoverage:
  """How the samples spread over a classifier's classes; mode collapse reads as few classes.

  Args:
    probs: (N, K) class probabilities of the samples (rows sum to 1).
    min_share: a class counts as covered from this share of samples up.
    num_bootstrap: resamples for the spreads.
    seed: int or numpy Generator.
  """
  probs = _features(probs, "probs")
  labels, confidence = probs.argmax(axis=1), probs.max(axis=1)
  values, hist = _coverage_values(labels, confidence, probs.shape[1], min_share)
  rng = np.random.default_rng(seed)
  reps = []
  for _ in range(num_bootstrap):
    idx = rng.integers(0, len(labels), len(labels))
    reps.append(_coverage_values(labels[idx], confidence[idx], probs.shape[1], min_share)[0])
  spreads = [_std(column) for column in zip(*reps)] if reps else [0.0] * 4
  return ClassCoverage(*values, *spreads, hist)
