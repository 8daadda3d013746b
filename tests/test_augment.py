import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.data import augment


def windows(array, size):
  """Every size×size window of a 2-D array, as a set of byte strings."""
  h, w = array.shape
  return {array[y:y + size, x:x + size].tobytes()
          for y in range(h - size + 1) for x in range(w - size + 1)}


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "constant"])
def test_pad_crop_covers_exactly_the_numpy_padded_windows(mode):
  image = np.arange(1, 10, dtype=np.uint8).reshape(3, 3)
  images = jnp.broadcast_to(jnp.asarray(image)[None, :, :, None], (400, 3, 3, 1))
  out = np.asarray(augment.pad_crop(jax.random.PRNGKey(0), images, 2, mode))
  assert out.shape == images.shape and out.dtype == np.uint8
  got = {crop[:, :, 0].tobytes() for crop in out}
  # 25 offsets, 400 draws: every window of the numpy-padded array shows up, nothing else.
  assert got == windows(np.pad(image, 2, mode=mode), 3)


def test_default_mode_repeats_the_edge_pixel_like_cv2_border_reflect():
  image = jnp.asarray([[1, 2, 3]] * 3, jnp.uint8)[None, :, :, None]
  images = jnp.broadcast_to(image, (200, 3, 3, 1))
  out = np.asarray(augment.pad_crop(jax.random.PRNGKey(1), images, 1))
  rows = {tuple(crop[0, :, 0]) for crop in out}
  # cv2.BORDER_REFLECT: ...2 1 | 1 2 3 | 3 2...; numpy's "reflect" would give 2 1 2 / 2 3 2.
  assert rows == {(1, 1, 2), (1, 2, 3), (2, 3, 3)}


def test_pad_zero_is_identity():
  images = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.uint8).reshape(2, 4, 4, 3)
  np.testing.assert_array_equal(augment.pad_crop(jax.random.PRNGKey(0), images, 0), images)


def test_bad_pad_mode_is_a_clear_error():
  images = jnp.zeros((1, 4, 4, 1), jnp.uint8)
  with pytest.raises(ValueError, match="'edge'.*symmetric"):
    augment.pad_crop(jax.random.PRNGKey(0), images, 1, "edge")
  with pytest.raises(ValueError, match="'wrap'"):
    augment.flip_pad_crop(jax.random.PRNGKey(0), images, 1, mode="wrap")


def test_random_crop_takes_valid_windows_with_per_example_offsets():
  n, h, w, size = 64, 7, 9, 4
  images = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32).reshape(1, h, w, 1), (n, h, w, 1))
  out = np.asarray(augment.random_crop(jax.random.PRNGKey(0), images, size))
  assert out.shape == (n, size, size, 1)
  offsets = set()
  for crop in out:
    y, x = divmod(int(crop[0, 0, 0]), w)  # the top-left value names the offset
    assert 0 <= y <= h - size and 0 <= x <= w - size
    np.testing.assert_array_equal(crop, images[0, y:y + size, x:x + size])
    offsets.add((y, x))
  assert len(offsets) > 10  # chosen per example, not once per batch


def test_random_crop_identity_at_full_size_and_error_when_too_big():
  images = jnp.arange(2 * 5 * 5, dtype=jnp.uint8).reshape(2, 5, 5, 1)
  assert augment.random_crop(jax.random.PRNGKey(0), images, 5) is images
  with pytest.raises(ValueError, match="6×6 crop does not fit in 5×5"):
    augment.random_crop(jax.random.PRNGKey(0), images, 6)


def test_flip_pad_crop_positional_call_under_jit():
  # The Darknet trainer calls augment.flip_pad_crop(key, x, pad) inside its jitted step.
  images = jnp.arange(3 * 8 * 8 * 3, dtype=jnp.uint8).reshape(3, 8, 8, 3)
  step = jax.jit(functools.partial(augment.flip_pad_crop, pad=2))
  out = step(jax.random.PRNGKey(0), images)
  assert out.shape == images.shape and out.dtype == jnp.uint8
