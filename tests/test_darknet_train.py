"""End-to-end checks of the Darknet system: CLI, resume, precision, real data, errors."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from conftest import needs_fashion_mnist, override
from experiments import darknet as darknet_cli
from experiments.configs import darknet as darknet_configs
from jaxgan import metrics, optim, parallel
from jaxgan.data.classification import ImageClassificationData
from jaxgan.train import darknet, runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**overrides):
  return override(darknet_configs.get_config("smoke"), **overrides)


def latest_state(workdir, config):
  run = runs.restore(workdir, "darknet", config=config)
  return run.state, run.step


def synthetic_data(n, size=8, channels=3, seed=0):
  """A test double for a data set: random images whose label is their brightest quadrant."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 255, (n, size, size, channels), dtype=np.uint8)
  h = size // 2
  quads = [images[:, :h, :h], images[:, :h, h:], images[:, h:, :h], images[:, h:, h:]]
  labels = np.argmax([q.reshape(n, -1).mean(1) for q in quads], axis=0).astype(np.int32)
  return ImageClassificationData(images, labels, (0.5,) * channels, (0.25,) * channels, 10)


def run_cli(args, mock_examples=None):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["darknet", *args])
  if mock_examples:
    with tfds.testing.mock_data(num_examples=mock_examples):
      darknet_cli.main(["darknet"])
  else:
    darknet_cli.main(["darknet"])


@needs_fashion_mnist
def test_cli_smoke_run_offline_then_eval(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  run_cli(["--config", "experiments/configs/darknet.py:smoke", "--workdir", workdir])
  records = metrics.read_metrics(workdir)
  assert [r["epoch"] for r in records] == [1, 2]
  assert all(np.isfinite(r["train_loss"]) and 0 <= r["test_accuracy"] <= 1 for r in records)
  assert records[-1]["step"] == 2 * (64 // 16)
  # The one-cycle tail ends near max_lr / (100 div); the momentum is back at 0.95.
  assert records[-1]["momentum"] == pytest.approx(0.95)
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tensorboard")))
  assert "final test accuracy" in capsys.readouterr().out
  # Evaluation of the saved checkpoint, with and without flip TTA, from the run's config.
  plain = darknet.evaluate_checkpoint(workdir)
  flipped = darknet.evaluate_checkpoint(workdir, tta=True)
  assert plain["step"] == records[-1]["step"]
  assert plain["test_loss"] == pytest.approx(records[-1]["test_loss"], rel=1e-5)
  assert flipped["test_loss"] != pytest.approx(plain["test_loss"], rel=1e-7)


def test_tfds_cifar10_run_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=64):
    record = darknet.train_and_evaluate(
        smoke_config(num_epochs=1, **{"data.source": "tfds", "data.name": "cifar10"}),
        str(tmp_path / "run"))
  assert record["step"] == 64 // 16 and np.isfinite(record["train_loss"])
  # Training and inference never import TensorFlow.
  assert "tensorflow" not in sys.modules


@needs_fashion_mnist
def test_killed_run_resumes_to_identical_parameters(tmp_path):
  config = smoke_config(num_epochs=3, pad=3)
  straight = str(tmp_path / "straight")
  darknet.train_and_evaluate(config, straight)

  interrupted = str(tmp_path / "interrupted")
  with config.unlocked():
    config.stop_after_epoch = 0  # as if killed after the first epoch's checkpoint
  first = darknet.train_and_evaluate(config, interrupted)
  assert first["epoch"] == 1
  with config.unlocked():
    config.stop_after_epoch = -1
  darknet.train_and_evaluate(config, interrupted)  # same command, same workdir: resumes

  a, step_a = latest_state(straight, config)
  b, step_b = latest_state(interrupted, config)
  assert step_a == step_b == int(a.step) == int(b.step) > 0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  epochs = [r["epoch"] for r in metrics.read_metrics(interrupted)]
  assert epochs == [1, 2, 3]


def test_fp16_loss_scale_halves_and_skips_on_overflow():
  data = synthetic_data(32, size=8)
  config = smoke_config(precision="fp16", initial_loss_scale=1e30, batch_size=16)
  task, _ = darknet.make_task(config, parallel.make_mesh(), data, data)
  state = task.init_state()
  before = jax.device_get(state.params)
  momentum_before = jax.device_get(state.opt_state.inner_state)
  batches = task.batches(0, state)
  # A 1e30 scale overflows fp16 in the backward pass: the step must be skipped.
  state, step_metrics = task.step(state, next(batches).inputs)
  assert float(step_metrics["skipped"]) == 1 and int(state.step) == 1
  assert float(state.loss_scale.scale) == pytest.approx(5e29)
  for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
    np.testing.assert_array_equal(x, y)
  # The momentum buffer did not move, but the one-cycle schedule did (as PyTorch AMP).
  for x, y in zip(jax.tree.leaves(momentum_before),
                  jax.tree.leaves(jax.device_get(state.opt_state.inner_state))):
    np.testing.assert_array_equal(x, y)
  assert int(state.opt_state.count) == 1
  # With a sane scale the step goes through and the scale stays.
  state = state.replace(loss_scale=state.loss_scale.replace(scale=jnp.float32(1024.0)))
  state, step_metrics = task.step(state, next(batches).inputs)
  assert float(step_metrics["skipped"]) == 0 and float(state.loss_scale.scale) == 1024.0
  assert int(state.opt_state.count) == 2
  changed = [not np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params)))]
  assert all(changed)


def test_loss_scale_grows_after_interval():
  from jaxgan.precision import LossScale
  scale = LossScale.create(8.0, growth_interval=3)
  for _ in range(2):
    scale = scale.update(jnp.bool_(True))
  assert float(scale.scale) == 8.0 and int(scale.good_steps) == 2
  scale = scale.update(jnp.bool_(True))
  assert float(scale.scale) == 16.0 and int(scale.good_steps) == 0
  assert float(scale.update(jnp.bool_(False)).scale) == 8.0


@needs_fashion_mnist
def test_short_real_fashion_mnist_run_learns(tmp_path):
  # 512 steps: BatchNorm's slow running averages (PyTorch momentum 0.01) need a few hundred.
  config = smoke_config(pad=3, batch_size=32, eval_batch_size=500, num_epochs=2, max_lr=0.2,
                        **{"data.max_images": 8192, "data.max_test_images": 1000,
                           "model.nf": 8})
  record = darknet.train_and_evaluate(config, str(tmp_path / "fm"))
  assert record["test_accuracy"] > 0.6  # chance is 0.1


def test_missing_data_sets_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
    darknet.train_and_evaluate(smoke_config(**{"data.data_dir": str(tmp_path)}),
                               str(tmp_path / "w1"))
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    darknet.train_and_evaluate(smoke_config(**{"data.source": "tfds", "data.name": "cifar10",
                                               "data.data_dir": str(tmp_path)}),
                               str(tmp_path / "w2"))


def test_bad_config_values_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match="--config.precision"):
    darknet.train_and_evaluate(smoke_config(precision="fp8"), str(tmp_path))
  with pytest.raises(ValueError, match="--config.data.source"):
    darknet.train_and_evaluate(smoke_config(**{"data.source": "imagenet"}), str(tmp_path))
  with pytest.raises(ValueError, match="--config.data.name=cifar10"):
    darknet.train_and_evaluate(smoke_config(**{"data.source": "tfds", "data.name": "mnist"}),
                               str(tmp_path))
  with pytest.raises(ValueError, match="unknown darknet variant"):
    darknet_configs.get_config("cifar100")


def test_unknown_config_key_on_the_command_line_fails_before_work(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.darknet", "--config",
       "experiments/configs/darknet.py:smoke", "--config.bach_size=8",
       "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "bach_size" in result.stderr
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def test_logged_learning_rate_and_momentum_are_those_the_step_trained_with():
  # fastai's iteration t (0, 1, 2, ...) trains with one_cycle(t); the step that makes it
  # must report exactly those values, not the previous step's.
  data = synthetic_data(32, size=8)
  config = smoke_config(batch_size=16, num_epochs=5)  # 10 steps: every phase is short
  task, _ = darknet.make_task(config, parallel.make_mesh(), data, data)
  lr_at, momentum_at = optim.one_cycle(2 * config.num_epochs, config.max_lr, config.div,
                                       config.pct, tuple(config.moms))
  state = task.init_state()
  batches = task.batches(0, state)
  logged = []
  for _ in range(4):
    state, step_metrics = task.step(state, next(batches).inputs)
    logged.append(jax.device_get((step_metrics["lr"], step_metrics["momentum"])))
  expected = [(lr_at(t), momentum_at(t)) for t in range(4)]
  np.testing.assert_allclose(np.asarray(logged), np.asarray(expected), rtol=1e-6)
  assert len({float(lr) for lr, _ in logged}) == 4  # the schedule moves every step here
