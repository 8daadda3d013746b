"""The CycleGAN system: pool, losses, schedule, CLI run, exact resume, translation, errors.

The network shapes and parameter counts are tested in test_cyclegan_models.py. Training
runs use the ``smoke`` config (16×16 Fashion-MNIST crops, ngf = ndf = 4, 12 iterations);
the runs share one compiled step through the test XLA cache.
"""

import functools
import io
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from PIL import Image

from conftest import needs_fashion_mnist, override, xla_flags_for
from experiments import cyclegan as cyclegan_cli
from experiments import translate as translate_cli
from experiments.configs import cyclegan as cyclegan_configs
from jaxgan import checkpoint, images as image_io, metrics, optim, parallel
from jaxgan.data import augment, unaligned
from jaxgan.train import cyclegan, runs


def smoke_config(**overrides):
  return override(cyclegan_configs.get_config("smoke"), **overrides)


def run_cli(module, args):
  flags.FLAGS.unparse_flags()
  flags.FLAGS([module.__name__, *args])
  module.main([module.__name__])


def final_state(workdir, config):
  run = runs.restore(workdir, "cyclegan", config=config)
  return jax.device_get(run.state), run.step


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """One smoke training run through the CLI, shared by the tests that need a trained run."""
  if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"):
    pytest.skip("apt-get install -y dataset-fashion-mnist")
  workdir = str(tmp_path_factory.mktemp("cyclegan") / "run")
  run_cli(cyclegan_cli, ["--config", "experiments/configs/cyclegan.py:smoke",
                         "--workdir", workdir])
  return workdir


# ----------------------------------------------------------------------------- image pool

def ids(n, start=0):
  """Fakes whose single pixel is their id, so outputs can be traced back."""
  return jnp.arange(start, start + n, dtype=jnp.float32).reshape(n, 1, 1, 1)


def test_pool_fills_first_storing_and_returning_each_new_fake():
  pool = cyclegan.ImagePool.create(4, (1, 1, 1))
  pool, out = cyclegan.query_pool(pool, jax.random.PRNGKey(0), ids(3))
  np.testing.assert_array_equal(out, ids(3))
  assert int(pool.count) == 3
  np.testing.assert_array_equal(pool.images[:3], ids(3))
  # The fourth fills it; the fifth (same batch) already meets a full pool.
  pool, out = cyclegan.query_pool(pool, jax.random.PRNGKey(1), ids(2, start=3))
  assert float(out[0, 0, 0, 0]) == 3 and int(pool.count) == 4
  np.testing.assert_array_equal(pool.images[3], ids(1, start=3)[0])


def test_full_pool_swaps_with_probability_half_at_a_uniform_slot():
  size, n = 5, 4000
  pool = cyclegan.ImagePool.create(size, (1, 1, 1))
  pool, _ = cyclegan.query_pool(pool, jax.random.PRNGKey(0), ids(size))
  new, out = jax.jit(cyclegan.query_pool)(pool, jax.random.PRNGKey(1), ids(n, start=100))
  out = np.asarray(out).ravel()
  # Replay the reference's semantics on the host from what came out.
  contents = list(range(size))
  swapped, slots = 0, []
  for i, value in enumerate(out):
    fake = 100 + i
    if value != fake:  # a stored image came back and the new fake took its place
      slot = contents.index(int(value))
      contents[slot] = fake
      swapped += 1
      slots.append(slot)
  np.testing.assert_array_equal(np.asarray(new.images).ravel(), contents)
  assert int(new.count) == size
  assert abs(swapped / n - 0.5) < 0.04  # binomial sd 0.008
  assert np.all(np.abs(np.bincount(slots, minlength=size) / swapped - 1 / size) < 0.04)
  # Deterministic for a key, different for another.
  _, again = jax.jit(cyclegan.query_pool)(pool, jax.random.PRNGKey(1), ids(n, start=100))
  np.testing.assert_array_equal(np.asarray(again).ravel(), out)
  _, other = jax.jit(cyclegan.query_pool)(pool, jax.random.PRNGKey(2), ids(n, start=100))
  assert not np.array_equal(np.asarray(other).ravel(), out)


def test_no_pool_passes_fakes_through():
  pool, out = cyclegan.query_pool(None, jax.random.PRNGKey(0), ids(3))
  assert pool is None
  np.testing.assert_array_equal(out, ids(3))


# ----------------------------------------------------------------------------- losses

def test_lsgan_and_l1_are_means():
  scores = jnp.array([[0.0, 2.0], [1.0, 3.0]])
  assert float(cyclegan.lsgan_loss(scores, True)) == pytest.approx((1 + 1 + 0 + 4) / 4)
  assert float(cyclegan.lsgan_loss(scores, False)) == pytest.approx((0 + 4 + 1 + 9) / 4)
  assert float(cyclegan.l1_loss(scores, jnp.ones_like(scores))) == pytest.approx(1.0)


def test_losses_on_hand_made_networks():
  real_a = jnp.full((2, 4, 4, 1), 0.5)
  real_b = jnp.full((2, 4, 4, 1), -0.5)
  g_a = lambda x: -x  # A → B
  g_b = lambda x: 0.5 * x + 0.1  # B → A
  d_a = lambda x: x  # scores B images
  d_b = lambda x: 2 * x  # scores A images
  total, losses, (fake_a, fake_b) = cyclegan.generator_losses(
      g_a, g_b, d_a, d_b, real_a, real_b, lambda_a=10.0, lambda_b=4.0,
      lambda_identity=0.5)
  # fake_b = -0.5, rec_a = 0.5·(-0.5) + 0.1 = -0.15; fake_a = -0.15, rec_b = 0.15.
  np.testing.assert_allclose(fake_b, -0.5)
  np.testing.assert_allclose(fake_a, -0.15)
  expected = {
      "G_A": (-0.5 - 1) ** 2,  # D_A(fake_b) pushed to 1
      "G_B": (2 * -0.15 - 1) ** 2,  # D_B(fake_a) pushed to 1
      "cycle_A": 10.0 * abs(-0.15 - 0.5),  # λ_A |G_B(G_A(a)) - a|
      "cycle_B": 4.0 * abs(0.15 + 0.5),  # λ_B |G_A(G_B(b)) - b|
      "idt_A": 4.0 * 0.5 * abs(0.5 + 0.5),  # λ_B · 0.5 · |G_A(b) - b|
      "idt_B": 10.0 * 0.5 * abs(0.35 - 0.5),  # λ_A · 0.5 · |G_B(a) - a|
  }
  for name, value in expected.items():
    assert float(losses[name]) == pytest.approx(value, rel=1e-6), name
  assert float(total) == pytest.approx(sum(expected.values()), rel=1e-6)

  total, losses = cyclegan.discriminator_losses(d_a, d_b, real_a, real_b, fake_a, fake_b)
  d_a_expected = 0.5 * ((-0.5 - 1) ** 2 + (-0.5) ** 2)  # 0.5 (MSE(real, 1) + MSE(fake, 0))
  d_b_expected = 0.5 * ((2 * 0.5 - 1) ** 2 + (2 * -0.15) ** 2)
  assert float(losses["D_A"]) == pytest.approx(d_a_expected, rel=1e-6)
  assert float(losses["D_B"]) == pytest.approx(d_b_expected, rel=1e-6)
  assert float(total) == pytest.approx(d_a_expected + d_b_expected, rel=1e-6)

  _, losses, _ = cyclegan.generator_losses(g_a, g_b, d_a, d_b, real_a, real_b, lambda_a=10.0,
                                           lambda_b=4.0, lambda_identity=0.0)
  assert float(losses["idt_A"]) == float(losses["idt_B"]) == 0.0


# ----------------------------------------------------------------------------- schedule

def test_learning_rate_schedule_per_epoch_as_the_step_uses_it():
  config = smoke_config(n_epochs=100, n_epochs_decay=100, lr=2e-4, batch_size=2)
  mesh = parallel.make_mesh()
  images = np.zeros((12, 20, 20, 1), np.uint8)
  domains = unaligned.Domains(*(unaligned.ArraySource(images) for _ in range(4)),
                              channels=1, description="zeros")
  data = unaligned.make_feed(domains, config.batch_size, config.seed, mesh)
  assert data.epoch_size == 12  # 12 pairs, batch 2: 6 steps per epoch
  learning_rate = functools.partial(
      cyclegan.learning_rate, schedule=optim.linear_decay_epochs(2e-4, 100, 100),
      batch_size=config.batch_size, epoch_size=data.epoch_size)
  expected = {0: 2e-4, 99: 2e-4, 100: 2e-4 * (1 - 1 / 101), 150: 2e-4 * (1 - 51 / 101),
              199: 2e-4 * (1 - 100 / 101)}
  steps = jnp.asarray([6 * epoch for epoch in expected] + [6 * 100 - 1, 6 * 100 + 5])
  lrs = jax.jit(learning_rate)(steps)
  np.testing.assert_allclose(lrs[:5], list(expected.values()), rtol=1e-5)  # float32
  # The last step of epoch 99 still has the full rate; the last of epoch 100 the decayed.
  np.testing.assert_allclose(lrs[5:], [2e-4, 2e-4 * (1 - 1 / 101)], rtol=1e-6)
  # The rate lives in the optimizer state, where the step puts it.
  opt_state = cyclegan.make_optimizers(config)[0].init({"w": jnp.zeros(3)})
  opt_state = optim.set_learning_rate(opt_state, lrs[4])
  assert float(opt_state.hyperparams["learning_rate"]) == pytest.approx(2e-4 / 101, rel=1e-5)
  assert cyclegan.total_steps(config, 12) == 200 * 6
  assert cyclegan.total_steps(smoke_config(batch_size=8, n_epochs=1, n_epochs_decay=0),
                              12) == 2


# ----------------------------------------------------------------------------- runs

def test_cli_smoke_run_writes_grid_metrics_and_checkpoints(smoke_run):
  grid = Image.open(os.path.join(smoke_run, "samples", "iter_000012.png"))
  # 2 test pairs × the 2×3 view of 16² crops, 2-pixel padding: 3 columns, 4 rows.
  assert grid.size == (2 + 3 * 18, 2 + 4 * 18) and grid.mode == "L"
  assert os.path.exists(os.path.join(smoke_run, "samples", "iter_000006.png"))
  records = [r for r in metrics.read_metrics(smoke_run) if "G_A" in r]
  assert [r["step"] for r in records] == [4, 8, 12]
  for record in records:
    for name in cyclegan.LOSS_NAMES:
      assert np.isfinite(record[name]) and record[name] > 0, name
    assert record["iterations_per_sec"] > 0
  # 12 images a side, batch 2: 6 steps an epoch; epoch 1 is the one decay epoch.
  assert records[0]["lr"] == pytest.approx(2e-4) and records[0]["epoch"] == 0
  assert records[-1]["lr"] == pytest.approx(1e-4) and records[-1]["epoch"] == 1
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(smoke_run, "tensorboard")))
  assert sorted(checkpoint.Checkpointer(os.path.join(smoke_run, "checkpoints")).all_steps()) \
      == [6, 12]
  assert "tensorflow" not in sys.modules


@needs_fashion_mnist
def test_interrupted_run_resumes_exactly_including_pools(smoke_run, tmp_path):
  config = smoke_config()
  interrupted = str(tmp_path / "interrupted")
  with config.unlocked():
    config.stop_after_step = 5  # not a checkpoint step: stopping saves one
  record = cyclegan.train_and_evaluate(config, interrupted)
  assert record["step"] == 5
  with config.unlocked():
    config.stop_after_step = -1
  cyclegan.train_and_evaluate(config, interrupted)  # the same call again: resumes

  a, step_a = final_state(smoke_run, config)
  b, step_b = final_state(interrupted, config)
  assert step_a == step_b == 12 and int(a.step) == int(b.step) == 12
  assert int(b.fake_a_pool.count) == int(b.fake_b_pool.count) == 3
  assert np.abs(b.fake_b_pool.images).min() > 0  # the pool holds real fakes
  assert float(b.g_opt_state.hyperparams["learning_rate"]) == pytest.approx(1e-4)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert [r["step"] for r in metrics.read_metrics(interrupted) if "G_A" in r] == [4, 5, 8, 12]


def test_translate_folder_keeps_each_image_size(smoke_run, tmp_path):
  inputs = tmp_path / "in"
  os.makedirs(inputs / "sub")
  rng = np.random.default_rng(0)
  sizes = {"a.png": (17, 23), "b.jpg": (16, 16), "sub/c.png": (9, 30)}
  for name, (h, w) in sizes.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(inputs / name)
  (inputs / "broken.png").write_bytes(b"\x89PNG but not really")
  outputs = tmp_path / "out"
  result = translate_cli.translate_folder(smoke_run, "AtoB", str(inputs), str(outputs))
  assert result["skipped"] == 1 and result["step"] == 12
  for name, (h, w) in sizes.items():
    out = Image.open(outputs / (os.path.splitext(name)[0] + ".png"))
    assert out.size == (w, h) and out.mode == "L"
  # The CLI, the other direction.
  run_cli(translate_cli, ["--workdir", smoke_run, "--direction", "BtoA",
                          "--input", str(inputs), "--output", str(tmp_path / "out2")])
  assert Image.open(tmp_path / "out2" / "a.png").size == (23, 17)


def test_translation_of_a_crop_equals_the_sample_generator(smoke_run):
  """Padding to a multiple of 4 and cropping back leaves 4k-sized images untouched."""
  run = runs.restore(smoke_run, "cyclegan")
  g_params = run.state.g_params
  image = np.random.default_rng(1).integers(0, 256, (16, 16, 1), np.uint8)
  out = cyclegan.whole_image_translator(run.config, g_params)("BtoA", image)
  generator, _ = cyclegan.build_models(run.config)
  direct = generator.apply({"params": g_params["G_B"]}, augment.to_unit_range(image[None]))
  np.testing.assert_array_equal(out, image_io.to_uint8(np.asarray(direct[0])))


def test_folder_data_streamed_or_on_device_trains_identically(tmp_path):
  root = tmp_path / "data"
  rng = np.random.default_rng(0)
  for split, n in (("trainA", 5), ("trainB", 3), ("testA", 2), ("testB", 2)):
    os.makedirs(root / split)
    for i in range(n):  # RGB files of several sizes, read as grayscale
      h, w = rng.integers(18, 30, 2)
      Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(
          root / split / f"{i}.png")
  states = []
  for on_device in (True, False):
    config = smoke_config(stop_after_step=3, **{
        "data.source": "folder", "data.path": str(root), "data.channels": 1,
        "data.on_device": on_device})
    workdir = str(tmp_path / f"run_{on_device}")
    record = cyclegan.train_and_evaluate(config, workdir)
    assert record["step"] == 3 and record["skipped_images"] == 0
    states.append(final_state(workdir, config)[0])
  for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ----------------------------------------------------------------------------- errors

def test_clear_errors(tmp_path):
  with pytest.raises(ValueError, match=r"crop_size=30 is not divisible by 4.*"
                                       r"--config.data.crop_size=28 or 32"):
    cyclegan.train_and_evaluate(smoke_config(**{"data.crop_size": 30, "data.load_size": 36}),
                                str(tmp_path / "w1"))
  os.makedirs(tmp_path / "data" / "trainA")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "trainA" / "x.png")
  with pytest.raises(FileNotFoundError, match="trainB is missing"):
    cyclegan.train_and_evaluate(
        smoke_config(**{"data.source": "folder", "data.path": str(tmp_path / "data")}),
        str(tmp_path / "w2"))
  with pytest.raises(ValueError, match="--config.data.path"):
    cyclegan.train_and_evaluate(smoke_config(**{"data.source": "folder"}), str(tmp_path))
  with pytest.raises(ValueError, match="larger than data.load_size"):
    cyclegan.train_and_evaluate(smoke_config(**{"data.load_size": 12}), str(tmp_path))
  with pytest.raises(ValueError, match="--config.precision"):
    cyclegan.train_and_evaluate(smoke_config(precision="fp16"), str(tmp_path))
  with pytest.raises(ValueError, match="unknown cyclegan variant"):
    cyclegan_configs.get_config("monet")
  with pytest.raises(ValueError, match="direction"):
    translate_cli.translate_folder(str(tmp_path), "AtoC", str(tmp_path), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="config.json"):
    translate_cli.translate_folder(str(tmp_path / "w3"), "AtoB", str(tmp_path), str(tmp_path))
  with pytest.raises(ValueError, match="--config.num_samples"):
    cyclegan.validate_config(smoke_config(num_samples=0))


def test_paper_config_matches_the_reference_settings():
  c = cyclegan_configs.get_config("horse2zebra")
  assert (c.model.ngf, c.model.ndf, c.model.n_blocks, c.model.n_layers_d) == (64, 64, 9, 3)
  assert (c.data.load_size, c.data.crop_size, c.batch_size, c.pool_size) == (286, 256, 1, 50)
  assert (c.n_epochs, c.n_epochs_decay, c.lr, c.adam_b1, c.adam_b2) == (100, 100, 2e-4, 0.5,
                                                                      0.999)
  assert (c.lambda_a, c.lambda_b, c.lambda_identity) == (10.0, 10.0, 0.5)
  assert c.data.source == "tfds" and c.data.name == "horse2zebra"
  with pytest.raises(AttributeError):
    c.batch_sise = 2  # locked: typos fail


# ----------------------------------------------------------------------------- devices

PARALLEL_SCRIPT = """
import jax, numpy as np
from jaxgan import parallel
from jaxgan.data import unaligned
from jaxgan.train import cyclegan
from conftest import adam_noise_drift
from test_cyclegan_train import smoke_config

assert jax.device_count() == 2
rng = np.random.default_rng(0)
images = lambda n: rng.integers(0, 256, (n, 20, 20, 1), np.uint8)
domains = unaligned.Domains(*(unaligned.ArraySource(images(n)) for n in (6, 9, 2, 2)),
                            channels=1, description="random")
config = smoke_config(batch_size=2)

def train(devices, steps=3):
  mesh = parallel.make_mesh(devices)
  task = cyclegan.make_task(config, mesh, unaligned.make_feed(domains, config.batch_size,
                                                               config.seed, mesh))
  state, losses = task.init_state(), []
  batches = task.batches(0, state)
  for _ in range(steps):
    state, step_metrics = task.step(state, next(batches).inputs)
    losses.append(jax.device_get(step_metrics))
  return losses, jax.device_get(state), state

one_losses, one, _ = train(jax.devices()[:1])
two_losses, two, sharded = train(jax.devices())
for a, b in zip(one_losses, two_losses):
  for name in cyclegan.LOSS_NAMES:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6)
# Parameters whose gradient is zero in exact arithmetic (a conv bias right before an
# InstanceNorm, which subtracts it again) get rounding noise that depends on the summation
# order, and Adam turns noise of either sign into steps of about ±lr. adam_noise_drift
# bounds how far Adam can move any parameter, so for the parameters this is a ceiling,
# not a proof: the losses above, compared step by step, show the training is the same.
atol = 2 * adam_noise_drift(config.lr, config.adam_b1, config.adam_b2, steps=3) + 1e-6
for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol)
assert int(two.fake_b_pool.count) == 3
assert len(sharded.fake_b_pool.images.sharding.device_set) == 2  # replicated state
print("PARALLEL-OK")
"""


def test_two_devices_train_as_one():
  """Batch sharded over a ("data",) mesh, state and pools replicated: same training."""
  import subprocess
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=xla_flags_for(2),
             PYTHONPATH=os.pathsep.join([repo, os.path.join(repo, "tests")]),
             JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
  result = subprocess.run([sys.executable, "-c", PARALLEL_SCRIPT], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "PARALLEL-OK" in result.stdout


def test_every_generator_forward_draws_its_own_dropout_mask():
  # The reference's G_A runs on real A (fake B), on fake A (rec B) and on real B (identity)
  # with a fresh dropout mask each time; one key per network would repeat the mask.
  config = smoke_config(**{"model.dropout": 0.5})
  state = cyclegan.initial_state(config, parallel.make_mesh())
  generator, discriminator = cyclegan.build_models(config)
  nets = dict(generator=generator, discriminator=discriminator, dropout=0.5)
  x = jnp.ones((1, 16, 16, 1))
  g_a, _, _, _ = cyclegan.networks(state.g_params, state.d_params,
                                   dropout_key=jax.random.PRNGKey(0), **nets)
  first, second = np.asarray(g_a(x)), np.asarray(g_a(x))
  assert not np.array_equal(first, second)
  # Without a key (evaluation) the generator is deterministic.
  g_a, _, _, _ = cyclegan.networks(state.g_params, state.d_params, **nets)
  np.testing.assert_array_equal(np.asarray(g_a(x)), np.asarray(g_a(x)))


def test_the_official_zip_trains_and_translates_in_place(tmp_path):
  import zipfile  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  archive = tmp_path / "horse2zebra.zip"
  with zipfile.ZipFile(archive, "w") as z:  # the official layout: one top folder
    for split, n in (("trainA", 5), ("trainB", 4), ("testA", 2), ("testB", 2)):
      for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), np.uint8)).save(buffer, "JPEG")
        z.writestr(f"horse2zebra/{split}/n{i:04d}.jpg", buffer.getvalue())
  domains = unaligned.folder_domains(str(archive), load_size=20, channels=1)
  assert [len(s) for s in (domains.train_a, domains.train_b, domains.test_a,
                           domains.test_b)] == [5, 4, 2, 2]
  assert domains.train_a[0]["image"].shape == (20, 20, 1)
  config = smoke_config(stop_after_step=2, **{"data.source": "folder",
                                              "data.path": str(archive)})
  record = cyclegan.train_and_evaluate(config, str(tmp_path / "run"))
  assert record["step"] == 2 and record["skipped_images"] == 0
  result = translate_cli.translate_folder(str(tmp_path / "run"), "AtoB", str(archive),
                                          str(tmp_path / "out"))
  assert len(result["written"]) == 13 and result["skipped"] == 0
  with Image.open(tmp_path / "out" / "horse2zebra" / "testA" / "n0001.png") as im:
    assert im.size == (30, 24)
  broken = tmp_path / "cut.zip"
  broken.write_bytes(archive.read_bytes()[:200])
  with pytest.raises(ValueError, match=rf"{broken} is not a readable zip archive"):
    unaligned.folder_domains(str(broken), load_size=20)


@needs_fashion_mnist
def test_the_generators_average_follows_training_and_resumes_bit_for_bit(tmp_path):
  config = smoke_config(ema_decay=0.99)
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  cyclegan.train_and_evaluate(config, straight)
  cyclegan.train_and_evaluate(override(smoke_config(ema_decay=0.99), stop_after_step=5), resumed)
  cyclegan.train_and_evaluate(config, resumed)
  a, _ = final_state(straight, config)
  b, _ = final_state(resumed, config)
  assert a.g_ema is not None
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The average lags the raw weights; translations use it unless asked otherwise.
  assert not np.allclose(jax.tree.leaves(a.g_ema)[0], jax.tree.leaves(a.g_params)[0])
  assert cyclegan.generators(a) is a.g_ema and cyclegan.generators(a, raw=True) is a.g_params
  inputs = tmp_path / "in"
  os.makedirs(inputs)
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20), np.uint8)).save(
      inputs / "x.png")
  outs = [translate_cli.translate_folder(straight, "AtoB", str(inputs), str(tmp_path / o),
                                         raw=raw) for o, raw in (("avg", False), ("raw", True))]
  assert "averaged" in outs[0]["weights"] and outs[1]["weights"] == "raw weights"
  assert not np.array_equal(np.asarray(Image.open(tmp_path / "avg" / "x.png")),
                            np.asarray(Image.open(tmp_path / "raw" / "x.png")))
