"""The WGAN's real images: Fashion-MNIST framing, and LMDB/folder blocks streamed via grain."""

import io

import numpy as np
import pytest
from PIL import Image

from conftest import needs_fashion_mnist
from jaxgan import parallel
from jaxgan.data import classification
from experiments.configs import wgan as wgan_configs
from jaxgan.train import wgan


def data_config(**overrides):
  """The folder variant's data fields: no split, no margin, decoded in this process."""
  c = wgan_configs.get_config("folder").data.copy_and_resolve_references()
  with c.unlocked():
    c.update({"num_workers": 0, "heldout_fraction": 0.0, "margin": 0, **overrides})
  return c


def _png_bytes(seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


@pytest.fixture
def lsun_lmdb(tmp_path):
  import lmdb
  path = tmp_path / "bedroom_train_lmdb"
  env = lmdb.open(str(path), map_size=1 << 24)
  with env.begin(write=True) as txn:
    for i in range(9):
      txn.put(f"{i:04d}".encode(), _png_bytes(i))
    txn.put(b"0004x", b"not an image")  # sorts among the good ones
  env.close()
  return str(path)


def test_lsun_lmdb_blocks_skip_a_corrupt_entry_and_resume(lsun_lmdb, tmp_path):
  mesh = parallel.make_mesh()
  config = data_config(source="lsun", path=lsun_lmdb, cache_dir=str(tmp_path / "cache"))
  data = wgan.load_data(config, 16, 4, seed=0, mesh=mesh)
  assert (data.num_images, data.steps_per_epoch) == (10, 2)
  blocks = list(data.feed.batches(0, [2, 3]))  # 5 batches of 4 = 20 reads = 2 passes over 10
  assert [b.inputs.shape for b in blocks] == [(2, 4, 16, 16, 3), (3, 4, 16, 16, 3)]
  assert all(b.inputs.dtype == np.uint8 for b in blocks)
  assert sum(b.skipped for b in blocks) == 2  # the bad entry, once a pass
  # A fresh pipeline started at batch 2 continues with the same images.
  again = wgan.load_data(config, 16, 4, seed=0, mesh=mesh)
  (block,) = list(again.feed.batches(2, [3]))
  np.testing.assert_array_equal(np.asarray(block.inputs), np.asarray(blocks[1].inputs))


def test_worker_processes_deliver_the_same_blocks(tmp_path):
  root = tmp_path / "imgs"
  (root / "sub").mkdir(parents=True)
  for i in range(7):
    (root / ("sub" if i % 2 else "") / f"{i}.png").write_bytes(_png_bytes(i))
  mesh = parallel.make_mesh()
  out = []
  for workers in (0, 2):
    data = wgan.load_data(data_config(path=str(root), num_workers=workers), 16, 4,
                          seed=1, mesh=mesh)
    out.append([np.asarray(b.inputs) for b in data.feed.batches(1, [2, 1])])
  for a, b in zip(*out):
    np.testing.assert_array_equal(a, b)


def test_missing_lmdb_and_bad_settings_name_the_flag(tmp_path):
  mesh = parallel.make_mesh()
  with pytest.raises(FileNotFoundError, match="--config.data.path"):
    wgan.load_data(data_config(source="lsun", path=str(tmp_path / "no_lmdb")), 16, 4, 0,
                   mesh)
  with pytest.raises(ValueError, match="--config.data.fraction"):
    wgan.load_data(data_config(path=str(tmp_path), max_images=10), 16, 4, 0, mesh)
  with pytest.raises(ValueError, match="--config.data.channels=1"):
    wgan.load_data(data_config(source="fashion_mnist"), 32, 4, 0, mesh)


def test_fit_fashion_mnist_pads_from_32_up_and_shrinks_the_32_frame_below():
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  padded = classification.fit_fashion_mnist(images, 36)
  assert padded.shape == (2, 36, 36, 1) and padded.dtype == np.uint8
  assert padded[:, 4:32, 4:32].min() == 200 and padded[:, :4].max() == 0  # pixels untouched
  at_32 = classification.fit_fashion_mnist(images, 32)
  np.testing.assert_array_equal(at_32, padded[:, 2:34, 2:34])
  small = classification.fit_fashion_mnist(images, 16)
  assert small.shape == (2, 16, 16, 1)
  # The 32 frame shrunk: the object keeps 28/32 of the side, so the outer ring stays dark
  # (a resize of the bare 28×28 would fill the whole square).
  assert small[:, 3:13, 3:13].min() >= 195 and small[:, [0, 15]].max() < 20
  with pytest.raises(ValueError, match="larger than the 32×32 frame"):
    classification.fit_fashion_mnist(np.zeros((1, 40, 40, 1), np.uint8), 16)


@needs_fashion_mnist
def test_fashion_mnist_is_padded_to_32_and_resized_for_other_sizes():
  original = classification.load_fashion_mnist("train").images[:5]
  padded = classification.fashion_mnist_images(32, max_images=5)
  assert padded.shape == (5, 32, 32, 1) and padded.dtype == np.uint8
  np.testing.assert_array_equal(padded[:, 2:30, 2:30], original)
  assert padded[:, :2].max() == padded[:, 30:].max() == 0  # black border, like the background
  small = classification.fashion_mnist_images(16, max_images=5)
  assert small.shape == (5, 16, 16, 1)
  # A downscaled image keeps its overall brightness.
  assert abs(small.mean() - padded.mean()) < 3


def test_the_lesson_holds_out_a_fixed_fifth_and_crops_at_random_from_a_wider_frame(
    lsun_lmdb, tmp_path):
  from jaxgan.data import folder  # pylint: disable=g-import-not-at-top
  # fastai's from_csv without val_idxs: int(0.2 n) images held out. LSUN bedrooms: 18,957
  # loader batches of 128 an epoch in the lesson (the last one partial); jaxgan's epoch
  # is the 18,956 whole ones, the 66 left over carried into the next.
  train, heldout = folder.split_rows(3_033_042, 0.2, 42)
  assert (len(train), len(heldout)) == (2_426_434, 606_608)
  assert -(-len(train) // 128) == 18_957 and len(train) // 128 == 18_956
  assert not set(train.tolist()) & set(heldout.tolist())
  again, _ = folder.split_rows(3_033_042, 0.2, 42)
  np.testing.assert_array_equal(again, train)  # fixed by the seed

  config = data_config(source="lsun", path=lsun_lmdb, cache_dir=str(tmp_path / "cache"),
                       heldout_fraction=0.2, margin=4)  # 10 entries: 8 trained, 2 held out
  data = wgan.load_data(config, 16, 4, seed=0, mesh=parallel.make_mesh())
  assert (data.num_images, data.steps_per_epoch) == (8, 2)
  (block,) = list(data.feed.batches(0, [2]))
  assert block.inputs.shape == (2, 4, 16, 20, 3)  # stored 16 x (16 + margin)
  held = folder.split_source(config, 16, 0, "heldout")
  trained = folder.split_source(config, 16, 0, "train")
  assert len(held) == 2 and not set(held.indices.tolist()) & set(trained.indices.tolist())
