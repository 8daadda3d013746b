"""Host-side image helpers: denormalise, tile into a gallery, write PNGs.

Everything here is plain numpy + PIL so it can run in a logging thread or a
sampling script without touching an accelerator. Arrays are NHWC / HWC.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Maps float images in ``value_range`` to uint8 [0, 255], clipping outliers.

  Args:
    images: array of any shape. uint8 input is returned unchanged.
    value_range: (low, high) of the float data; ``(-1, 1)`` matches a tanh
      generator, ``(0, 1)`` a sigmoid one.

  Returns:
    A uint8 array of the same shape.
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  low, high = (float(v) for v in value_range)
  if not high > low:
    raise ValueError(f"value_range must have high > low, got {value_range}.")
  scaled = (images.astype(np.float32) - low) * (255.0 / (high - low))
  # NaNs (a diverged GAN) become 0 rather than undefined casts.
  scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _as_nhwc_uint8(images, value_range) -> np.ndarray:
  images = to_uint8(images, value_range)
  if images.ndim == 3:  # (N, H, W) grayscale
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
        f"Expected images of shape (N, H, W, C) with C in {{1, 3}}, got {images.shape}."
    )
  return images


def make_grid(images, ncol: int = 8, padding: int = 2, pad_value: int = 0,
              value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
  """Tiles a batch into one image, row-major, with ``padding`` pixels around every tile.

  Tile ``k`` sits in row ``k // ncol``, column ``k % ncol``, its top-left pixel
  at ``(padding + row * (H + padding), padding + col * (W + padding))``. The
  last row may be partly empty; empty cells and the padding take ``pad_value``.

  Args:
    images: (N, H, W, C) uint8, or float in ``value_range`` (see `to_uint8`);
      C is 1 or 3; (N, H, W) is treated as C = 1.
    ncol: tiles per row (fewer if N < ncol).
    padding: pixels between tiles and around the border.
    pad_value: uint8 value of padding and empty cells.
    value_range: range of float input.

  Returns:
    A uint8 (H', W', C) array.
  """
  images = _as_nhwc_uint8(images, value_range)
  n, h, w, c = images.shape
  if n == 0:
    raise ValueError("make_grid needs at least one image.")
  if ncol < 1 or padding < 0:
    raise ValueError(f"Need ncol >= 1 and padding >= 0, got {ncol=}, {padding=}.")
  ncol = min(ncol, n)
  nrow = -(-n // ncol)
  grid = np.full((padding + nrow * (h + padding), padding + ncol * (w + padding), c),
                 pad_value, dtype=np.uint8)
  for k in range(n):
    top = padding + (k // ncol) * (h + padding)
    left = padding + (k % ncol) * (w + padding)
    grid[top:top + h, left:left + w] = images[k]
  return grid


def save_png(path: str | os.PathLike, image,
             value_range: tuple[float, float] = (-1.0, 1.0)) -> str:
  """Writes one (H, W, C) or (H, W) image as PNG (mode L for C = 1, RGB for C = 3).

  Float input is converted with `to_uint8`. Parent folders are created.

  Returns:
    The path written, as a string.
  """
  image = to_uint8(image, value_range)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
    raise ValueError(f"Expected an (H, W), (H, W, 1) or (H, W, 3) image, got {image.shape}.")
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  # PIL infers mode L from (H, W) uint8 and RGB from (H, W, 3) uint8.
  Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
  return path


def save_pngs(directory: str | os.PathLike, images, prefix: str = "sample",
              value_range: tuple[float, float] = (-1.0, 1.0)) -> list[str]:
  """Writes each image of an (N, H, W, C) batch to ``directory/{prefix}_{i:04d}.png``.

  The index is zero-padded to at least 4 digits (more if N needs it) so the
  files sort in batch order.

  Returns:
    The paths written, in batch order.
  """
  images = _as_nhwc_uint8(images, value_range)
  width = max(4, len(str(len(images) - 1)))
  return [
      save_png(os.path.join(os.fspath(directory), f"{prefix}_{i:0{width}d}.png"), image)
      for i, image in enumerate(images)
  ]


def fit_to(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Centre-crops (larger) or black-pads (smaller) each side of (N, H, W, C) to ``size``."""
  out = images
  for axis, target in ((1, size[0]), (2, size[1])):
    n = out.shape[axis]
    if n > target:
      start = (n - target) // 2
      out = np.take(out, np.arange(start, start + target), axis=axis)
    elif n < target:
      pad = [(0, 0)] * out.ndim
      pad[axis] = ((target - n) // 2, target - n - (target - n) // 2)
      out = np.pad(out, pad)
  return out
