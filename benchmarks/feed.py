r"""How fast each path feeds the WGAN real images, beside what its step eats.

  python -m benchmarks.feed                       # every case, LSUN's shapes
  python -m benchmarks.feed --cases host,device --out feed.jsonl

Cases (the images are LSUN-like: smooth synthetic scenes, 256 px on the short side, WebP,
in an LMDB under a temporary folder):

  decode    the streaming path: `folder.rows_from` decoding and resizing to 64x80 with
            one thread a core, batch 128 (what training reads without a prepare).
  prepare   `experiments.prepare` over the same LMDB, one worker a core; the rate
            extrapolates to LSUN bedrooms' 3,033,042 images on 16 cores.
  host      a prepared set at 64x80x3 (--prepared_images of them, shards in the page
            cache) read by `prepared.host_loader` in batches of 128: no decoding.
  device    the gather and random crop inside the WGAN critic's compiled program (lsun
            config at --cpu_sizes-like widths on a CPU, the real one on a GPU), as a share
            of that program's time: the gather + crop alone, compiled and timed the same
            way, against the whole 5-step critic program.

Each row gives images/s, per core, and the cores it would need to keep up with this
machine's WGAN step (measured here, the critic images of one generator iteration) and with
one H200's (50,520 critic images/s at the lsun config, bf16: docs/gpu.md).
"""

import io
import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from benchmarks import common
from experiments import prepare as prepare_cli
from experiments.configs import wgan as wgan_configs
from jaxgan import config as config_lib, parallel
from jaxgan.data import augment, feed, folder, prepared
from jaxgan.train import wgan

flags.DEFINE_integer("images", 4096, "Images in the synthetic LMDB (decode, prepare).")
flags.DEFINE_integer("prepared_images", 60000, "Images in the prepared set (host, device).")
FLAGS = flags.FLAGS

H200_CRITIC_IMAGES_PER_S = 50520  # docs/gpu.md: the lsun WGAN iteration on one H200
LSUN_BEDROOMS = 3033042
CASES = ("decode", "prepare", "host", "device")


def lsun_like(n: int, seed: int = 0):
  """``n`` WebP-encoded scenes shaped like LSUN's: smooth shapes, 256 on the short side."""
  rng = np.random.default_rng(seed)
  for _ in range(n):
    coarse = rng.integers(0, 256, (6, 8, 3), np.uint8)
    width = int(rng.integers(256, 400))
    img = Image.fromarray(coarse).resize((width, 256), Image.Resampling.BICUBIC)
    pixels = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (256, width, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "WEBP", quality=80)
    yield out.getvalue()


def write_lmdb(path: str, n: int) -> int:
  import lmdb  # pylint: disable=g-import-not-at-top
  env = lmdb.open(path, map_size=1 << 32)
  nbytes = 0
  with env.begin(write=True) as txn:
    for i, value in enumerate(lsun_like(n)):
      txn.put(f"{i:08x}".encode(), value)
      nbytes += len(value)
  env.close()
  return nbytes // n


def lsun_config(path: str, **fields):
  return config_lib.override(wgan_configs.get_config("lsun"), **{
      "data.path": path, "data.num_workers": 0, "data.cache_dir": os.path.dirname(path),
      **fields})


def row(case: str, images_per_s: float, cores: int, step_demand: float, **extra) -> dict:
  return {"case": case, "images_per_s": images_per_s, "cores_used": cores,
          "per_core": images_per_s / cores,
          "cores_for_this_step": step_demand / (images_per_s / cores),
          "cores_for_h200": H200_CRITIC_IMAGES_PER_S / (images_per_s / cores), **extra}


def time_decode(lmdb_path: str, cores: int, batches: int = 6) -> float:
  config = lsun_config(lmdb_path)
  source = folder.split_source(config.data, 64, 0, "train", width=80)
  rows = folder.rows_from(source, 128, seed=0, num_threads=cores)(0)
  next(rows)  # threads started, first batch decoded
  start = time.perf_counter()
  for _ in range(batches):
    next(rows)
  rows.close()
  return batches * 128 / (time.perf_counter() - start)


def time_prepare(lmdb_path: str, out: str, cores: int) -> float:
  config = lsun_config(lmdb_path)
  start = time.perf_counter()
  index = prepare_cli.prepare(config, out, workers=cores, progress=False)
  seconds = time.perf_counter() - start
  return sum(p["count"] for p in index["parts"].values()) / seconds


class _Pixels:
  """A source of ready frames (no decoding), to write a large prepared set quickly."""

  def __init__(self, n: int, size: int = 64, width: int = 80, channels: int = 3):
    self.n, self.size, self.width, self.channels = n, size, width, channels
    self.pixels = np.random.default_rng(0).integers(0, 256, (997, size, width, channels),
                                                     np.uint8)

  def __len__(self):
    return self.n

  def load_or_none(self, row):
    return self.pixels[row % len(self.pixels)]

  def describe(self, row):
    return f"frame {row}"


def prepared_set(out: str, n: int, size: int = 64, margin: int = 16,
                 channels: int = 3) -> prepared.PreparedImages:
  """``n`` synthetic frames prepared as a run at ``size`` with ``margin`` would read them."""
  description = {"source": "synthetic", "source_kind": "folder", "size": size,
                 "margin": margin, "channels": channels, "heldout_fraction": 0.2,
                 "split_seed": 42}
  prepared.prepare({"train": _Pixels(n, size, size + margin, channels)}, out, description,
                   progress=False)
  return prepared.open_part(out, "train", size=size, margin=margin, channels=channels,
                            heldout_fraction=0.2, split_seed=42)


def device_config(on_gpu: bool):
  """The lsun config; on a CPU at the benchmark's --cpu_sizes (batch 64, fp32)."""
  fields = {} if on_gpu else {"batch_size": 64, "gen_batch_size": 64, "precision": "fp32"}
  return config_lib.override(wgan_configs.get_config("lsun"), **fields)


def time_host(images: prepared.PreparedImages, cores: int, batches: int = 2000) -> float:
  images.take(np.arange(len(images)))  # the shards into the page cache
  sampler = feed.StreamSampler(len(images), 128, seed=0)
  order = prepared.PreparedOrder(images, np.arange(len(images)), sampler)
  rows = prepared.host_loader(images, order, lambda x: x, num_threads=cores)(0)
  next(rows)
  start = time.perf_counter()
  for _ in range(batches):
    next(rows)
  rows.close()
  return batches * 128 / (time.perf_counter() - start)


def _timed(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def time_device(images: prepared.PreparedImages, config) -> dict:
  """The critic program's time with the device feed, and its gather + crop's alone."""
  mesh = parallel.make_mesh()
  n = min(len(images), 16384)
  arrays = jax.device_put(images.take(np.arange(n)), parallel.replicated(mesh))
  sampler = feed.StreamSampler(n, config.batch_size, seed=0)
  device_feed = feed.DeviceFeed(arrays, sampler, mesh, on_device=True)
  programs = wgan.make_programs(config, mesh, device_feed)
  state = wgan.initial_state(config, mesh)
  block = next(device_feed.batches(0, [config.critic_iters])).inputs

  def critic(s):
    return programs.critic(s, block)[0]

  state = critic(state)  # compiles; the state is donated, so keep what it returns
  jax.block_until_ready(state)
  start, repeats = time.perf_counter(), 3
  for _ in range(repeats):
    state = critic(state)
  jax.block_until_ready(state)
  critic_s = (time.perf_counter() - start) / repeats

  key = jax.random.PRNGKey(0)

  @jax.jit
  def gather_and_crop(arrays, indices, key):
    real = device_feed.gather(arrays, indices)  # (critic steps, batch, 64, 80, 3)
    return jax.vmap(lambda k, x: augment.random_crop(k, x, config.model.isize))(
        jax.random.split(key, real.shape[0]), real)

  gather_s = _timed(gather_and_crop, arrays, block, key, repeats=20)
  return {"critic_program_s": critic_s, "gather_crop_s": gather_s,
          "share": gather_s / critic_s,
          "critic_images_per_s": config.critic_iters * config.batch_size / critic_s}


def device_row(device: dict, cores: int) -> dict:
  """The device path's row: the rate its gather + crop alone would deliver."""
  return row("prepared, device (gather + crop)",
             device["critic_images_per_s"] / device["share"], cores,
             device["critic_images_per_s"], share_of_critic_program=device["share"],
             **device)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cases = common.value("cases", list(CASES))
  cores = len(os.sched_getaffinity(0))
  on_gpu = jax.default_backend() != "cpu"
  rows, tmp = [], tempfile.mkdtemp(prefix="jaxgan-feed-")
  try:
    images = None
    if "host" in cases or "device" in cases:
      images = prepared_set(os.path.join(tmp, "prepared"), FLAGS.prepared_images)
    # What this machine's WGAN step eats: the device case times the critic program.
    device = time_device(images, device_config(on_gpu)) if "device" in cases else None
    demand = device["critic_images_per_s"] if device else float("nan")
    if "decode" in cases or "prepare" in cases:
      lmdb_path = os.path.join(tmp, "bedroom_train_lmdb")
      mean_bytes = write_lmdb(lmdb_path, FLAGS.images)
      print(f"synthetic LMDB: {FLAGS.images} WebP images, {mean_bytes / 1e3:.1f} kB each")
    if "decode" in cases:
      rows.append(row("decode (streaming)", time_decode(lmdb_path, cores), cores, demand))
    if "prepare" in cases:
      rate = time_prepare(lmdb_path, os.path.join(tmp, "prepared_lsun"), cores)
      hours = LSUN_BEDROOMS / (rate / cores * 16) / 3600
      rows.append(row("prepare (once)", rate, cores, demand,
                      lsun_bedrooms_on_16_cores_h=hours))
    if "host" in cases:
      rows.append(row("prepared, host", time_host(images, cores), cores, demand))
    if "device" in cases:
      rows.append(device_row(device, cores))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print(f"\n{cores} cores, {jax.devices()[0].device_kind}; this machine's WGAN critic "
        f"eats {demand:,.0f} images/s; one H200 eats {H200_CRITIC_IMAGES_PER_S:,}")
  print(f"{'path':34s} {'images/s':>12s} {'per core':>10s} {'cores: here':>12s} "
        f"{'cores: H200':>12s}")
  for r in rows:
    print(f"{r['case']:34s} {r['images_per_s']:12,.0f} {r['per_core']:10,.0f} "
          f"{r['cores_for_this_step']:12.3f} {r['cores_for_h200']:12.2f}")
    if "lsun_bedrooms_on_16_cores_h" in r:
      print(f"{'':34s} LSUN bedrooms (3.03M) on 16 cores: "
            f"{r['lsun_bedrooms_on_16_cores_h']:.2f} h")
    if "share_of_critic_program" in r:
      print(f"{'':34s} gather + crop {r['gather_crop_s'] * 1e3:.2f} ms of a "
            f"{r['critic_program_s'] * 1e3:.1f} ms critic program: "
            f"{100 * r['share_of_critic_program']:.2f}%")
  if FLAGS.out:
    with open(FLAGS.out, "a") as f:
      for r in rows:
        f.write(json.dumps({**r, "cores": cores, "device": jax.devices()[0].device_kind})
                + "\n")


if __name__ == "__main__":
  app.run(main)
