"""Euclidean nearest neighbours between large feature sets, one block at a time.

A 10k × 60k distance matrix is 4.8 GB in float64, so nothing here ever holds it:
queries and references are cut into blocks whose squared-distance tile fits in
``block_rows × block_cols`` float64 values, and only the running answer (the k
nearest so far, or one flag per point) survives a tile.

Squared distances come from |q|² + |r|² − 2 q·r. Both sets are first shifted by
the reference mean (distances do not change) so the norms stay small and the
cancellation in that formula loses little; the cross term is a ``dtype`` matmul
(float32 by default, twice as fast, error ~1e-7 of the centred norms), the rest
is float64.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK_ROWS = 1024
BLOCK_COLS = 8192


def _as_2d(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a (N, D) array, got shape {x.shape}.")
  return x


class _Centred:
  """Query and reference shifted by the reference mean, cast once, with float64 norms."""

  def __init__(self, query, reference, dtype):
    query, reference = _as_2d(query, "query"), _as_2d(reference, "reference")
    if query.shape[1] != reference.shape[1]:
      raise ValueError(f"Feature sizes differ: {query.shape[1]} vs {reference.shape[1]}.")
    shift = reference.mean(axis=0, dtype=np.float64)
    self.query = (query - shift).astype(dtype)
    self.reference = (reference - shift).astype(dtype)
    # Norms of the cast vectors, so a point and its copy give ~0 rather than the cast's error.
    self.query_sq = np.einsum("ij,ij->i", self.query, self.query, dtype=np.float64)
    self.reference_sq = np.einsum("ij,ij->i", self.reference, self.reference,
                                  dtype=np.float64)

  def tiles(self, block_rows: int, block_cols: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yields (row start, column start, squared-distance tile), rows outermost."""
    for r0 in range(0, len(self.query), block_rows):
      q = self.query[r0:r0 + block_rows]
      q_sq = self.query_sq[r0:r0 + block_rows, None]
      for c0 in range(0, len(self.reference), block_cols):
        cross = (q @ self.reference[c0:c0 + block_cols].T).astype(np.float64)
        d2 = q_sq + self.reference_sq[None, c0:c0 + block_cols] - 2.0 * cross
        yield r0, c0, np.maximum(d2, 0.0, out=d2)


def nearest_neighbours(query, reference, k: int = 1, *, exclude_self: bool = False,
                       dtype=np.float32, block_rows: int = BLOCK_ROWS,
                       block_cols: int = BLOCK_COLS) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest reference points of every query point.

  Args:
    query: (Nq, D) features.
    reference: (Nr, D) features.
    k: neighbours per query point.
    exclude_self: query and reference are the same set; point i is not its own
      neighbour (copies of it elsewhere in the set still count).
    dtype: matmul type of the cross term; float64 for exact small problems.
    block_rows, block_cols: tile size; memory is about 3 × rows × cols × 8 bytes.

  Returns:
    (squared distances (Nq, k) float64 ascending, indices (Nq, k) int64).
  """
  data = _Centred(query, reference, dtype)
  nq, nr = len(data.query), len(data.reference)
  if exclude_self and nq != nr:
    raise ValueError("exclude_self needs query and reference to be the same set.")
  if not 1 <= k <= nr - int(exclude_self):
    raise ValueError(f"k={k} needs 1 <= k <= {nr - int(exclude_self)} reference points.")
  best_d = np.full((nq, k), np.inf)
  best_i = np.zeros((nq, k), np.int64)
  for r0, c0, d2 in data.tiles(block_rows, block_cols):
    rows = slice(r0, r0 + len(d2))
    if exclude_self:
      diag = np.arange(max(r0, c0), min(r0 + d2.shape[0], c0 + d2.shape[1]))
      d2[diag - r0, diag - c0] = np.inf
    # Merge this tile's candidates with the k best so far; argpartition keeps it O(cols).
    cand_d = np.concatenate([best_d[rows], d2], axis=1)
    cand_i = np.concatenate(
        [best_i[rows], np.broadcast_to(np.arange(c0, c0 + d2.shape[1]), d2.shape)], axis=1)
    keep = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
    best_d[rows] = np.take_along_axis(cand_d, keep, axis=1)
    best_i[rows] = np.take_along_axis(cand_i, keep, axis=1)
  order = np.argsort(best_d, axis=1, kind="stable")
  return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def kth_neighbour_sq_radius(points, k: int, **kwargs) -> np.ndarray:
  """Squared distance from each point to its k-th nearest other point of the same set."""
  d2, _ = nearest_neighbours(points, points, k, exclude_self=True, **kwargs)
  return d2[:, -1]


def inside_any_ball(query, centres, sq_radii, *, dtype=np.float32,
                    block_rows: int = BLOCK_ROWS, block_cols: int = BLOCK_COLS) -> np.ndarray:
  """Whether each query point lies in at least one closed ball (centre, radius).

  Args:
    query: (Nq, D) features.
    centres: (Nc, D) ball centres.
    sq_radii: (Nc,) squared radii.

  Returns:
    (Nq,) bool.
  """
  data = _Centred(query, centres, dtype)
  sq_radii = np.asarray(sq_radii, np.float64)
  if sq_radii.shape != (len(data.reference),):
    raise ValueError(f"Need one radius per centre, got {sq_radii.shape} for "
                     f"{len(data.reference)} centres.")
  inside = np.zeros(len(data.query), bool)
  for r0, c0, d2 in data.tiles(block_rows, block_cols):
    inside[r0:r0 + len(d2)] |= (d2 <= sq_radii[None, c0:c0 + d2.shape[1]]).any(axis=1)
  return inside
