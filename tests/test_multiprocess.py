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
import time

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import adam_noise_drift, needs_fashion_mnist, xla_flags_for
from experiments.configs import cyclegan as cyclegan_configs
from jaxgan import metrics
from jaxgan.train import runs as train_runs

pytestmark = needs_fashion_mnist
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, image_folder, processes, devices_per_process):
  """Starts the worker as ``processes`` processes; returns them, running."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]),
             XLA_FLAGS=xla_flags_for(devices_per_process),
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
  port = free_port()
  procs = []
  for i in range(processes):
    if processes > 1:
      env = dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                 JAX_NUM_PROCESSES=str(processes), JAX_PROCESS_ID=str(i))
    # A file, not a pipe: a process blocked on a full pipe would stall the others'
    # collectives while we wait on the first.
    log = open(f"{workdir}.{i}.log", "w")  # pylint: disable=consider-using-with
    procs.append((subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "multiprocess_worker.py"), workdir,
         image_folder], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
  return procs


def wait(procs, timeout_s=900):
  """Waits for every process. When one fails, or time runs out, stops the rest and
  reports every failed process's log, those that failed by themselves first (a peer's
  log then shows only the broken link)."""
  deadline = time.monotonic() + timeout_s
  try:
    while True:
      codes = [p.poll() for p, _ in procs]  # every process, no short cut
      if None not in codes or any(codes) or time.monotonic() > deadline:
        break
      time.sleep(0.5)
  finally:
    stopped = set()
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
        stopped.add(p.pid)
      log.close()
  failed = sorted((p.pid in stopped, log.name) for p, log in procs if p.returncode)
  tails = []
  for was_stopped, name in failed:
    with open(name) as f:
      tails.append(f"--- {os.path.basename(name)}{' (stopped)' if was_stopped else ''}\n"
                   f"{f.read()[-3000:]}")
  assert not failed, "\n".join(tails)


def restore(name, workdir):
  run = train_runs.restore(workdir, name)
  return jax.device_get(run.state), run.step


def image_folder(root):
  rng = np.random.default_rng(0)
  for split, n in (("trainA", 9), ("trainB", 7), ("testA", 2), ("testB", 2)):
    os.makedirs(root / split)
    for i in range(n):
      Image.fromarray(rng.integers(0, 256, (22, 22), np.uint8)).save(root / split / f"{i}.png")
  return str(root)


# The gradients are the same sums in another order: float32 rounding of ~1e-5 of their
# size. SGD turns that into lr·1e-5 per step (lr up to max_lr = 1.3, 4 steps: 5e-5).
# RMSProp and Adam normalise gradients, so a parameter whose gradient is zero in exact
# arithmetic can move by up to lr/sqrt(1 - decay) per step either way with RMSProp (10 lr;
# the WGAN's critic takes 3 + 2 steps) and by adam_noise_drift with Adam (the CycleGAN's 2
# steps). The bounds below are those, not one machine's rounding. For the RMSProp- and
# Adam-trained parameters they are ceilings on how far two runs can drift apart at all;
# what shows the training equal there is the losses' comparison (1e-4), step by step.
# Darknet's BatchNorm sums run over batch x pixels (12,544 terms a channel), where the
# order moves the result by ~1e-4 relative; SGD with momentum at lr up to 1.3 carries
# that into the BatchNorm parameters at up to ~1e-3 over 4 steps.
_CYCLEGAN = cyclegan_configs.get_config("smoke")
TOLERANCE = {"darknet": dict(rtol=1e-4, atol=2e-3),
             "wgan": dict(rtol=1e-4, atol=2 * 10 * 1e-4 * 5),
             "cyclegan": dict(rtol=1e-4, atol=2 * adam_noise_drift(
                 _CYCLEGAN.lr, _CYCLEGAN.adam_b1, _CYCLEGAN.adam_b2, steps=2) + 1e-6)}
LOSS = {"darknet": "train_loss", "wgan": "Loss_D", "cyclegan": "G_A"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  folder = image_folder(root / "data")
  # Both runs at once: the two processes spend much of their time waiting on each other's
  # collectives (gloo over TCP), time the single process can use.
  wait(launch(str(root / "one"), folder, processes=1, devices_per_process=4)
       + launch(str(root / "two"), folder, processes=2, devices_per_process=2))
  return str(root / "one"), str(root / "two")


@pytest.mark.parametrize("name", list(TOLERANCE))
def test_two_processes_train_like_one(name, runs):
  one, two = (os.path.join(r, name) for r in runs)
  (a, step_a), (b, step_b) = restore(name, one), restore(name, two)
  assert step_a == step_b > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOLERANCE[name])
  # One writer: every record once, and the same losses as the single process.
  rec_a, rec_b = metrics.read_metrics(one), metrics.read_metrics(two)
  assert [r["step"] for r in rec_a] == [r["step"] for r in rec_b]
  loss = LOSS[name]
  np.testing.assert_allclose([r[loss] for r in rec_a if loss in r],
                             [r[loss] for r in rec_b if loss in r], rtol=1e-4, atol=1e-5)
