"""Data augmentation that runs on the device, inside the jitted step, per example.

The images stay uint8 until here, so the device keeps 4× less data and the host does
nothing per step.
"""

import jax
import jax.numpy as jnp


def random_flip(key, images):
  """Flips each image left-right with probability 0.5 (images: (N, H, W, C))."""
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


PAD_MODES = ("symmetric", "reflect", "constant")


def _random_window(key, images, height: int, width: int):
  """A random height×width window of each image (N, H, W, C), chosen per example."""
  n, h, w, c = images.shape
  if height > h or width > w:
    raise ValueError(f"a {height}×{width} crop does not fit in {h}×{w} images")
  if (h, w) == (height, width):
    return images
  ky, kx = jax.random.split(key)
  ys = jax.random.randint(ky, (n,), 0, h - height + 1)
  xs = jax.random.randint(kx, (n,), 0, w - width + 1)
  crop = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (height, width, c))
  return jax.vmap(crop)(images, ys, xs)


def random_crop(key, images, size: int):
  """A random ``size``×``size`` window of each image (N, H, W, C), chosen per example.

  Any H, W ≥ size works; H = W = size returns the images unchanged.
  """
  return _random_window(key, images, size, size)


def pad_crop(key, images, pad: int, mode: str = "symmetric"):
  """Pads ``pad`` pixels each side, then crops a random window of the original size.

  ``mode`` is numpy's: "symmetric" repeats the edge pixel, which is what fastai 0.7's
  ``cv2.BORDER_REFLECT`` does; "reflect" mirrors about the edge pixel; "constant" pads 0.
  """
  if mode not in PAD_MODES:
    raise ValueError(f"pad mode {mode!r} is not one of {PAD_MODES}")
  if pad == 0:
    return images
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  return _random_window(key, padded, *images.shape[1:3])


def flip_pad_crop(key, images, pad: int, mode: str = "symmetric"):
  """The lesson's CIFAR-10 training transform: random flip, pad sz//8, random crop back."""
  k_flip, k_crop = jax.random.split(key)
  return pad_crop(k_crop, random_flip(k_flip, images), pad, mode)


def normalize(images, mean, std, dtype=jnp.float32):
  """uint8 [0, 255] → ``(x/255 - mean) / std`` per channel, in ``dtype``."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)


def to_unit_range(images, dtype=jnp.float32):
  """uint8 [0, 255] → [-1, 1] (a tanh generator's range), in ``dtype``.

  The GANs' normalisation: the lesson's ``inception_stats`` and CycleGAN's
  ``Normalize((0.5,), (0.5,))`` are both this map.
  """
  return (images.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)
