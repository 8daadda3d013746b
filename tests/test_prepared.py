"""Image sets decoded once (experiments.prepare, jaxgan.data.prepared): what is written,
resuming an interrupted prepare, the errors, and training that sees the decoding path's
batches exactly, from the devices and from the host."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import override
from experiments import prepare as prepare_cli
from experiments.configs import wgan as wgan_configs
from jaxgan import parallel
from jaxgan.data import feed, folder, prepared
from jaxgan.evaluation import runs as judged_runs
from jaxgan.train import runs, wgan


def _write_folder(root, n, size=20, broken=("b/broken.png",)):
  rng = np.random.default_rng(0)
  for i in range(n):
    sub = root / ("a" if i % 2 else "b")
    sub.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size + i % 3, size, 3), dtype=np.uint8)).save(
        sub / f"img_{i:02d}.png")
  for name in broken:
    (root / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def folder_config(root, **overrides):
  return override(wgan_configs.get_config("smoke"), **{
      "data.source": "folder", "data.path": str(root), "data.channels": 3,
      "data.max_images": 0, "second_phase": False, "long_critic_until": 0,
      "long_critic_every": 0, "data.margin": 8, **overrides})


@pytest.fixture
def image_folder(tmp_path):
  root = tmp_path / "images"
  _write_folder(root, 16)
  return root


def test_prepare_stores_each_split_at_the_runs_frame(image_folder, tmp_path):
  config = folder_config(image_folder)
  out = str(tmp_path / "prepared")
  index = prepare_cli.prepare(config, out, workers=0, shard_rows=4, progress=False)
  # 17 files: 20% (3) held out by the run's split, 14 to train on, one of them broken.
  assert index["parts"]["train"]["count"] == 14 and index["parts"]["heldout"]["count"] == 3
  assert index["parts"]["train"]["shards"] == [f"train-0000{i}.npy" for i in range(4)]
  assert (index["size"], index["margin"], index["channels"]) == (16, 8, 3)
  assert index["unreadable"]["count"] == 1
  assert index["unreadable"]["names"][0].endswith("broken.png")
  for part in ("train", "heldout"):
    source = folder.split_source(config.data, 16, config.seed, part, width=24)
    images = prepared.open_part(out, part, size=16, margin=8, channels=3,
                                heldout_fraction=0.2, split_seed=42)
    stored = images.take(np.arange(len(images)))
    assert stored.shape == (len(source), 16, 24, 3) and stored.dtype == np.uint8
    for row in range(len(source)):
      expected = source.load_or_none(row)
      if expected is None:
        assert images.unreadable[row] and not stored[row].any()
      else:
        np.testing.assert_array_equal(stored[row], expected)
  held = (tmp_path / "prepared" / "heldout.txt").read_text().split()
  assert held == wgan.heldout_items(config.data) and len(held) == 3


def test_an_interrupted_prepare_resumes_to_the_same_files(image_folder, tmp_path):
  config = folder_config(image_folder)
  whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
  prepare_cli.prepare(config, whole, workers=0, shard_rows=4, progress=False)
  prepare_cli.prepare(config, cut, workers=0, shard_rows=4, progress=False,
                      stop_after_shards=2)
  assert sorted(f for f in os.listdir(cut) if f.endswith(".npy")) == [
      "train-00000.npy", "train-00001.npy"]
  with pytest.raises(prepared.PreparedError, match="did not finish: rerun"):
    prepared.open_part(cut, "train", size=16, margin=8, channels=3,
                       heldout_fraction=0.2, split_seed=42)
  # A kill mid-shard leaves only a .partial file; a shard cut short is not taken as whole.
  with open(os.path.join(cut, "train-00002.npy.partial"), "wb") as f:
    f.write(b"half a shard")
  with open(os.path.join(cut, "train-00001.npy"), "r+b") as f:
    f.truncate(200)
  prepare_cli.prepare(config, cut, workers=0, shard_rows=4, progress=False)
  for name in sorted(os.listdir(whole)):
    if name.endswith((".npy", ".txt")) or name.startswith("train-"):
      with open(os.path.join(whole, name), "rb") as a, open(os.path.join(cut, name), "rb") as b:
        assert a.read() == b.read(), name
  assert not [f for f in os.listdir(cut) if f.endswith(".partial")]
  # Another shard size or frame into the same folder is refused, not mixed in.
  with pytest.raises(prepared.PreparedError, match="other settings.*shard_rows"):
    prepare_cli.prepare(config, cut, workers=0, shard_rows=5, progress=False)
  with pytest.raises(prepared.PreparedError, match="other settings.*size"):
    prepare_cli.prepare(override(config, **{"model.isize": 32}), cut, workers=0,
                        progress=False)


def test_prepare_decodes_an_lmdb_in_worker_processes(tmp_path):
  lmdb = pytest.importorskip("lmdb")
  path = tmp_path / "bedroom_train_lmdb"
  env = lmdb.open(str(path), map_size=1 << 24)
  rng = np.random.default_rng(1)
  with env.begin(write=True) as txn:
    for i in range(12):
      buffer = __import__("io").BytesIO()
      Image.fromarray(rng.integers(0, 256, (24, 30, 3), np.uint8)).save(buffer, "WEBP")
      txn.put(f"{i:04x}".encode(), buffer.getvalue() if i != 5 else b"corrupt")
  env.close()
  config = override(wgan_configs.get_config("smoke"), **{
      "data.source": "lsun", "data.path": str(path), "data.channels": 3,
      "data.max_images": 0, "data.cache_dir": str(tmp_path / "cache"), "data.margin": 8})
  serial = prepare_cli.prepare(config, str(tmp_path / "serial"), workers=0, shard_rows=5,
                               progress=False)
  parallel_ = prepare_cli.prepare(config, str(tmp_path / "parallel"), workers=2,
                                  shard_rows=5, progress=False)
  assert serial["unreadable"]["count"] == parallel_["unreadable"]["count"] == 1
  assert "0005" in serial["unreadable"]["names"][0]
  for part in ("train", "heldout"):
    a, b = (prepared.open_part(str(tmp_path / d), part, size=16, margin=8, channels=3,
                               heldout_fraction=0.2, split_seed=42)
            for d in ("serial", "parallel"))
    np.testing.assert_array_equal(a.take(np.arange(len(a))), b.take(np.arange(len(b))))


def _first_batches(config, mesh, blocks):
  """Real-image blocks a run's feed gives, as numpy, and the skips it reports."""
  data = wgan.load_data(config.data, config.model.isize, config.batch_size, config.seed,
                        mesh)
  got = []
  it = data.feed.batches(0, blocks)
  for batch in it:
    images = jax.jit(data.feed.gather)(data.feed.arrays, batch.inputs)
    got.append((np.asarray(images), batch.skipped))
  it.close()
  return got, type(data.feed)


def test_prepared_batches_are_the_decoding_paths(image_folder, tmp_path):
  out = str(tmp_path / "prepared")
  mesh = parallel.make_mesh()
  for fraction in (1.0, 0.7):
    config = folder_config(image_folder, **{"data.fraction": fraction})
    prepare_cli.prepare(config, out, workers=0, shard_rows=4, progress=False)
    blocks = [2, 3, 1, 2]  # 8 batches of 8 from 14 (or 10) images: several epochs
    streamed, kind = _first_batches(config, mesh, blocks)
    assert kind is feed.StreamedFeed
    assert sum(s for _, s in streamed) >= 1  # the broken file came up and was passed over
    for placement, expected in (("device", feed.DeviceFeed), ("host", feed.StreamedFeed)):
      got, kind = _first_batches(override(config, **{"data.prepared": out,
                                                     "data.placement": placement}),
                                 mesh, blocks)
      assert kind is expected
      for (a, skipped_a), (b, skipped_b) in zip(streamed, got):
        np.testing.assert_array_equal(a, b)
        assert skipped_a == skipped_b


def test_prepared_sets_that_do_not_fit_the_run_are_clear_errors(image_folder, tmp_path):
  out = str(tmp_path / "prepared")
  mesh = parallel.make_mesh()

  def load(**fields):
    c = folder_config(image_folder, **fields)
    return wgan.load_data(c.data, c.model.isize, c.batch_size, c.seed, mesh)

  with pytest.raises(prepared.PreparedError, match="not a prepared data set.*experiments.prepare"):
    load(**{"data.prepared": str(tmp_path)})
  prepare_cli.prepare(folder_config(image_folder), out, workers=0, shard_rows=4,
                      progress=False)
  with pytest.raises(prepared.PreparedError,
                     match="prepared for another run \\(size 16 there, 32 here.*experiments.prepare"):
    load(**{"data.prepared": out, "model.isize": 32})
  with pytest.raises(prepared.PreparedError, match="margin 8 there, 4 here"):
    load(**{"data.prepared": out, "data.margin": 4})
  with pytest.raises(prepared.PreparedError, match="split_seed 42 there, 1 here"):
    load(**{"data.prepared": out, "data.split_seed": 1})
  with open(os.path.join(out, "train-00002.npy"), "r+b") as f:
    f.truncate(1000)
  with pytest.raises(prepared.PreparedError, match="train-00002.npy is damaged.*rerun the prepare"):
    load(**{"data.prepared": out})
  with pytest.raises(ValueError, match="Fashion-MNIST is held in memory"):
    wgan.validate_config(override(wgan_configs.get_config("smoke"),
                                  **{"data.prepared": out}))


def test_wgan_trains_from_a_prepared_set_and_resumes_bit_for_bit(image_folder, tmp_path):
  config = folder_config(image_folder, num_gen_iters=4)
  out = str(tmp_path / "prepared")
  prepare_cli.prepare(config, out, workers=0, shard_rows=4, progress=False)
  streamed = str(tmp_path / "streamed")
  wgan.train_and_evaluate(config, streamed)
  expected = jax.tree.leaves(jax.device_get(runs.restore(streamed, "wgan").state))
  for placement in ("device", "host"):
    fields = {"num_gen_iters": 4, "data.prepared": out, "data.placement": placement}
    workdir = str(tmp_path / placement)
    wgan.train_and_evaluate(folder_config(image_folder, stop_after_gen_iters=2, **fields),
                            workdir)
    record = wgan.train_and_evaluate(folder_config(image_folder, **fields), workdir)
    assert record["step"] == 4
    got = jax.tree.leaves(jax.device_get(runs.restore(workdir, "wgan").state))
    for a, b in zip(expected, got):  # the same batches as decoding, resumed or not
      np.testing.assert_array_equal(a, b)
    with open(os.path.join(workdir, "heldout.json")) as f:
      assert json.load(f)["heldout"] == 3
  # The judge's real images come from the prepared set too, the centre of each frame: the
  # same images as judging the decoding path's run.
  config = folder_config(image_folder, **{"data.prepared": out})
  held, total = judged_runs.wgan_real_images(config, "heldout")
  source = folder.split_source(config.data, 16, config.seed, "heldout", width=24)
  assert total == 3 and held.shape == (3, 16, 16, 3)
  np.testing.assert_array_equal(held, np.stack([source[i]["image"][:, 4:20] for i in range(3)]))
  decoded, _ = judged_runs.wgan_real_images(folder_config(image_folder), "heldout")
  np.testing.assert_array_equal(held, decoded)
