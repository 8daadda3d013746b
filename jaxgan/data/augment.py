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


def random_crop(key, images, size: int):
  """A random ``size``×``size`` window of each image (N, H, W, C), chosen per example."""
  n, h, w, _ = images.shape
  if (h, w) == (size, size):
    return images
  ky, kx = jax.random.split(key)
  ys = jax.random.randint(ky, (n,), 0, h - size + 1)
  xs = jax.random.randint(kx, (n,), 0, w - size + 1)
  crop = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (size, size, img.shape[-1]))
  return jax.vmap(crop)(images, ys, xs)


def reflect_pad_crop(key, images, pad: int, mode: str = "symmetric"):
  """Pads ``pad`` pixels each side (numpy ``mode``), then a random crop back."""
  if pad == 0:
    return images
  n, h, w, _ = images.shape
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)
  ky, kx = jax.random.split(key)
  ys = jax.random.randint(ky, (n,), 0, 2 * pad + 1)
  xs = jax.random.randint(kx, (n,), 0, 2 * pad + 1)
  crop = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (h, w, img.shape[-1]))
  return jax.vmap(crop)(padded, ys, xs)


def flip_pad_crop(key, images, pad: int, mode: str = "symmetric"):
  """The lesson's CIFAR-10 training transform: RandomFlip, reflection pad sz//8, random crop."""
  k_flip, k_crop = jax.random.split(key)
  return reflect_pad_crop(k_crop, random_flip(k_flip, images), pad, mode)


def normalize(images, mean, std, dtype=jnp.float32):
  """uint8 [0, 255] → ``(x/255 - mean) / std`` per channel, in ``dtype``."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return ((images.astype(jnp.float32) / 255.0 - mean) / std).astype(dtype)
