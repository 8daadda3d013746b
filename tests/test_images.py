"""Tests for jaxgan.images: denormalisation, grid layout, PNG round trips."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxgan import images


def test_to_uint8_maps_range_and_clips():
  x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, np.nan], np.float32)
  np.testing.assert_array_equal(images.to_uint8(x), [0, 0, 128, 191, 255, 255, 0])
  np.testing.assert_array_equal(
      images.to_uint8(np.array([0.0, 0.5, 1.0]), value_range=(0.0, 1.0)), [0, 128, 255])
  u = np.arange(6, dtype=np.uint8)
  assert images.to_uint8(u) is u


def _tiles(n, h, w, c):
  """Tile k is filled with 10 * (k + 1) plus a per-pixel ramp so layout errors show."""
  ramp = np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c) % 5
  return np.stack([ramp + 10 * (k + 1) for k in range(n)]).astype(np.uint8)


def test_make_grid_layout_and_padding():
  n, h, w, c = 5, 3, 4, 3
  tiles = _tiles(n, h, w, c)
  grid = images.make_grid(tiles, ncol=2, padding=1, pad_value=7)
  assert grid.shape == (1 + 3 * (h + 1), 1 + 2 * (w + 1), c)
  assert grid.dtype == np.uint8
  expected = np.full(grid.shape, 7, np.uint8)
  for k in range(n):
    top, left = 1 + (k // 2) * (h + 1), 1 + (k % 2) * (w + 1)
    expected[top:top + h, left:left + w] = tiles[k]
  np.testing.assert_array_equal(grid, expected)
  # Spot checks against hand-computed positions: tile 3 is row 1, column 1.
  np.testing.assert_array_equal(grid[5, 6], tiles[3, 0, 0])
  assert (grid[9:12, 6:10] == 7).all()  # The empty sixth cell.
  assert (grid[0] == 7).all() and (grid[:, 5] == 7).all()


def test_make_grid_float_grayscale_and_few_images():
  x = np.stack([np.full((2, 2, 1), -1.0), np.full((2, 2, 1), 1.0)]).astype(np.float32)
  grid = images.make_grid(x, ncol=8, padding=0)
  assert grid.shape == (2, 4, 1)  # ncol shrinks to N.
  np.testing.assert_array_equal(grid[..., 0], [[0, 0, 255, 255]] * 2)
  with pytest.raises(ValueError):
    images.make_grid(np.zeros((2, 4, 4, 2), np.uint8))


def test_save_png_roundtrip_rgb_and_gray(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  path = images.save_png(tmp_path / "a" / "b" / "rgb.png", rgb)
  assert path == str(tmp_path / "a" / "b" / "rgb.png")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with Image.open(path) as img:
    assert img.format == "PNG" and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), rgb)

  gray = rng.integers(0, 256, (6, 4, 1), dtype=np.uint8)
  with Image.open(images.save_png(tmp_path / "gray.png", gray)) as img:
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), gray[..., 0])


def test_save_pngs_names_and_contents(tmp_path):
  batch = _tiles(3, 4, 4, 3)
  paths = images.save_pngs(tmp_path / "samples", batch, prefix="fake")
  assert [os.path.basename(p) for p in paths] == [
      "fake_0000.png", "fake_0001.png", "fake_0002.png"]
  for path, expected in zip(paths, batch):
    with Image.open(path) as img:
      np.testing.assert_array_equal(np.asarray(img), expected)


def test_fit_to_crops_the_centre_or_pads_with_black():
  x = np.arange(2 * 6 * 6).reshape(2, 6, 6, 1).astype(np.uint8)
  np.testing.assert_array_equal(images.fit_to(x, (4, 4)), x[:, 1:5, 1:5])  # centre crop
  padded = images.fit_to(x, (8, 9))
  assert padded.shape == (2, 8, 9, 1)
  np.testing.assert_array_equal(padded[:, 1:7, 1:7], x)  # black border around
  assert padded.sum() == x.sum()
