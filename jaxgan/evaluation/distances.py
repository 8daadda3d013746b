"""Euclidean nearest neighbours between large feature sets, one block at a time.

A 10k × 60k distance matrix is 4.8 GB in float64, so nothing here ever holds it,
nor a converted copy of the inputs (60k 64×64 RGB images as float64 would be
6 GB): rows are centred and cast a block at a time, and each squared-distance
tile is ``block_rows × block_cols``; only the running answer (the k nearest so
far, or one flag per point) survives a tile.

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


def as_matrix(x, name: str) -> np.ndarray:
  """``x`` as an (N, D) array of its own dtype (uint8 pixels stay uint8: no copy)."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"{name} must be a (N, D) array, got shape {x.shape}.")
  return x


class _Centred:
  """Query and reference, shifted by the reference mean and cast block by block."""

  def __init__(self, query, reference, dtype, block_rows: int, block_cols: int):
    self.query, self.reference = as_matrix(query, "query"), as_matrix(reference, "reference")
    if self.query.shape[1] != self.reference.shape[1]:
      raise ValueError(
          f"Feature sizes differ: {self.query.shape[1]} vs {self.reference.shape[1]}.")
    self.dtype, self.block_rows, self.block_cols = dtype, block_rows, block_cols
    self.shift = self.reference.mean(axis=0, dtype=np.float64)
    # Norms of the cast vectors, so a point and its copy give ~0 rather than the cast's error.
    self.query_sq = self._sq_norms(self.query, block_rows)
    self.reference_sq = self._sq_norms(self.reference, block_cols)

  def _block(self, x, start, size) -> np.ndarray:
    block = (x[start:start + size] - self.shift).astype(self.dtype)
    if not np.isfinite(block).all():
      raise ValueError("Features hold NaN or infinite values.")
    return block

  def _sq_norms(self, x, size) -> np.ndarray:
    return np.concatenate([
        np.einsum("ij,ij->i", b, b, dtype=np.float64)
        for b in (self._block(x, s, size) for s in range(0, len(x), size))] or [np.zeros(0)])

  def tiles(self) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yields (row start, column start, squared-distance tile), rows outermost."""
    for r0 in range(0, len(self.query), self.block_rows):
      q = self._block(self.query, r0, self.block_rows)
      q_sq = self.query_sq[r0:r0 + len(q), None]
      for c0 in range(0, len(self.reference), self.block_cols):
        r = self._block(self.reference, c0, self.block_cols)
        cross = (q @ r.T).astype(np.float64)
        d2 = q_sq + self.reference_sq[None, c0:c0 + len(r)] - 2.0 * cross
        yield r0, c0, np.maximum(d2, 0.0, out=d2)


def nearest_neighbours(query, reference, k: int = 1, *, exclude_self: bool = False,
                       dtype=np.float32, block_rows: int = BLOCK_ROWS,
                       block_cols: int = BLOCK_COLS) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest reference points of every query point.

  Args:
    query: (Nq, D) features, any real dtype.
    reference: (Nr, D) features.
    k: neighbours per query point.
    exclude_self: query and reference are the same set; point i is not its own
      neighbour (copies of it elsewhere in the set still count).
    dtype: matmul type of the cross term; float64 for exact small problems.
    block_rows, block_cols: tile size; memory is about 6 × rows × cols × 8 bytes.

  Returns:
    (squared distances (Nq, k) float64 ascending, indices (Nq, k) int64).
  """
  data = _Centred(query, reference, dtype, block_rows, block_cols)
  nq, nr = len(data.query), len(data.reference)
  if exclude_self and nq != nr:
    raise ValueError("exclude_self needs query and reference to be the same set.")
  if not 1 <= k <= nr - int(exclude_self):
    raise ValueError(f"k={k} needs 1 <= k <= {nr - int(exclude_self)} reference points.")
  best_d = np.full((nq, k), np.inf)
  best_i = np.zeros((nq, k), np.int64)
  for r0, c0, d2 in data.tiles():
    rows = slice(r0, r0 + len(d2))
    if exclude_self:
      diag = np.arange(max(r0, c0), min(r0 + d2.shape[0], c0 + d2.shape[1]))
      d2[diag - r0, diag - c0] = np.inf
    # Merge this tile's candidates with the k best so far; argpartition keeps it O(cols).
    # Columns < k of the candidates are the old best, the rest this tile's c0, c0 + 1, ...
    cand_d = np.concatenate([best_d[rows], d2], axis=1)
    keep = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
    old_i = np.take_along_axis(best_i[rows], np.minimum(keep, k - 1), axis=1)
    best_i[rows] = np.where(keep < k, old_i, c0 + keep - k)
    best_d[rows] = np.take_along_axis(cand_d, keep, axis=1)
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
  data = _Centred(query, centres, dtype, block_rows, block_cols)
  sq_radii = np.asarray(sq_radii, np.float64)
  if sq_radii.shape != (len(data.reference),):
    raise ValueError(f"Need one radius per centre, got {sq_radii.shape} for "
                     f"{len(data.reference)} centres.")
  inside = np.zeros(len(data.query), bool)
  for r0, c0, d2 in data.tiles():
    inside[r0:r0 + len(d2)] |= (d2 <= sq_radii[None, c0:c0 + d2.shape[1]]).any(axis=1)
  return inside
