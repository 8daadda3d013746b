"""Tests for jaxgan.data.folder: listing, decoding, corrupt files, LMDB, the grain loader."""

import io
import itertools
import logging
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxgan.data import folder


def _save(path, array, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)
  return str(path)


def _noise(h, w, c=3, seed=0):
  shape = (h, w) if c == 1 else (h, w, c)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _jpeg_bytes(array, quality=95):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


# ----------------------------------------------------------------- listing


def test_list_image_files_recursive_mixed_extensions(tmp_path):
  img = _noise(4, 4)
  expected = [
      _save(tmp_path / "a.JPG", img, format="JPEG"),
      _save(tmp_path / "b.png", img),
      _save(tmp_path / "sub" / "c.Jpeg", img, format="JPEG"),
      _save(tmp_path / "sub" / "deeper" / "d.webp", img),
      _save(tmp_path / "sub" / "e.bmp", img),
  ]
  (tmp_path / "notes.txt").write_text("not an image")
  (tmp_path / "sub" / "labels.csv").write_text("x")
  (tmp_path / "sub" / "jpg").mkdir()  # A folder named like an extension.
  assert folder.list_image_files(tmp_path) == sorted(expected)
  assert folder.list_image_files(tmp_path, recursive=False) == sorted(expected[:2])


def test_list_image_files_errors_name_path_and_fix(tmp_path):
  missing = tmp_path / "horse2zebra"
  with pytest.raises(FileNotFoundError) as e:
    folder.list_image_files(missing)
  assert str(missing) in str(e.value) and "download" in str(e.value)

  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("x")
  with pytest.raises(ValueError) as e:
    folder.list_image_files(tmp_path / "empty")
  message = str(e.value)
  assert str(tmp_path / "empty") in message
  assert "No image files" in message and "Point to the folder" in message


# ----------------------------------------------------------------- decoding


def _halves(h, w):
  """Left half red, right half blue (split at w // 2)."""
  a = np.zeros((h, w, 3), np.uint8)
  a[:, : w // 2, 0] = 255
  a[:, w // 2:, 2] = 255
  return a


@pytest.mark.parametrize("shape", [(30, 60), (60, 30), (16, 16), (7, 9)])
def test_load_image_shapes_rgb_and_gray(tmp_path, shape):
  path = _save(tmp_path / "x.png", _noise(*shape))
  for channels in (3, 1):
    out = folder.load_image(path, 12, channels=channels)
    assert out.shape == (12, 12, channels) and out.dtype == np.uint8


def test_load_image_centre_crops_landscape(tmp_path):
  # A 60x30 image, halves split at x=30: the centred 30x30 square (x 15..45)
  # is half red, half blue, so the 10x10 output is split at column 5.
  out = folder.load_image(_save(tmp_path / "h.png", _halves(30, 60)), 10)
  assert (out[:, :4, 0] > 240).all() and (out[:, :4, 2] < 15).all()
  assert (out[:, 6:, 2] > 240).all() and (out[:, 6:, 0] < 15).all()
  # Portrait: the central rows of a top-red/bottom-blue image.
  portrait = np.transpose(_halves(30, 60), (1, 0, 2)).copy()  # 60 high, 30 wide.
  out = folder.load_image(_save(tmp_path / "v.png", portrait), 10)
  assert (out[:4, :, 0] > 240).all() and (out[6:, :, 2] > 240).all()


def test_load_image_modes(tmp_path):
  gray = _save(tmp_path / "gray.png", _noise(20, 30, c=1))
  rgba = _save(tmp_path / "rgba.png", _noise(20, 30, c=4))
  pal_img = Image.fromarray(_noise(25, 20)).convert("P", palette=Image.Palette.ADAPTIVE)
  pal_img.info["transparency"] = 0
  pal = str(tmp_path / "pal.png")
  pal_img.save(pal, transparency=0)
  gif = str(tmp_path / "pal.gif")
  pal_img.save(gif)
  for path in (gray, rgba, pal, gif):
    assert folder.load_image(path, 8).shape == (8, 8, 3)
    assert folder.load_image(path, 8, channels=1).shape == (8, 8, 1)
  # A gray image read as RGB has three equal channels.
  rgb = folder.load_image(gray, 8)
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
  # Bytes work like paths.
  with open(rgba, "rb") as f:
    np.testing.assert_array_equal(folder.load_image(f.read(), 8), folder.load_image(rgba, 8))


def test_load_image_raises_on_truncated_and_garbage(tmp_path):
  data = _jpeg_bytes(_noise(64, 64))
  with pytest.raises(OSError):
    folder.load_image(data[: len(data) // 2], 16)
  buf = io.BytesIO()
  Image.fromarray(_noise(64, 64)).save(buf, format="PNG")
  with pytest.raises(OSError):
    folder.load_image(buf.getvalue()[: buf.tell() // 2], 16)
  with pytest.raises(OSError):
    folder.load_image(np.random.default_rng(0).bytes(500), 16)


# ----------------------------------------------------------------- sources


@pytest.fixture
def corrupt_folder(tmp_path):
  """a good, b garbage, c truncated JPEG, d good, e garbage (sorted order)."""
  root = tmp_path / "data"
  _save(root / "a.jpg", _noise(20, 24, seed=1), format="JPEG")
  _save(root / "d.jpg", _noise(24, 20, seed=2), format="JPEG")
  (root / "b.jpg").write_bytes(np.random.default_rng(3).bytes(300))
  (root / "c.jpg").write_bytes(_jpeg_bytes(_noise(40, 40, seed=4))[:400])
  (root / "e.jpg").write_bytes(b"\xff\xd8\xff" + np.random.default_rng(5).bytes(100))
  return root


def test_source_skips_corrupt_files(corrupt_folder, caplog):
  src = folder.ImageFolderSource(corrupt_folder, 8)
  assert len(src) == 5
  a = folder.load_image(corrupt_folder / "a.jpg", 8)
  d = folder.load_image(corrupt_folder / "d.jpg", 8)
  with caplog.at_level(logging.WARNING):
    items = [src[i] for i in range(5)]
  expected = [(a, 0), (d, 2), (d, 1), (d, 0), (a, 1)]  # e wraps round to a.
  for item, (image, skipped) in zip(items, expected):
    assert item["image"].shape == (8, 8, 3) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(item["image"], image)
    assert item["skipped"] == skipped and item["skipped"].dtype == np.int32
  logged = caplog.text
  for name in ("b.jpg", "c.jpg", "e.jpg"):
    assert str(corrupt_folder / name) in logged


def test_source_all_unreadable_raises(tmp_path):
  for i in range(3):
    (tmp_path / f"{i}.png").write_bytes(b"nope")
  src = folder.ImageFolderSource(tmp_path, 8)
  with pytest.raises(ValueError, match="None of the 3 images"):
    src[1]


def test_fraction_is_a_deterministic_sample():
  paths = [f"/nowhere/{i:03d}.jpg" for i in range(200)]  # Nothing is read.
  a = folder.ImageFolderSource(paths, 8, fraction=0.1, seed=0)
  b = folder.ImageFolderSource(paths, 8, fraction=0.1, seed=0)
  c = folder.ImageFolderSource(paths, 8, fraction=0.1, seed=1)
  assert len(a) == 20 and a.paths == b.paths and a.paths != c.paths
  assert set(a.paths) <= set(paths) and a.paths == sorted(a.paths)
  assert len(folder.ImageFolderSource(paths, 8, fraction=1e-6)) == 1
  with pytest.raises(ValueError):
    folder.ImageFolderSource(paths, 8, fraction=0.0)


# ----------------------------------------------------------------- LMDB


@pytest.fixture
def lmdb_db(tmp_path):
  lmdb = pytest.importorskip("lmdb")
  path = tmp_path / "bedroom_train_lmdb"
  values = {
      b"0a": _jpeg_bytes(_noise(30, 40, seed=0)),
      b"1b\x00": _jpeg_bytes(_noise(40, 30, seed=1)),  # Trailing NUL survives the cache.
      b"2c": b"corrupt",
      b"3d": _jpeg_bytes(_noise(32, 32, seed=3)),
  }
  env = lmdb.open(str(path), map_size=1 << 22)
  with env.begin(write=True) as txn:
    for k, v in values.items():
      txn.put(k, v)
  env.close()
  return path, values


def test_lmdb_source_reads_caches_and_pickles(lmdb_db, tmp_path):
  path, values = lmdb_db
  cache = tmp_path / "cache"
  src = folder.LmdbSource(path, 16, cache_dir=cache)
  assert len(src) == 4
  assert len(list(cache.glob("lmdb_keys_*.npy"))) == 1
  expected = folder.load_image(values[b"1b\x00"], 16)
  np.testing.assert_array_equal(src[1]["image"], expected)
  item = src[2]  # Corrupt value: replaced by the next one.
  assert item["image"].shape == (16, 16, 3) and item["skipped"] == 1
  np.testing.assert_array_equal(item["image"], folder.load_image(values[b"3d"], 16))

  clone = pickle.loads(pickle.dumps(src))
  assert clone._env is None
  for i in range(4):
    np.testing.assert_array_equal(clone[i]["image"], src[i]["image"])

  again = folder.LmdbSource(path, 16, channels=1, fraction=0.5, seed=0, cache_dir=cache)
  assert len(again) == 2 and again.keys_file == src.keys_file
  assert again[0]["image"].shape == (16, 16, 1)


def test_lmdb_source_missing_path_explains(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    folder.LmdbSource(tmp_path / "nope", 64, cache_dir=tmp_path)
  message = str(e.value)
  assert str(tmp_path / "nope") in message
  assert "bedroom_train_lmdb" in message and "pip install lmdb" in message


# ----------------------------------------------------------------- loader


class _IndexSource:
  """Item i is an image filled with i, so batches reveal the order."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((2, 2, 1), i, np.uint8), "skipped": np.int32(0)}


def _ids(batch):
  return batch["image"][:, 0, 0, 0].astype(int).tolist()


def _take(loader, k):
  return list(itertools.islice(iter(loader), k))


def test_loader_batches_real_images(corrupt_folder):
  src = folder.ImageFolderSource(corrupt_folder, 8)
  a = folder.load_image(corrupt_folder / "a.jpg", 8)
  # batch_size == len(src): each batch is exactly one epoch, i.e. every item once:
  # a, b->d (2 skipped), c->d (1), d, e->a (1).
  for b in _take(folder.make_loader(src, 5, seed=0), 2):
    assert b["image"].shape == (5, 8, 8, 3) and b["image"].dtype == np.uint8
    assert b["skipped"].shape == (5,) and b["skipped"].dtype == np.int32
    assert sorted(b["skipped"].tolist()) == [0, 0, 1, 1, 2]
    assert sum((im == a).all() for im in b["image"]) == 2


def test_loader_is_deterministic_and_resumable():
  src = _IndexSource(11)
  first = [_ids(b) for b in _take(folder.make_loader(src, 4, seed=3), 9)]
  again = [_ids(b) for b in _take(folder.make_loader(src, 4, seed=3), 9)]
  other = [_ids(b) for b in _take(folder.make_loader(src, 4, seed=4), 9)]
  assert first == again and first != other
  resumed = [_ids(b) for b in _take(folder.make_loader(src, 4, seed=3, start_batch=5), 4)]
  assert resumed == first[5:9]


def test_loader_epochs_are_fresh_permutations():
  n, batch = 7, 3  # Batches straddle epoch boundaries.
  flat = sum((_ids(b) for b in _take(folder.make_loader(_IndexSource(n), batch, seed=0), 7)), [])
  epochs = [flat[i:i + n] for i in range(0, 21, n)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert len({tuple(e) for e in epochs}) == 3


def test_loader_shards_tile_the_global_batch():
  src = _IndexSource(13)
  glob = [_ids(b) for b in _take(folder.make_loader(src, 8, seed=1, start_batch=2), 4)]
  for count in (2, 4):
    shards = [[_ids(b) for b in _take(folder.make_loader(
        src, 8, seed=1, start_batch=2, shard_index=i, shard_count=count), 4)]
              for i in range(count)]
    for k in range(4):
      assert sum((s[k] for s in shards), []) == glob[k]
      assert all(len(s[k]) == 8 // count for s in shards)
  with pytest.raises(ValueError, match="divisible"):
    folder.make_loader(src, 6, seed=0, shard_count=4)
  with pytest.raises(ValueError):
    folder.make_loader(src, 8, seed=0, shard_index=2, shard_count=2)


@pytest.mark.skipif(not os.environ.get("JAXGAN_SLOW_TESTS"),
                    reason="spawns a grain worker process (~10 s); set JAXGAN_SLOW_TESTS=1")
def test_loader_worker_processes_match_in_process(corrupt_folder):
  src = folder.ImageFolderSource(corrupt_folder, 8)
  ref = _take(folder.make_loader(src, 3, seed=0, start_batch=2), 4)
  it = iter(folder.make_loader(src, 3, seed=0, start_batch=2, num_workers=1))
  try:
    got = [{k: np.array(v) for k, v in b.items()} for b in itertools.islice(it, 4)]
  finally:
    it.close()
  for a, b in zip(ref, got):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["skipped"], b["skipped"])
