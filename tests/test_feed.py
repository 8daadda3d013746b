"""Feeds: batch k a pure function of (seed, k), on the devices, and blocks of batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import parallel
from jaxgan.data import augment, feed


def test_device_blocks_are_a_pure_function_of_the_position():
  mesh = parallel.make_mesh()
  pixels = (np.arange(20 * 4 * 4, dtype=np.uint32).reshape(20, 4, 4, 1) % 251).astype(np.uint8)
  sampler = feed.EpochSampler(20, 4, seed=0)
  assert sampler.steps_per_epoch == 5
  data = feed.DeviceFeed(pixels, sampler, mesh)
  gather = jax.jit(data.gather)
  blocks = list(data.batches(0, [3, 4, 5]))
  assert [b.inputs.shape for b in blocks] == [(3, 4), (4, 4), (5, 4)]
  whole = np.concatenate([np.asarray(gather(data.arrays, b.inputs)) for b in blocks])
  # Restarting at any position gives the same batches; each epoch is a permutation.
  again = feed.DeviceFeed(pixels, feed.EpochSampler(20, 4, 0), mesh)
  block = next(again.batches(7, [5])).inputs
  np.testing.assert_array_equal(whole[7:12], np.asarray(gather(again.arrays, block)))
  firsts = whole[:5].reshape(20, -1)[:, 0]
  assert sorted(firsts.tolist()) == sorted(pixels.reshape(20, -1)[:, 0].tolist())
  assert not np.array_equal(whole[:5], whole[5:10])
  assert float(augment.to_unit_range(jnp.uint8(0))) == -1.0
  assert float(augment.to_unit_range(jnp.uint8(255))) == 1.0


def test_single_batches_equal_the_blocks_and_dicts_take_from_their_own_arrays():
  mesh = parallel.make_mesh()
  a, b = np.arange(10, dtype=np.int32), 100 + np.arange(7, dtype=np.int32)
  sampler = lambda k: {"a": np.array([k % 10, (k + 3) % 10]), "b": np.array([k % 7, 0])}
  data = feed.DeviceFeed({"a": a, "b": b}, sampler, mesh, left_out=3)
  gather = jax.jit(data.gather)
  singles = data.batches(0)
  first = next(singles)
  assert first.skipped == 3  # files left out when loading: reported once, by batch 0
  out = jax.device_get(gather(data.arrays, first.inputs))
  np.testing.assert_array_equal(out["a"], [0, 3])
  np.testing.assert_array_equal(out["b"], [100, 100])
  assert next(singles).skipped == 0
  # A run resumed later does not report them again.
  assert next(data.batches(4)).skipped == 0
  (block,) = list(data.batches(2, [3]))
  got = jax.device_get(gather(data.arrays, block.inputs))
  for i, k in enumerate(range(2, 5)):
    np.testing.assert_array_equal(got["a"][i], a[sampler(k)["a"]])


def test_in_order_reads_the_test_set_front_to_back():
  np.testing.assert_array_equal(feed.in_order(3)(2), [6, 7, 8])


def test_local_rows_split_a_global_batch_between_hosts():
  x = np.arange(12).reshape(2, 6)
  np.testing.assert_array_equal(feed.local_rows(x, 1, 1, 3), [[2, 3], [8, 9]])
  np.testing.assert_array_equal(feed.local_rows(x, 0), x)  # one process: all of it


def test_streamed_batches_and_blocks_arrive_in_order_with_their_skips():
  mesh = parallel.make_mesh()

  def loader(start):
    for k in range(start, 2**31):
      yield np.full((2, 3), k, np.uint8), k % 2

  data = feed.StreamedFeed(loader, mesh, prefetch=2)
  assert data.gather(data.arrays, "batch") == "batch"
  blocks = list(data.batches(3, [2, 1, 3]))
  assert [b.inputs.shape for b in blocks] == [(2, 2, 3), (1, 2, 3), (3, 2, 3)]
  assert [int(np.asarray(b.inputs)[0, 0, 0]) for b in blocks] == [3, 5, 6]
  assert [b.skipped for b in blocks] == [1, 1, 1]  # (3, 4), (5,), (6, 7, 8): odd ones skip
  assert blocks[0].inputs.sharding == feed.batch_sharding(mesh, 1)
  singles = data.batches(10)
  assert [int(np.asarray(next(singles).inputs)[0, 0]) for _ in range(3)] == [10, 11, 12]
  singles.close()  # stops the thread


def test_a_failing_loader_raises_in_the_training_thread():
  def loader(start):
    yield np.zeros((2,), np.uint8), 0
    raise OSError("disk gone")

  data = feed.StreamedFeed(loader, parallel.make_mesh())
  batches = data.batches(0)
  next(batches)
  with pytest.raises(OSError, match="disk gone"):
    next(batches)
