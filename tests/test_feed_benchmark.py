"""The feed benchmark's cases run on small sets (a guard that they work, not a timing)."""

import pytest

from benchmarks import feed as feed_benchmark
from experiments.configs import wgan as wgan_configs


def test_each_feed_case_runs(tmp_path):
  pytest.importorskip("lmdb")
  lmdb_path = str(tmp_path / "bedroom_train_lmdb")
  assert feed_benchmark.write_lmdb(lmdb_path, 6) > 1000  # bytes an image: real WebPs
  assert feed_benchmark.time_decode(lmdb_path, cores=1, batches=1) > 0
  images = feed_benchmark.prepared_set(str(tmp_path / "prepared"), 300, size=16, margin=8)
  assert len(images) == 300 and images.frame == (16, 24, 3)
  assert feed_benchmark.time_host(images, cores=1, batches=3) > 0
  config = wgan_configs.get_config("smoke")
  with config.unlocked():
    config.data.channels, config.data.margin = 3, 8
  device = feed_benchmark.time_device(images, config)
  assert 0 < device["gather_crop_s"] and 0 < device["share"] < 1
  r = feed_benchmark.device_row(device, cores=2)
  assert r["images_per_s"] > device["critic_images_per_s"] and r["cores_for_this_step"] < 1
