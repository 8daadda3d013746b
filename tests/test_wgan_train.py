"""The WGAN system: the lesson's rules in numbers, then CLI, resume, data and sampling."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from PIL import Image

from conftest import needs_fashion_mnist, override, xla_flags_for
from experiments.configs import wgan as wgan_configs
from jaxgan import images, metrics, ops, optim, parallel
from jaxgan.data import augment, feed, folder
from jaxgan.train import runs, wgan

SMOKE = "experiments/configs/wgan.py:smoke"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**overrides):
  return override(wgan_configs.get_config("smoke"), **overrides)


def run_cli(module, args):
  # The entry points are imported here, after collection, so that whichever entry point
  # another test module imported first owns the shared --config/--workdir flags.
  flags.FLAGS.unparse_flags()
  flags.FLAGS([module.__name__, *args])
  try:
    module.main([module.__name__])
  finally:
    flags.FLAGS.unparse_flags()


def final_state(workdir):
  return jax.device_get(runs.restore(workdir, "wgan").state)


# ----------------------------------------------------------------------------- the lesson's rules

def test_critic_schedule_is_the_lessons():
  # The lesson's train(1, False): a 100-step burst at every 500th iteration of each pass,
  # 0 included, and no "< 25" warm-up.
  config = wgan_configs.get_config("lsun")
  counts = [wgan.critic_iterations(g, g, config) for g in (0, 1, 24, 25, 499, 500, 501, 1000)]
  assert counts == [100, 5, 5, 5, 5, 100, 5, 100]
  assert wgan.critic_iterations(0, 3000, config) == 100  # the second pass starts with one
  # The paper's: a warm-up while the run's generator iterations are < 25, once per run.
  paper = wgan_configs.get_config("lsun,paper")
  counts = [wgan.critic_iterations(g, g, paper) for g in (0, 24, 25, 499, 500, 501, 1000)]
  assert counts == [100, 100, 5, 5, 100, 5, 100]
  assert wgan.critic_iterations(0, 3001, paper) == 5  # not again in the second pass
  gp = wgan_configs.get_config("lsun,gp")  # WGAN-GP: 5 throughout
  assert {wgan.critic_iterations(g, g, gp) for g in range(1001)} == {5}


def test_lsun_is_the_lessons_run():
  c = wgan_configs.get_config("lsun")
  assert (c.batch_size, c.gen_batch_size, c.data.fraction) == (128, 64, 1.0)
  assert (c.lr_g, c.lr_d, c.clip_value, c.num_epochs, c.second_phase) == (
      1e-4, 1e-4, 0.01, 1.0, True)
  assert c.second_phase_lr_factor == 0.1 and c.critic_schedule == "lesson"


def test_schedule_lays_out_the_run_and_cuts_the_last_burst_at_the_epoch_end():
  # smoke ("lesson"): 3 critic steps at a pass's iteration 0 and every 4th, else 2.
  config = smoke_config(num_gen_iters=0, num_epochs=1.0)
  run = wgan.schedule(config, steps_per_epoch=10)
  first = [item for item in run if item.phase == 0]
  # 3, 2, 2, 2 = 9 batches, then a burst of 3 cut to the 1 batch left in the epoch.
  assert [item.critic_steps for item in first] == [3, 2, 2, 2, 1]
  # The stream position of each iteration's first real batch: what the run consumed.
  positions = np.cumsum([0] + [item.critic_steps for item in run])[:-1]
  assert list(positions[:5]) == [0, 3, 5, 7, 9]
  second = [item for item in run if item.phase == 1]
  assert [item.critic_steps for item in second] == [3, 2, 2, 2, 1]
  assert second[0].phase_iter == 0 and positions[len(first)] == 10
  assert len(wgan.schedule(config, steps_per_epoch=9)) == 2 * 4
  assert wgan.phase_lr_factors(config) == [1.0, 0.1]


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(4, 4, 2)).astype(np.float32)
  real, fake = (rng.normal(size=(3, 4, 4, 2)).astype(np.float32) for _ in range(2))
  eps = rng.uniform(size=(3, 1, 1, 1)).astype(np.float32)
  linear = lambda x: jnp.sum(x * w, axis=(1, 2, 3))
  # The gradient of a linear critic is w wherever it is taken: penalty = 10 (|w| - 1)^2.
  expected = 10.0 * (np.linalg.norm(w) - 1.0) ** 2
  assert float(wgan.gradient_penalty(linear, real, fake, eps, 10.0)) == pytest.approx(
      expected, rel=1e-5)
  unit = lambda x: jnp.sum(x * (w / np.linalg.norm(w)), axis=(1, 2, 3))
  assert float(wgan.gradient_penalty(unit, real, fake, eps, 10.0)) == pytest.approx(0, abs=1e-8)


def test_gradient_penalty_is_taken_at_the_interpolates():
  rng = np.random.default_rng(1)
  real, fake = (rng.normal(size=(5, 3, 3, 1)).astype(np.float32) for _ in range(2))
  eps = rng.uniform(size=(5, 1, 1, 1)).astype(np.float32)
  # D(x) = |x|^2 / 2 has gradient x: the norms are those of the interpolates themselves.
  quadratic = lambda x: 0.5 * jnp.sum(x * x, axis=(1, 2, 3))
  x_hat = eps * real + (1 - eps) * fake
  norms = np.sqrt((x_hat ** 2).sum(axis=(1, 2, 3)))
  expected = 10.0 * np.mean((norms - 1.0) ** 2)
  assert float(wgan.gradient_penalty(quadratic, real, fake, eps, 10.0)) == pytest.approx(
      expected, rel=1e-5)


def _random_block(config, mesh, n, seed=0, width_margin=0):
  """A block of n real batches of decoded images, as a streamed feed delivers them."""
  isize = config.model.isize
  shape = (n, config.batch_size, isize, isize + width_margin, config.data.channels)
  block = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
  return jax.device_put(block, feed.batch_sharding(mesh, batch_axis=1))


def _iteration(programs, state, block):
  """One generator iteration (of the first phase) on a block of decoded images."""
  item = wgan.GenIteration(phase=0, phase_iter=1, critic_steps=block.shape[0])
  return wgan.iteration(state, (item, block), programs=programs, phase_lr_factors=[1.0])


def test_every_critic_step_clips_first_as_the_lesson_does():
  config = smoke_config()
  mesh = parallel.make_mesh()
  programs = wgan.make_programs(config, mesh)
  state = wgan.initial_state(config, mesh)
  # Start far outside the ball: every weight (BatchNorm scales included) is 50x too big.
  state = state.replace(critic=state.critic.replace(
      params=jax.tree.map(lambda p: 50.0 * p + 1.0, state.critic.params)))
  c, lr = config.clip_value, config.lr_d
  state, numbers = _iteration(programs, state, _random_block(config, mesh, config.critic_iters))
  # Inside the scan: each critic step computed its loss with weights clamped to [-c, c]
  # (and these saturate at c, since every weight started outside).
  assert float(numbers["critic_weight_max"]) == np.float32(c)
  # After the last step: the lesson clamps *before* an update, so the weights may sit past
  # c by one update, which PyTorch's RMSProp bounds by lr/sqrt(1 - 0.99) = 10 lr.
  after = max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(state.critic.params))
  assert c < after <= c + 10 * lr * (1 + 1e-5)
  assert int(state.data_position) == config.critic_iters and int(state.total_gen_iters) == 1


def test_a_block_stored_wider_is_cropped_at_random_per_image_inside_the_critic_steps():
  # LSUN and folders are stored isize x (isize + margin); each critic step takes a random
  # isize x isize window of each real image from its batch's key: the same iteration as
  # on those windows cut beforehand, and another window for each image.
  config = smoke_config()
  mesh = parallel.make_mesh()
  wide = _random_block(config, mesh, config.critic_iters, width_margin=4)
  state = wgan.initial_state(config, mesh)
  critic_key = jax.random.fold_in(state.rng, 1)
  windows = jnp.stack([augment.random_crop(
      jax.random.fold_in(jax.random.fold_in(critic_key, i), 0xC409), wide[i], 16)
                       for i in range(config.critic_iters)])
  offsets = {int(np.argmax([np.array_equal(np.asarray(w[j]), np.asarray(wide[i, j, :, x:x + 16]))
                            for x in range(5)]))
             for i, w in enumerate(windows) for j in range(config.batch_size)}
  assert len(offsets) > 1  # not one shift for all
  results = []
  for block in (wide, jax.device_put(windows, feed.batch_sharding(mesh, 1))):
    programs = wgan.make_programs(config, mesh)
    results.append(jax.device_get(_iteration(programs, wgan.initial_state(config, mesh),
                                             block)))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_array_equal(a, b)


def test_wgan_gp_penalises_instead_of_clipping():
  config = wgan_configs.get_config("smoke,gp")
  mesh = parallel.make_mesh()
  programs = wgan.make_programs(config, mesh)
  state = wgan.initial_state(config, mesh)
  assert not state.critic.batch_stats  # LayerNorm critic: nothing couples the examples
  big = jax.tree.map(lambda p: 50.0 * p, state.critic.params)
  state = state.replace(critic=state.critic.replace(params=big))
  big = jax.device_get(big)  # the call below donates the state's buffers
  state, numbers = _iteration(programs, state, _random_block(config, mesh, config.critic_iters))
  assert "critic_weight_max" not in numbers
  assert float(numbers["gradient_penalty"]) > 0
  # No clamping: the weights moved by Adam steps of about lr each, and stayed large.
  for before, after in zip(jax.tree.leaves(big), jax.tree.leaves(state.critic.params)):
    assert np.max(np.abs(np.asarray(after) - before)) < 3 * config.lr_d * 5
  assert max(float(jnp.max(jnp.abs(p))) for p in jax.tree.leaves(state.critic.params)) > 1


def test_critic_scan_keeps_convolution_gradients_in_eigens_layout():
  # The cause of XLA:CPU's slow critic scan: gradient convolutions inside a loop body stay
  # in layouts its Eigen kernels cannot run (XLA canonicalises only the entry
  # computation). jaxgan.ops writes them in Eigen's layout, so the rolled scan runs as fast
  # as an unrolled one and jaxgan needs no unrolling knob. Without the routing (lax) the
  # census finds such convolutions, so this test can tell the two apart.
  config = smoke_config()
  mesh = parallel.make_mesh()
  census = {}
  for formulation in ("lax", None):
    critic = wgan.make_programs(config, mesh).critic  # a fresh jit: a fresh trace
    state = wgan.initial_state(config, mesh)
    with ops.force(formulation):
      lowered = critic.jitted.lower(state, critic.arrays,
                                    _random_block(config, mesh, config.critic_iters))
      census[formulation] = ops.conv_census(lowered.compile().as_text())["loop"]
  assert census["lax"][1] > 0  # (all, not in Eigen's layout) in the loop body
  assert census[None][0] > 0 and census[None][1] == 0


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """The smoke config through the command line: 2 phases of 3 generator iterations."""
  from experiments import wgan as wgan_cli
  workdir = str(tmp_path_factory.mktemp("wgan") / "run")
  run_cli(wgan_cli, ["--config", SMOKE, "--workdir", workdir])
  return workdir


@needs_fashion_mnist
def test_cli_smoke_run_writes_galleries_metrics_and_checkpoints(smoke_run):
  gallery = os.path.join(smoke_run, "samples", "gen_000006.png")
  with Image.open(gallery) as im:  # 8 x 8 tiles of 16 px with 2 px padding, grayscale
    assert im.size == (2 + 8 * 18, 2 + 8 * 18) and im.mode == "L"
  assert os.path.exists(os.path.join(smoke_run, "samples", "gen_000004.png"))
  records = metrics.read_metrics(smoke_run)
  records = [r for r in records if "Loss_D" in r]  # galleries have records of their own
  # Logged every 2 generator iterations.
  assert [r["step"] for r in records] == [2, 4, 6]
  assert [r["phase"] for r in records] == [0, 1, 1]
  # 3 critic steps at each pass's first iteration, else 2: 3+2+2, twice.
  assert [r["real_batches"] for r in records] == [5, 10, 14]
  assert [r["lr_g"] for r in records] == pytest.approx([1e-4, 1e-5, 1e-5])
  for r in records:
    assert r["wasserstein_estimate"] == -r["Loss_D"]
    assert r["Loss_D"] == pytest.approx(r["D_real"] - r["D_fake"], abs=1e-6)
    assert r["critic_weight_max"] == pytest.approx(0.01)
    assert np.isfinite(r["Loss_G"]) and r["skipped_images"] == 0
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(smoke_run, "tensorboard")))
  state = final_state(smoke_run)
  assert (int(state.total_gen_iters), int(state.data_position), int(state.phase)) == (6, 14, 1)
  hyper = state.critic.opt_state.hyperparams
  assert float(hyper["learning_rate"]) == pytest.approx(1e-5)


@needs_fashion_mnist
def test_interrupted_run_resumes_to_identical_state(smoke_run, tmp_path):
  workdir = str(tmp_path / "interrupted")
  # Killed at the end of phase 1 (before the lr/10 switch), then inside phase 2.
  for stop in (3, 5):
    record = wgan.train_and_evaluate(smoke_config(stop_after_gen_iters=stop), workdir)
    assert record["step"] == stop
  wgan.train_and_evaluate(smoke_config(), workdir)  # the same command finishes the run

  straight, resumed = final_state(smoke_run), final_state(workdir)
  leaves = jax.tree.leaves(straight)
  assert len(leaves) > 20  # both nets, both optimizers, batch stats, counters, RNG, noise
  for a, b in zip(leaves, jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  with open(os.path.join(smoke_run, "samples", "gen_000006.png"), "rb") as f:
    expected_png = f.read()
  with open(os.path.join(workdir, "samples", "gen_000006.png"), "rb") as f:
    assert f.read() == expected_png  # the fixed noise survived the restarts too
  assert [r["step"] for r in metrics.read_metrics(workdir) if "Loss_D" in r] == [2, 3, 4, 5, 6]


@needs_fashion_mnist
def test_sample_function_and_cli(smoke_run, tmp_path):
  from experiments import sample as sample_cli
  fakes = wgan.sample(smoke_run, num=10, seed=3)
  assert fakes.shape == (10, 16, 16, 1) and fakes.dtype == np.uint8
  np.testing.assert_array_equal(fakes, wgan.sample(smoke_run, num=10, seed=3))
  assert not np.array_equal(fakes, wgan.sample(smoke_run, num=10, seed=4))

  out, single = str(tmp_path / "grid.png"), str(tmp_path / "single")
  run_cli(sample_cli, ["--workdir", smoke_run, "--num", "10", "--seed", "3", "--out", out,
                       "--folder", single])
  with Image.open(out) as im:  # 4 per row (ceil(sqrt(10))), 3 rows
    assert im.size == (2 + 4 * 18, 2 + 3 * 18)
    np.testing.assert_array_equal(np.asarray(im), images.make_grid(fakes, ncol=4)[..., 0])
  assert len(os.listdir(single)) == 10
  with pytest.raises(FileNotFoundError, match="WGAN run"):
    wgan.sample(str(tmp_path), num=4)


def _write_folder(root, n, size=20):
  rng = np.random.default_rng(0)
  for i in range(n):
    sub = root / ("a" if i % 2 else "b")  # searched recursively
    sub.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        sub / f"img_{i:02d}.png")


def test_folder_with_a_corrupt_file_trains_and_reports_the_skips(tmp_path):
  root = tmp_path / "images"
  _write_folder(root, 12)
  (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
  config = smoke_config(**{
      "data.source": "folder", "data.path": str(root), "data.channels": 3,
      "data.max_images": 0, "second_phase": False, "long_critic_until": 0,
      "long_critic_every": 0})
  record = wgan.train_and_evaluate(config, str(tmp_path / "run"))
  # 3 generator iterations x 2 real batches of 8 = 48 reads from 13 files: the broken one
  # comes up once per pass. Replaying the loader gives the exact count.
  assert record["real_batches"] == 6
  source = folder.split_source(config.data, 16, config.seed, "train")  # 80% of the files
  assert len(source) == 13 - int(0.2 * 13)
  replay = folder.make_loader(source, 8, seed=config.seed)
  expected = sum(int(b["skipped"].sum()) for b, _ in zip(replay, range(6)))
  assert expected >= 3
  last = metrics.read_metrics(str(tmp_path / "run"))[-1]
  assert last["skipped_images"] == record["skipped_images"] == expected
  with Image.open(record["gallery"]) as im:
    assert im.size == (146, 146) and im.mode == "RGB"
  # The fifth of the files held out for evaluation is recorded with the run.
  with open(tmp_path / "run" / "heldout.json") as f:
    assert json.load(f)["heldout"] == 2
  held = (tmp_path / "run" / "heldout.txt").read_text().split()
  assert len(held) == 2 and all((root / name).exists() for name in held)


# ----------------------------------------------------------------------------- errors

def test_missing_or_empty_folder_is_a_clear_error_before_training(tmp_path):
  missing = str(tmp_path / "nowhere")
  config = smoke_config(**{"data.source": "folder", "data.path": missing,
                           "data.channels": 3, "data.max_images": 0})
  with pytest.raises(FileNotFoundError, match="--config.data.path") as e:
    wgan.train_and_evaluate(config, str(tmp_path / "w1"))
  assert missing in str(e.value)
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("no images here")
  with config.unlocked():
    config.data.path = str(tmp_path / "empty")
  with pytest.raises(ValueError, match="No image files"):
    wgan.train_and_evaluate(config, str(tmp_path / "w2"))
  assert not os.path.exists(tmp_path / "w1" / "checkpoints")


def test_bad_config_values_are_clear_errors(tmp_path):
  cases = [
      ({"model.isize": 50}, "--config.model.isize=32 or 64"),
      ({"model.isize": 48}, "--config.model.isize=32 or 64"),
      ({"loss": "wgan-gp", "optimizer": "adam"}, "--config.model.critic_norm=layer"),
      ({"precision": "fp16"}, "--config.precision=bf16"),
      ({"loss": "lsgan"}, "--config.loss"),
      ({"model.spectral_norm": True}, "--config.model.critic_norm=none"),
      ({"critic_schedule": "wgan"}, "--config.critic_schedule"),
      ({"data.source": "folder", "data.max_images": 0}, "--config.data.path"),
      ({"num_gen_iters": 0, "num_epochs": 0.0}, "--config.num_epochs"),
  ]
  for overrides, fix in cases:
    with pytest.raises(ValueError, match=fix.replace(".", r"\.")):
      wgan.train_and_evaluate(smoke_config(**overrides), str(tmp_path))
  with pytest.raises(ValueError, match="unknown wgan variant"):
    wgan_configs.get_config("celeba")
  assert not os.path.exists(tmp_path / "checkpoints")


def test_configs_are_locked_and_unknown_keys_fail_on_the_command_line(tmp_path):
  for variant in ("lsun", "folder", "fashion_mnist", "smoke", "lsun,gp", "lsun,paper"):
    config = wgan_configs.get_config(variant)
    wgan.validate_config(config)
    with pytest.raises(AttributeError):
      config.bach_size = 8
  with pytest.raises(flags.Error, match="bach_size"):
    flags.FLAGS.unparse_flags()
    from experiments import wgan as wgan_cli  # noqa: F401  (defines --config)
    flags.FLAGS(["wgan", "--config", SMOKE, "--config.bach_size=8", "--workdir",
                 str(tmp_path)])
  flags.FLAGS.unparse_flags()


PARALLEL = textwrap.dedent("""
    import jax, numpy as np
    from jaxgan import parallel
    from jaxgan.train import wgan
    from test_wgan_train import smoke_config, _iteration, _random_block

    assert jax.device_count() == 2
    config = smoke_config()

    def train(devices):
      mesh = parallel.make_mesh(devices)
      programs = wgan.make_programs(config, mesh)
      state, block = wgan.initial_state(config, mesh), _random_block(config, mesh, 3)
      for _ in range(2):
        state, numbers = _iteration(programs, state, block)
      return block, jax.device_get((state, numbers))

    _, one = train(jax.devices()[:1])
    block, two = train(jax.devices())
    # The same sums in another order. RMSProp divides by the gradient's running RMS, so a
    # parameter whose gradient is rounding noise can step by up to lr/sqrt(1 - 0.99) =
    # 10 lr either way: that, per critic or generator step (2 x 3 + 2), bounds the rest.
    atol = 2 * 10 * config.lr_d * (2 * 3 + 2)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=atol)
    # The block of real batches is split along its batch axis: 4 of the 8 per device.
    assert block.sharding.shard_shape(block.shape) == (3, 4, 16, 16, 1)
    print("PARALLEL-OK")
""")


def test_two_devices_train_like_one():
  env = dict(os.environ, XLA_FLAGS=xla_flags_for(2),
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
  result = subprocess.run([sys.executable, "-c", PARALLEL], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "PARALLEL-OK" in result.stdout


# ----------------------------------------------------------------------------- averaged generator

def test_ema_warms_up_then_settles_at_its_decay():
  average, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
  for step, decay_t in ((0, 0.1), (1, 2 / 11), (88, 0.9), (5000, 0.9)):
    got = optim.ema_update(average, params, 0.9, step)["w"]
    np.testing.assert_allclose(got, 1 - decay_t, rtol=1e-6)  # decay_t * 0 + (1 - decay_t) * 1


def test_the_average_follows_every_generator_update_and_resumes_bit_for_bit(tmp_path):
  config = smoke_config(ema_decay=0.9)
  mesh = parallel.make_mesh()
  programs = wgan.make_programs(config, mesh)
  state = wgan.initial_state(config, mesh)
  expected = jax.device_get(state.generator.params)
  np.testing.assert_array_equal(jax.tree.leaves(expected)[0],
                                jax.device_get(jax.tree.leaves(state.generator_ema)[0]))
  for t in range(3):
    state, _ = _iteration(programs, state, _random_block(config, mesh, 2, seed=t))
    decay_t = min(0.9, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, p: decay_t * e + (1 - decay_t) * p, expected,
                            jax.device_get(state.generator.params))
  for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(
      state.generator_ema))):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(expected)[0],
                         jax.device_get(jax.tree.leaves(state.generator.params)[0]))
  # Stopped and resumed, a run with an average ends exactly as one never stopped.
  if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
    return
  config = smoke_config(ema_decay=0.999)
  wgan.train_and_evaluate(config, str(tmp_path / "straight"))
  wgan.train_and_evaluate(override(smoke_config(ema_decay=0.999), stop_after_gen_iters=3),
                          str(tmp_path / "resumed"))
  wgan.train_and_evaluate(config, str(tmp_path / "resumed"))
  a, b = final_state(str(tmp_path / "straight")), final_state(str(tmp_path / "resumed"))
  assert a.generator_ema is not None
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # Sampling takes the average unless asked for the raw weights.
  averaged = wgan.sample(str(tmp_path / "straight"), num=4)
  assert not np.array_equal(averaged, wgan.sample(str(tmp_path / "straight"), 4, raw=True))


def test_the_averaged_generator_uses_batchnorm_statistics_measured_with_its_weights():
  config = smoke_config(ema_decay=0.999)
  mesh = parallel.make_mesh()
  state = wgan.initial_state(config, mesh)
  # An average that differs from the raw weights, and stale running statistics.
  state = state.replace(generator_ema=jax.tree.map(lambda p: 1.5 * p,
                                                   state.generator.params))
  net = wgan.sampling_fn(config)(state)
  generator, _ = wgan.build_models(config)
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x57A7),
                        (wgan.STATISTICS_SAMPLES, config.model.nz))
  # Measured on those very noise vectors, eval mode reproduces train mode on them.
  evaluated = generator.apply({"params": net.params, "batch_stats": net.batch_stats}, z,
                              train=False)
  trained, _ = generator.apply({"params": net.params, "batch_stats": net.batch_stats}, z,
                               train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(evaluated, trained, atol=2e-5)
  raw = wgan.sampling_fn(config, raw=True)(state)
  assert raw is not None and not np.allclose(
      jax.tree.leaves(raw.batch_stats)[0], jax.tree.leaves(net.batch_stats)[0])
  assert "averaged" in wgan.weights_used(config) and "raw" in wgan.weights_used(config, True)


# ----------------------------------------------------------------------------- other recipes

def test_the_hinge_loss_by_value():
  d_real = jnp.array([-2.0, -0.5, 0.3])  # the lesson's sign: real images score low
  d_fake = jnp.array([2.0, 0.25, -1.0])
  # mean(relu(1 + D(real))) = (0 + 0.5 + 1.3) / 3; mean(relu(1 - D(fake))) = (0 + 0.75 + 2) / 3
  assert float(wgan.hinge_loss(d_real, d_fake)) == pytest.approx(1.8 / 3 + 2.75 / 3)


def test_spectral_norm_divides_each_kernel_by_its_largest_singular_value():
  from jaxgan.models import DCGANCritic  # pylint: disable=g-import-not-at-top
  critic = DCGANCritic(isize=16, nc=1, ndf=4, n_extra_layers=1, norm="none",
                       spectral_norm=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 1))
  variables = critic.init(jax.random.PRNGKey(1), x, train=False)
  stats = variables["batch_stats"]
  for _ in range(100):  # one power iteration per training call, stored in the state
    _, updates = critic.apply({"params": variables["params"], "batch_stats": stats}, x,
                              train=True, mutable=["batch_stats"])
    stats = updates["batch_stats"]
  checked = 0
  for path, sigma in jax.tree_util.tree_leaves_with_path(stats):
    name = jax.tree_util.keystr(path)
    if not name.endswith("sigma']"):
      continue
    # The kernel it normalises: the same layer's parameters, reshaped to a matrix.
    layer = name.split("'")[-2].split("/")[0]  # e.g. "conv" or "final"
    scope = [k.key for k in path[:-1] if k.key != "SpectralNorm_0"]
    params = variables["params"]
    for key in scope:
      params = params[key]
    kernel = np.asarray(params[layer]["kernel"])
    largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(float(sigma), largest, rtol=1e-3)
    checked += 1
  assert checked == 4  # initial, extra_0, pyramid_0 and the final conv


def test_ttur_gives_the_critic_its_own_learning_rate_and_recipes_train():
  config = wgan_configs.get_config("smoke,ttur")
  assert (config.lr_d, config.lr_g, config.adam_b1, config.critic_iters) == (3e-4, 1e-4, 0.0, 1)
  mesh = parallel.make_mesh()
  state = wgan.initial_state(config, mesh)
  assert float(state.critic.opt_state.hyperparams["learning_rate"]) == pytest.approx(3e-4)
  assert float(state.generator.opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-4)
  assert float(state.critic.opt_state.hyperparams["b1"]) == 0.0
  # The hinge recipe with every option on trains a few iterations to finite losses.
  config = wgan_configs.get_config("smoke,hinge,ema,upsample")
  programs = wgan.make_programs(config, mesh)
  state = wgan.initial_state(config, mesh)
  for t in range(2):
    state, numbers = _iteration(programs, state, _random_block(config, mesh, 2, seed=t))
  assert all(np.isfinite(float(v)) for v in jax.device_get(numbers).values())
  assert "SpectralNorm_0" in state.critic.batch_stats and state.generator_ema is not None


def test_best_sets_only_the_recipe_and_keeps_each_variants_run():
  recipe = {"loss", "optimizer", "lr_g", "lr_d", "adam_b1", "adam_b2", "gp_weight",
            "clip_value", "critic_iters", "critic_iters_long", "long_critic_until",
            "long_critic_every", "ema_decay", "model.critic_norm", "model.spectral_norm",
            "model.upsample"}

  def flat(config, prefix=""):
    out = {}
    for key, value in config.items():
      if hasattr(value, "items"):
        out.update(flat(value, f"{prefix}{key}."))
      else:
        out[prefix + key] = value
    return out

  for variant in ("fashion_mnist", "lsun", "folder"):
    plain = flat(wgan_configs.get_config(variant))
    best = flat(wgan_configs.get_config(f"{variant},best"))
    changed = {k for k in plain if plain[k] != best[k]}
    assert changed and changed <= recipe, (variant, changed - recipe)
    wgan.validate_config(wgan_configs.get_config(f"{variant},best"))
  best = wgan_configs.get_config("fashion_mnist,best")
  assert (best.loss, best.model.critic_norm) == ("wgan-gp", "layer")
