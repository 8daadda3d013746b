"""Unaligned A/B data: the order of pairs, the three sources, the two feeds agree."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from conftest import needs_fashion_mnist
from jaxgan.data import classification, unaligned


def write_images(folder, sizes, seed=0, corrupt=()):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i, (h, w) in enumerate(sizes):
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
        os.path.join(folder, f"img_{i:02d}.png"))
  for name in corrupt:
    with open(os.path.join(folder, name), "wb") as f:
      f.write(b"not an image at all")


def make_layout(root, n_a=5, n_b=3, test=True, corrupt_a=()):
  write_images(os.path.join(root, "trainA"), [(12, 10)] * n_a, seed=1, corrupt=corrupt_a)
  write_images(os.path.join(root, "trainB"), [(9, 14)] * n_b, seed=2)
  if test:
    write_images(os.path.join(root, "testA"), [(8, 8)] * 2, seed=3)
    write_images(os.path.join(root, "testB"), [(8, 8)] * 2, seed=4)
  return str(root)


def test_sampler_epoch_visits_every_index_and_is_a_pure_function_of_seed_and_step():
  sampler = unaligned.UnalignedSampler(num_a=3, num_b=7, batch_size=2, seed=5)
  assert sampler.epoch_size == 7
  # Items 0..6 are one epoch: a permutation of range(7), taken modulo |A| = 3.
  a = np.concatenate([sampler(k)["a"] for k in range(4)])[:7]
  assert sorted(np.bincount(a, minlength=3)) == [2, 2, 3]
  b = np.concatenate([sampler(k)["b"] for k in range(200)])
  assert b.min() == 0 and b.max() == 6
  assert np.all(np.abs(np.bincount(b) / len(b) - 1 / 7) < 0.05)  # uniform over B
  # Step 37 is the same whoever asks and whatever was asked before (resume needs it).
  fresh = unaligned.UnalignedSampler(num_a=3, num_b=7, batch_size=2, seed=5)
  for key in "ab":
    np.testing.assert_array_equal(fresh(37)[key], sampler(37)[key])
  other = unaligned.UnalignedSampler(num_a=3, num_b=7, batch_size=2, seed=6)
  assert not all(np.array_equal(*p) for p in zip(
      [other(k)["b"] for k in range(5)], [sampler(k)["b"] for k in range(5)]))
  # Each epoch has its own order.
  big = unaligned.UnalignedSampler(num_a=50, num_b=10, batch_size=50, seed=0)
  first, second = big(0)["a"], big(1)["a"]
  assert sorted(first) == sorted(second) == list(range(50))
  assert not np.array_equal(first, second)


def test_folder_layout_skips_and_counts_unreadable_files(tmp_path):
  root = make_layout(tmp_path / "data", corrupt_a=("broken.jpg",))
  domains = unaligned.folder_domains(root, load_size=8)
  assert len(domains.train_a) == 6 and len(domains.train_b) == 3
  images, skipped = unaligned.load_all(domains.train_a)
  assert images.shape == (5, 8, 8, 3) and images.dtype == np.uint8 and skipped == 1
  item = domains.test_b[0]
  assert item["image"].shape == (8, 8, 3)


def test_missing_folders_are_clear_errors(tmp_path):
  root = tmp_path / "data"
  write_images(root / "trainA", [(8, 8)])
  with pytest.raises(FileNotFoundError, match=r"trainB is missing"):
    unaligned.folder_domains(str(root), load_size=8)
  with pytest.raises(FileNotFoundError, match="--config.data.path"):
    unaligned.folder_domains(str(tmp_path / "nowhere"), load_size=8)
  # Without testA/testB the sample grids fall back to the training images.
  write_images(root / "trainB", [(8, 8)] * 2)
  domains = unaligned.folder_domains(str(root), load_size=8)
  assert domains.test_a is domains.train_a and domains.test_b is domains.train_b


def test_streamed_batches_equal_the_device_feed_gather(tmp_path):
  root = make_layout(tmp_path / "data", n_a=5, n_b=4)
  domains = unaligned.folder_domains(root, load_size=8)
  sampler = unaligned.UnalignedSampler(len(domains.train_a), len(domains.train_b), 2, 3)
  all_a, _ = unaligned.load_all(domains.train_a)
  all_b, _ = unaligned.load_all(domains.train_b)
  loader = unaligned.make_unaligned_loader(domains.train_a, domains.train_b, sampler,
                                           start_step=3, stop_step=7, num_threads=2)
  batches = list(loader)
  assert len(batches) == 4
  for step, batch in zip(range(3, 7), batches):
    idx = unaligned.local_indices(sampler, step)
    np.testing.assert_array_equal(batch["a"], all_a[idx["a"]])
    np.testing.assert_array_equal(batch["b"], all_b[idx["b"]])
    assert int(batch["skipped"]) == 0
  # A second host takes the second half of each global batch.
  half = unaligned.local_indices(sampler, 4, shard_index=1, shard_count=2)
  np.testing.assert_array_equal(half["a"], sampler(4)["a"][1:])


def test_tfds_cycle_gan_splits_resized_without_tensorflow():
  import sys
  with tfds.testing.mock_data(num_examples=3):
    domains = unaligned.tfds_domains("horse2zebra", load_size=12)
    assert [len(s) for s in (domains.train_a, domains.train_b, domains.test_a,
                             domains.test_b)] == [3, 3, 3, 3]
    images, skipped = unaligned.load_all(domains.train_b)
  assert images.shape == (3, 12, 12, 3) and skipped == 0 and domains.channels == 3
  assert "tensorflow" not in sys.modules


def test_missing_tfds_data_names_the_build_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build cycle_gan/horse2zebra"):
    unaligned.tfds_domains("horse2zebra", 16, data_dir=str(tmp_path))


def test_fashion_mnist_domains_share_the_wgan_adapter():
  # One way to bring 28×28 Fashion-MNIST to a size, for both GANs (test_wgan_data).
  assert unaligned.fit_fashion_mnist is classification.fit_fashion_mnist


@needs_fashion_mnist
def test_fashion_mnist_domains_come_from_disjoint_halves():
  from jaxgan.data.classification import load_fashion_mnist
  train = load_fashion_mnist("train")
  domains = unaligned.fashion_mnist_domains(7, 9, load_size=32)
  half = len(train) // 2
  assert len(domains.train_a) == int(np.sum(train.labels[:half] == 7))
  assert len(domains.train_b) == int(np.sum(train.labels[half:] == 9))
  first_a = train.images[:half][train.labels[:half] == 7][0]
  np.testing.assert_array_equal(domains.train_a[0]["image"][2:30, 2:30], first_a)
  first_b = train.images[half:][train.labels[half:] == 9][0]
  np.testing.assert_array_equal(domains.train_b[0]["image"][2:30, 2:30], first_b)
  assert domains.test_a[0]["image"].shape == (32, 32, 1) and domains.channels == 1
  with pytest.raises(ValueError, match="pick two classes"):
    unaligned.fashion_mnist_domains(3, 3, 32)
