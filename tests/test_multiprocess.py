"""Two processes with two CPU devices each train like one process with four.

The processes talk over the loopback address through jax.distributed (gloo collectives),
as hosts of a cluster would. Each feeds only its own rows of every global batch (device
data sets: its rows of the index arrays; streamed folders: its share of the files); only
process 0 writes metrics and images; both save and restore the orbax checkpoints.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import needs_fashion_mnist
from jaxgan import checkpoint, metrics, parallel
from jaxgan.train import cyclegan, darknet, wgan

pytestmark = needs_fashion_mnist
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(name, args, workdir, processes, devices_per_process):
  env = dict(os.environ, PYTHONPATH=REPO,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
  port = free_port()
  procs = []
  for i in range(processes):
    if processes > 1:
      env = dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                 JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", f"experiments.{name}", "--workdir", workdir, *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-4000:]


def restore(name, workdir):
  module = {"darknet": darknet, "wgan": wgan, "cyclegan": cyclegan}[name]
  config = module.load_run_config(workdir)
  mesh = parallel.make_mesh()
  if name == "darknet":
    target = darknet.Classifier(config, mesh, None, darknet.load_data(config)[1])
  elif name == "wgan":
    target = wgan.WGAN(config, mesh)
  else:
    target = cyclegan.CycleGAN(config, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, meta = ckpt.restore(target.abstract_state())
  ckpt.close()
  return jax.device_get(state), meta


def image_folder(root):
  rng = np.random.default_rng(0)
  for split, n in (("trainA", 9), ("trainB", 7), ("testA", 2), ("testB", 2)):
    os.makedirs(root / split)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (22, 22), np.uint8)).save(root / split / f"{i}.png")
  return str(root)


# The gradients are the same sums in another order: float32 rounding of ~1e-5 of their
# size. SGD turns that into lr·1e-5 per step (lr up to max_lr = 1.3, 8 steps: 1e-4);
# RMSProp and Adam normalise gradients, so a parameter whose gradient is zero in exact
# arithmetic can move by up to lr/sqrt(1 - decay) (RMSProp: 10 lr; Adam: lr) per step either
# way. The bounds below are those, not one machine's rounding.
CASES = {
    "darknet": (["--config", "experiments/configs/darknet.py:smoke",
                 "--config.num_epochs=2"], dict(rtol=1e-4, atol=8 * 1.3 * 1e-5)),
    "wgan": (["--config", "experiments/configs/wgan.py:smoke", "--config.num_gen_iters=2",
              "--config.second_phase=False"], dict(rtol=1e-4, atol=2 * 10 * 1e-4 * 3)),
    "cyclegan": (["--config", "experiments/configs/cyclegan.py:smoke",
                  "--config.batch_size=4", "--config.data.source=folder",
                  "--config.data.on_device=False", "--config.stop_after_step=3"],
                 dict(rtol=1e-4, atol=2 * 2e-4 * 3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_train_like_one(name, tmp_path):
  args, tolerance = CASES[name]
  if name == "cyclegan":
    args = args + [f"--config.data.path={image_folder(tmp_path / 'data')}"]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  launch(name, args, one, processes=1, devices_per_process=4)
  launch(name, args, two, processes=2, devices_per_process=2)
  (a, meta_a), (b, meta_b) = restore(name, one), restore(name, two)
  assert meta_a["step"] == meta_b["step"] > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)
  # One writer: every record once, and the same losses as the single process.
  rec_a, rec_b = metrics.read_metrics(one), metrics.read_metrics(two)
  assert [r["step"] for r in rec_a] == [r["step"] for r in rec_b]
  loss = {"darknet": "train_loss", "wgan": "Loss_D", "cyclegan": "G_A"}[name]
  np.testing.assert_allclose([r[loss] for r in rec_a if loss in r],
                             [r[loss] for r in rec_b if loss in r], rtol=1e-4, atol=1e-5)
