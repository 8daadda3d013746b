"""What a run survives: divergence, SIGTERM / Ctrl-C, kill -9, the wrong folder.

Each real-signal test starts a real training process, signals it once it has written a
checkpoint, then resumes in this process and compares the final state, leaf by leaf and
bit for bit, with a run never interrupted (same program, same inputs: bitwise equal).
"""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import needs_fashion_mnist, override
from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import checkpoint, parallel
from jaxgan.train import cyclegan, darknet, loop, runs, wgan

pytestmark = needs_fashion_mnist
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env():
  return dict(os.environ, PYTHONPATH=REPO,
              JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")


def checkpoints(workdir):
  folder = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def all_finite(tree) -> bool:
  return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
             if np.issubdtype(np.asarray(x).dtype, np.floating))


# ----------------------------------------------------------------------------- divergence

SYSTEMS = {
    "darknet": (darknet, darknet_configs, "smoke", {"max_lr": 1e6, "num_epochs": 6}),
    "wgan": (wgan, wgan_configs, "smoke", {"lr_g": float("inf"), "lr_d": float("inf")}),
    "cyclegan": (cyclegan, cyclegan_configs, "smoke", {"lr": float("inf")}),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_divergence_halts_with_a_clear_error_and_no_nonfinite_checkpoint(name, tmp_path):
  module, configs, variant, overrides = SYSTEMS[name]
  config = override(configs.get_config(variant), **overrides)
  workdir = str(tmp_path / name)
  with pytest.raises(loop.NonFiniteError, match="not finite by step .* diverged"):
    module.train_and_evaluate(config, workdir)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  for step in ckpt.all_steps():  # whatever was saved before the halt is finite
    state, _ = ckpt.restore(module.abstract_state(config, parallel.make_mesh()), step)
    assert all_finite(state), step
  ckpt.close()


def test_fp16_halts_when_every_step_overflows(tmp_path):
  # A loss scale that overflows and a limit of 2 skips in a row: the third halts the run.
  config = override(darknet_configs.get_config("smoke"), precision="fp16",
                    initial_loss_scale=1e30, max_skipped_in_a_row=2)
  with pytest.raises(loop.NonFiniteError, match="fp16 steps in a row overflowed"):
    darknet.train_and_evaluate(config, str(tmp_path / "fp16"))


def test_fp16_count_of_skips_in_a_row_survives_a_resume(tmp_path):
  # Every step overflows (4 a smoke epoch) and the limit is 6: a run never stopped halts
  # at step 7. Stopped after epoch 1 and resumed, it must halt there too, not count
  # from 0 again and finish.
  config = override(darknet_configs.get_config("smoke"), precision="fp16",
                    initial_loss_scale=1e30, max_skipped_in_a_row=6)
  workdir = str(tmp_path / "fp16")
  darknet.train_and_evaluate(override(config, stop_after_epoch=0), workdir)  # epochs count from 0
  with pytest.raises(loop.NonFiniteError, match="7 fp16 steps in a row overflowed by step 8"):
    darknet.train_and_evaluate(override(config, stop_after_epoch=-1), workdir)


# ----------------------------------------------------------------------------- signals

def test_signal_mid_epoch_logs_the_partial_epoch_and_checkpoints(tmp_path):
  # A stop between two epoch ends: the record has training numbers but no test pass,
  # which the Darknet's log line once required (a KeyError instead of a clean stop).
  config = darknet_configs.get_config("smoke")  # 4 steps an epoch
  train_data, test_data = darknet.load_data(config)
  task, evaluate = darknet.make_task(config, parallel.make_mesh(), train_data, test_data)
  spe = len(train_data) // config.batch_size
  signal_at = spe + 1  # in the second epoch; the loop sees it after the next step

  def send(state, step, record):  # pylint: disable=unused-argument
    if step == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "run")
  record = loop.train(
      task, config, workdir, num_steps=spe * config.num_epochs, log_every=spe,
      checkpoint_every=spe, stop_after=-1, desc="darknet",
      log_line=functools.partial(darknet.log_line, steps_per_epoch=spe),
      hooks=(loop.Every(spe, darknet.evaluation_hook(evaluate, config.target_accuracy)),
             loop.Every(1, send)))
  assert record["stopped_by"] == "SIGTERM" and record["step"] == signal_at + 1
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = json.loads(f.readlines()[-1])
  assert last["step"] == signal_at + 1 and "train_loss" in last and "test_loss" not in last
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == signal_at + 1
  ckpt.close()


# Long runs (they would take hours), so the signal always lands mid-training; each saves a
# checkpoint early. After the signal, the resumed run and the straight one both stop a
# few steps past the interrupted run's checkpoint.
LONG = {
    "darknet": ("experiments/configs/darknet.py:smoke", {"num_epochs": 2000}),
    "wgan": ("experiments/configs/wgan.py:smoke",
             {"num_gen_iters": 100000, "second_phase": False, "checkpoint_every": 3,
              "sample_every": 1000}),
    "cyclegan": ("experiments/configs/cyclegan.py:smoke",
                 {"n_epochs": 10000, "checkpoint_every": 3, "sample_every": 1000,
                  "log_every": 3}),
}
STOP_FIELD = {"darknet": "stop_after_epoch", "wgan": "stop_after_gen_iters",
              "cyclegan": "stop_after_step"}


def long_config(name):
  module, configs, variant, _ = SYSTEMS[name]
  return override(configs.get_config(variant), **LONG[name][1])


def start_and_signal(name, workdir, sig):
  """A real training process, signalled once it has written its first checkpoint."""
  config_file, fields = LONG[name]
  args = [sys.executable, "-m", f"experiments.{name}", "--config", config_file,
          "--workdir", workdir] + [f"--config.{k}={v}" for k, v in fields.items()]
  proc = subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not checkpoints(workdir):
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.time() < deadline, "no checkpoint within 300 s"
    time.sleep(0.2)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=300)
  return proc.returncode, stderr


def resume_and_compare(name, workdir, tmp_path):
  """Finishes the interrupted run a little past its checkpoint and compares it, bit for
  bit, with a run that was never interrupted."""
  module = SYSTEMS[name][0]
  saved = max(checkpoints(workdir))
  if name == "darknet":
    stop = saved // 4 + 1  # epochs of 4 steps: one more epoch
  else:
    stop = saved + 2
  config = override(long_config(name), **{STOP_FIELD[name]: stop})
  resumed = module.train_and_evaluate(config, workdir)
  straight = module.train_and_evaluate(config, str(tmp_path / "straight"))
  assert resumed["step"] == straight["step"] > saved
  ckpt_a = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt_b = checkpoint.Checkpointer(str(tmp_path / "straight" / "checkpoints"))
  target = module.abstract_state(config, parallel.make_mesh())
  a, meta_a = ckpt_a.restore(target)
  b, meta_b = ckpt_b.restore(target)
  ckpt_a.close()
  ckpt_b.close()
  assert meta_a["step"] == meta_b["step"] == resumed["step"]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_sigterm_checkpoints_and_the_same_command_resumes_exactly(name, tmp_path):
  workdir = str(tmp_path / "run")
  returncode, stderr = start_and_signal(name, workdir, signal.SIGTERM)
  assert returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert "Stopped by SIGTERM after step" in stderr and "Traceback" not in stderr
  resume_and_compare(name, workdir, tmp_path)


@pytest.mark.parametrize("name", ["wgan", "cyclegan"])
def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(name, tmp_path):
  workdir = str(tmp_path / "run")
  returncode, _ = start_and_signal(name, workdir, signal.SIGKILL)
  assert returncode == -signal.SIGKILL
  resume_and_compare(name, workdir, tmp_path)


# ----------------------------------------------------------------------------- wrong input

def test_user_errors_are_one_line_not_a_traceback(tmp_path):
  darknet_run = str(tmp_path / "darknet")
  darknet.train_and_evaluate(override(darknet_configs.get_config("smoke"), num_epochs=1),
                             darknet_run)
  result = subprocess.run([sys.executable, "-m", "experiments.sample", "--workdir",
                           darknet_run], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert "holds a Darknet run, not a WGAN run" in result.stderr
  assert "Traceback" not in result.stderr
  with pytest.raises(ValueError, match="holds a Darknet run, not a CycleGAN run"):
    runs.restore(darknet_run, "cyclegan")


def test_unwritable_workdir_fails_before_training(tmp_path):
  blocked = tmp_path / "file"
  blocked.write_text("not a folder")
  with pytest.raises(PermissionError, match="cannot write to --workdir"):
    darknet.train_and_evaluate(darknet_configs.get_config("smoke"), str(blocked / "run"))


def test_a_folder_of_unreadable_images_is_one_line_before_training(tmp_path):
  (tmp_path / "images").mkdir()
  for i in range(3):
    (tmp_path / "images" / f"{i}.png").write_bytes(b"not a png")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.wgan", "--config", "experiments/configs/wgan.py:smoke",
       "--config.data.source=folder", f"--config.data.path={tmp_path / 'images'}",
       "--config.data.channels=3", "--config.data.max_images=0",
       "--workdir", str(tmp_path / "run")],
      cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: None of the 3 images") and "--config.data.path" in last
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


# ----------------------------------------------------------------------------- one run per workdir

def test_a_second_run_in_a_busy_workdir_stops_naming_the_first(tmp_path):
  workdir = str(tmp_path / "run")
  config_file, fields = LONG["darknet"]
  args = [sys.executable, "-m", "experiments.darknet", "--config", config_file,
          "--workdir", workdir] + [f"--config.{k}={v}" for k, v in fields.items()]
  first = subprocess.Popen(args, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while not checkpoints(workdir):  # the first run is training
      assert first.poll() is None, first.communicate()[1][-3000:]
      assert time.time() < deadline, "no checkpoint within 300 s"
      time.sleep(0.2)
    second = subprocess.run(args, cwd=REPO, env=subprocess_env(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --workdir {workdir} is in use by another run: process "
                           f"{first.pid} on {socket.gethostname()}, started "), last
    assert first.poll() is None  # untouched: still training
  finally:
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
  assert first.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == sorted(set(steps))  # one writer: no interleaved records
  with open(os.path.join(workdir, "run.lock")) as f:
    assert f.read() == ""  # given back


def test_a_lock_left_by_a_dead_run_is_taken_over_and_one_from_another_host_is_not(
    tmp_path, caplog):
  from jaxgan.train import workdir as run_folder  # pylint: disable=g-import-not-at-top
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                        capture_output=True, text=True, check=True)
  lock = tmp_path / "run.lock"
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                              "started": "earlier", "command": "a killed run"}))
  with caplog.at_level("WARNING"):
    run_folder.hold(str(tmp_path))
  assert any("Taking over" in r.getMessage() and "a killed run" in r.getMessage()
             for r in caplog.records)
  assert json.loads(lock.read_text())["pid"] == os.getpid()
  run_folder.hold(str(tmp_path))  # this process holds it already: no-op
  run_folder.release(str(tmp_path))
  assert lock.read_text() == ""
  lock.write_text(json.dumps({"host": "another-node", "pid": 4242, "started": "earlier",
                              "command": "python -m experiments.wgan ..."}))
  with pytest.raises(run_folder.WorkdirInUse, match=rf"another host: process 4242 on "
                                                    rf"another-node.* delete {lock}"):
    run_folder.hold(str(tmp_path))
