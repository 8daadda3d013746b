"""Tests for jaxgan.evaluation.scores and .distances against direct formulas and known cases."""

import tracemalloc

import numpy as np
import pytest
import scipy.linalg

from conftest import needs_fashion_mnist
from jaxgan.evaluation import distances, scores

EPS = np.finfo(np.float64).eps


def gaussian(rng, n, d, scale=1.0, shift=0.0):
  return rng.standard_normal((n, d)) * scale + shift


def exact_moments(rng, n, mean, variances):
  """n points whose sample mean and (ddof=1) covariance are exactly mean and diag(variances)."""
  a = rng.standard_normal((n, len(mean)))
  q, _ = np.linalg.qr(a - a.mean(axis=0))  # centred columns stay centred under R⁻¹
  return mean + q * np.sqrt((n - 1) * np.asarray(variances))


def brute_sq_distances(a, b):
  return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


# ----------------------------------------------------------------------------- distances

@pytest.mark.parametrize("exclude_self", [False, True])
def test_blockwise_neighbours_equal_brute_force(exclude_self):
  rng = np.random.default_rng(0)
  ref = rng.standard_normal((53, 5)) + 3.0  # off-centre: the shift must not matter
  query = ref if exclude_self else rng.standard_normal((37, 5))
  d2, idx = distances.nearest_neighbours(query, ref, 4, exclude_self=exclude_self,
                                         dtype=np.float64, block_rows=8, block_cols=16)
  full = brute_sq_distances(query, ref)
  if exclude_self:
    np.fill_diagonal(full, np.inf)
  want = np.argsort(full, axis=1)[:, :4]
  np.testing.assert_array_equal(idx, want)
  # Expanded-square rounding: a few eps of the squared norms (|x| ≲ 10 here).
  np.testing.assert_allclose(d2, np.take_along_axis(full, want, axis=1), rtol=0, atol=1e-11)


def test_float32_cross_term_keeps_neighbours_and_copies_near_zero():
  rng = np.random.default_rng(1)
  ref = rng.standard_normal((200, 64)) * 50 + 1000  # large offset: centring keeps it exact
  d2, idx = distances.nearest_neighbours(ref[:20], ref, 1)
  np.testing.assert_array_equal(idx[:, 0], np.arange(20))
  # Worst-case float32 dot-product error, D·eps·|q|², doubled by the −2q·r term; without the
  # centring it would scale with the offset's norm² (~6e7), not the centred one (~2e5).
  centred_sq = ((ref - ref.mean(0)) ** 2).sum(1).max()
  assert d2.max() <= 2 * 64 * np.finfo(np.float32).eps * centred_sq


def test_inside_any_ball_blockwise_equals_brute_force():
  rng = np.random.default_rng(2)
  centres, query = rng.standard_normal((41, 3)), rng.standard_normal((29, 3)) * 1.5
  r2 = rng.uniform(0.05, 0.6, 41)
  got = distances.inside_any_ball(query, centres, r2, dtype=np.float64,
                                  block_rows=7, block_cols=10)
  np.testing.assert_array_equal(got, (brute_sq_distances(query, centres) <= r2).any(axis=1))
  assert 0 < got.sum() < len(query)  # the case exercises both answers


def test_neighbour_memory_is_a_few_tiles_not_the_distance_matrix():
  rng = np.random.default_rng(15)
  query = rng.integers(0, 256, (600, 8), dtype=np.uint8)  # pixels: must not be copied to float
  ref = rng.integers(0, 256, (12000, 8), dtype=np.uint8)
  tile = 200 * 1500 * 8  # one float64 tile; the full matrix is 24 of them
  options = dict(block_rows=200, block_cols=1500)
  tracemalloc.start()
  try:
    distances.nearest_neighbours(query, ref, 3, **options)
    distances.inside_any_ball(query, ref, np.full(len(ref), 100.0), **options)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  # A tile's distances, candidates, argpartition indices and temporaries: ~6 tiles measured.
  assert peak < 8 * tile


# ----------------------------------------------------------------------------- Fréchet distance

def scipy_frechet(a, b):
  mu1, mu2 = a.mean(0), b.mean(0)
  s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_matches_scipy_sqrtm_on_well_conditioned_data():
  rng = np.random.default_rng(3)
  a = gaussian(rng, 400, 6) @ rng.standard_normal((6, 6))
  b = gaussian(rng, 300, 6, shift=0.5) @ rng.standard_normal((6, 6))
  # Both are float64 eigen/Schur methods on condition numbers ~1e2: agreement to ~1e-12.
  np.testing.assert_allclose(scores.frechet_distance(a, b), scipy_frechet(a, b), rtol=1e-9)


def test_frechet_closed_form_for_diagonal_covariances():
  rng = np.random.default_rng(4)
  v1, v2 = rng.uniform(0.5, 3.0, 8), rng.uniform(0.5, 3.0, 8)
  m1, m2 = rng.standard_normal(8), rng.standard_normal(8)
  a, b = exact_moments(rng, 50, m1, v1), exact_moments(rng, 70, m2, v2)
  want = ((m1 - m2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
  np.testing.assert_allclose(scores.frechet_distance(a, b), want, rtol=1e-10)
  np.testing.assert_allclose(
      scores.frechet_distance_from_stats(m1, np.diag(v1), m2, np.diag(v2)), want, rtol=1e-12)


def test_frechet_is_zero_for_identical_sets():
  a = gaussian(np.random.default_rng(5), 100, 16)
  # tr S1 + tr S2 − 2 Σ√λ cancels to rounding: ~D·eps of the trace.
  assert scores.frechet_distance(a, a.copy()) <= 16 * 100 * EPS * np.trace(np.cov(a.T))


def test_frechet_rank_deficient_equals_the_full_rank_subspace_value():
  # 20 points in a 10-d subspace of 64-d: covariances of rank ≤ 10 in 64-d. Distances are
  # invariant under the isometric embedding, so FD must equal the (full-rank) 10-d value.
  rng = np.random.default_rng(6)
  a10, b10 = gaussian(rng, 20, 10), gaussian(rng, 24, 10, scale=1.3, shift=0.2)
  embed, _ = np.linalg.qr(rng.standard_normal((64, 10)))
  a64, b64 = a10 @ embed.T, b10 @ embed.T
  fd64, want = scores.frechet_distance(a64, b64), scipy_frechet(a10, b10)
  assert np.isfinite(fd64) and fd64 >= 0
  # The 54 null eigenvalues come out as ±eps·‖M‖ and each adds up to √(eps·‖M‖) once clipped.
  s_norm = np.linalg.norm(np.cov(a10.T), 2) * np.linalg.norm(np.cov(b10.T), 2)
  atol = 2 * 54 * np.sqrt(10 * EPS * s_norm)
  np.testing.assert_allclose(fd64, want, rtol=0, atol=atol)
  np.testing.assert_allclose(scores.frechet_distance(b64, a64), fd64, rtol=0, atol=atol)
  assert scores.frechet_distance(a64, a64) <= atol


def test_frechet_spread_is_a_bootstrap_std():
  rng = np.random.default_rng(7)
  a, b = gaussian(rng, 200, 4), gaussian(rng, 300, 4, shift=0.3)
  s = scores.frechet_distance_with_spread(a, b, num_bootstrap=8, seed=1)
  assert s.value == pytest.approx(scores.frechet_distance(a, b), rel=1e-12)
  assert 0 < s.spread < s.value
  assert s == scores.frechet_distance_with_spread(a, b, num_bootstrap=8, seed=1)


# ----------------------------------------------------------------------------- KID

def direct_mmd2(x, y):
  """The unbiased MMD² estimator written as the paper's double sums."""
  d, m = x.shape[1], len(x)
  k = lambda u, v: (np.dot(u, v) / d + 1.0) ** 3
  kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return kxx / (m * (m - 1)) + kyy / (m * (m - 1)) - 2 * kxy / m**2


def test_kid_equals_direct_double_sums_on_one_subset():
  rng = np.random.default_rng(8)
  a, b = gaussian(rng, 30, 5), gaussian(rng, 30, 5, shift=0.4)
  # One subset of every row: only the order changes, which MMD² ignores.
  got = scores.kernel_inception_distance(a, b, num_subsets=1, subset_size=30)
  np.testing.assert_allclose(got.value, direct_mmd2(a, b), rtol=1e-10)
  assert got.spread == 0.0


def test_kid_same_distribution_is_zero_within_spread_and_shift_is_clear():
  rng = np.random.default_rng(9)
  a, b = gaussian(rng, 400, 16), gaussian(rng, 400, 16)
  same = scores.kernel_inception_distance(a, b, num_subsets=50, subset_size=100, seed=0)
  # Unbiased, so the mean of 50 subset values sits well inside one subset's std.
  assert abs(same.value) < same.spread
  shifted = scores.kernel_inception_distance(a, b + 0.5, num_subsets=50, subset_size=100)
  # Far outside what equal distributions give, and several of its own subset stds above 0.
  assert shifted.value > 10 * same.spread
  assert shifted.value > 3 * shifted.spread > 0


# ----------------------------------------------------------------------------- precision / recall

def brute_precision_recall(real, fake, k):
  def radii(x):
    d = brute_sq_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]
  cross = brute_sq_distances(fake, real)
  precision = (cross <= radii(real)[None, :]).any(1).mean()
  recall = (cross.T <= radii(fake)[None, :]).any(1).mean()
  return precision, recall


def test_precision_recall_blockwise_equals_brute_force():
  rng = np.random.default_rng(10)
  real, fake = gaussian(rng, 60, 3), gaussian(rng, 50, 3, scale=0.7, shift=0.5)
  got = scores.precision_recall(real, fake, k=3, dtype=np.float64, block_rows=9, block_cols=13)
  want = brute_precision_recall(real, fake, 3)
  assert (got.precision, got.recall) == pytest.approx(want, abs=1e-15)
  assert got.precision_spread == pytest.approx(np.sqrt(want[0] * (1 - want[0]) / 50))


def test_precision_recall_identical_and_disjoint_sets():
  real = gaussian(np.random.default_rng(11), 100, 4)
  same = scores.precision_recall(real, real.copy())
  assert (same.precision, same.recall, same.precision_spread) == (1.0, 1.0, 0.0)
  far = scores.precision_recall(real, real + 100.0)
  assert (far.precision, far.recall) == (0.0, 0.0)


def test_precision_recall_of_one_sub_cluster():
  rng = np.random.default_rng(12)
  centres = np.array([[10.0, 10.0], [10.0, -10.0], [-10.0, 10.0], [-10.0, -10.0]])
  real = np.concatenate([c + rng.standard_normal((100, 2)) for c in centres])
  fake = centres[0] + rng.standard_normal((100, 2))
  got = scores.precision_recall(real, fake, k=3)
  # Fresh draws from one real cluster sit inside its k-NN balls: 2-d with k=3 covers
  # most of the mass. Recall cannot exceed the cluster's share, 1/4.
  assert got.precision > 0.85
  assert 0.15 < got.recall <= 0.25


# ----------------------------------------------------------------------------- memorisation

def test_memorisation_copies_score_one_and_fresh_samples_stay_near_one_percent():
  rng = np.random.default_rng(13)
  train, heldout, fresh = (gaussian(rng, n, 16) for n in (1000, 800, 800))
  copies = scores.memorisation(train[100:300], train, heldout)
  assert copies.share == 1.0
  np.testing.assert_array_equal(copies.nearest, np.arange(100, 300))
  got = scores.memorisation(fresh, train, heldout)
  # Held-out and fresh distances are i.i.d. given train, so P(fresh < threshold) ~ Beta(9, 792)
  # (threshold between the 8th and 9th of 800) and the share ~ Binomial(800, that) / 800:
  # P(share > 0.05) ≈ 7e-7 (numerical integral).
  assert got.share <= 0.05
  assert got.spread == pytest.approx(np.sqrt(got.share * (1 - got.share) / 800))
  again = scores.memorisation(fresh, train, threshold=got.threshold)
  assert again.share == got.share


def test_memorisation_in_pixel_space_finds_copied_images():
  rng = np.random.default_rng(14)
  train = rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
  heldout = rng.integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
  samples = np.concatenate([train[:50], rng.integers(0, 256, (50, 8, 8, 1), dtype=np.uint8)])
  got = scores.memorisation_pixels(samples, train, heldout)
  np.testing.assert_array_equal(got.distances[:50] < got.threshold, True)
  np.testing.assert_array_equal(got.nearest[:50], np.arange(50))
  assert 0.5 <= got.share < 0.5 + 0.05  # copies, plus at most a few chance hits


# ----------------------------------------------------------------------------- class coverage

def one_hot_probs(labels, num_classes, confidence):
  probs = np.full((len(labels), num_classes), (1 - confidence) / (num_classes - 1))
  probs[np.arange(len(labels)), labels] = confidence
  return probs


def test_class_coverage_collapse_reads_as_one_class_and_zero_entropy():
  got = scores.class_coverage(one_hot_probs(np.full(200, 3), 10, 0.9))
  assert (got.covered, got.entropy, got.normalised_entropy) == (1, 0.0, 0.0)
  assert got.mean_confidence == pytest.approx(0.9)
  assert (got.covered_spread, got.entropy_spread) == (0.0, 0.0)


def test_class_coverage_uniform_covers_every_class():
  got = scores.class_coverage(one_hot_probs(np.arange(1000) % 10, 10, 0.5))
  assert got.covered == 10
  np.testing.assert_allclose(got.histogram, 0.1)
  assert got.entropy == pytest.approx(np.log(10), rel=1e-12)
  assert got.normalised_entropy == pytest.approx(1.0, rel=1e-12)
  assert got.entropy_spread > 0


def test_class_coverage_threshold_is_inclusive():
  labels = np.concatenate([np.zeros(97, int), [1, 1, 2]])  # class 1 at 2%, class 2 at 1%
  assert scores.class_coverage(one_hot_probs(labels, 3, 0.8)).covered == 2


def test_aligned_distance_is_zero_for_a_shifted_or_mirrored_copy():
  rng = np.random.default_rng(0)
  train = np.zeros((30, 16, 16, 1), np.uint8)
  train[:, 3:13, 3:13] = rng.integers(1, 256, (30, 10, 10, 1))  # content in a black frame
  copies = np.stack([np.roll(train[3], (2, -1), axis=(0, 1)), train[7][:, ::-1],
                     np.roll(train[11][:, ::-1], (-2, 2), axis=(0, 1))])
  d, idx = scores.aligned_nearest(copies, train)
  np.testing.assert_array_equal(idx, [3, 7, 11])
  np.testing.assert_allclose(d, 0, atol=1e-6)
  assert scores.aligned_nearest(train[:1], train[1:])[0][0] > 100  # others are far


@needs_fashion_mnist
def test_pixel_memorisation_flags_shifted_and_mirrored_copies_and_few_real_images():
  from jaxgan.data import classification
  from jaxgan.evaluation import report
  train = classification.fashion_mnist_images(32, "train", max_images=4000)
  heldout = classification.fashion_mnist_images(32, "test", max_images=1200)
  rng = np.random.default_rng(0)
  rows = rng.choice(len(train), 200, replace=False)
  shifts = rng.integers(-2, 3, (200, 2))
  copies = np.stack([np.roll(train[r], tuple(s), axis=(0, 1)) for r, s in zip(rows, shifts)])
  copies[100:] = copies[100:, :, ::-1]  # half of them mirrored too
  pixels = lambda x: (x.reshape(len(x), -1).astype(np.float32), None)
  judged = report.Reference(pixels, train, heldout, len(copies), seed=0, fd_bootstrap=2,
                            kid_subsets=2, kid_subset_size=100)
  got = judged.score(copies)
  assert got["memorisation_pixels"]["value"] >= 0.95
  # Held-out images that did not set the thresholds: the false alarms of a generator
  # that copies nothing, at most 2% (1% is where the threshold sits).
  assert got["memorisation_pixels"]["floor"] <= 0.02
  assert got["memorisation"]["floor"] <= 0.02
  fresh = judged.score(classification.fashion_mnist_images(32, "test")[5000:5200])
  assert fresh["memorisation_pixels"]["value"] <= 0.03  # real images it never saw
