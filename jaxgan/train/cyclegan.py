"""CycleGAN (Zhu et al. 2017) as lesson 12 trains it, one jitted step per iteration.

Reads like the reference's ``CycleGANModel``. Two generators: G_A turns A into B, G_B
turns B into A. Two discriminators: D_A judges domain B (real B against G_A's fakes),
D_B judges domain A. The generators minimise

    G_A + G_B                 LSGAN: D's score of their fakes pushed to 1
  + cycle_A + cycle_B         λ_A·|G_B(G_A(a)) − a|₁ and λ_B·|G_A(G_B(b)) − b|₁
  + idt_A + idt_B             0.5·λ_B·|G_A(b) − b|₁ and 0.5·λ_A·|G_B(a) − a|₁

with one Adam over both; then the discriminators minimise
``0.5·(MSE(D(real), 1) + MSE(D(fake), 0))`` each, with one Adam over both, on fakes drawn
from an image pool of earlier fakes. The learning rate is constant for ``n_epochs`` and
decays linearly to zero over ``n_epochs_decay``, set per epoch as the reference does.

What is new is how it runs. Everything a resume needs is one pytree (`TrainState`): the
four networks, both optimizer states (the learning rate inside them), the step (hence the
epoch), both image pools and the RNG. One jitted, state-donating function does a whole
iteration: pick the batch, crop and flip it on the device, the generators' step, the
pools, the discriminators' step; it runs data-parallel over a ("data",) mesh of every
device with the state replicated.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import checkpoint, images as image_io, metrics, ops, optim, parallel, precision
from jaxgan.data import augment, unaligned
from jaxgan.evaluation import judges, runs
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.train import config_checks, loop

LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")


# ----------------------------------------------------------------------------- state

@flax.struct.dataclass
class ImagePool:
  """The last fakes a discriminator saw, kept so it does not just chase the newest G.

  ``images[:count]`` hold images; the rest is unused until the pool has filled.
  """
  images: jax.Array  # (pool_size, H, W, C) float32
  count: jax.Array  # int32

  @classmethod
  def create(cls, size: int, image_shape) -> ImagePool:
    return cls(jnp.zeros((size, *image_shape), jnp.float32), jnp.zeros((), jnp.int32))


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # iterations done; the epoch is step·batch_size // epoch_size
  g_params: Any  # {"G_A": A→B, "G_B": B→A}
  d_params: Any  # {"D_A": judges B, "D_B": judges A}
  g_opt_state: Any  # one Adam over both generators
  d_opt_state: Any  # one Adam over both discriminators
  fake_a_pool: ImagePool | None  # fakes of A (G_B's), shown to D_B; None if pool_size 0
  fake_b_pool: ImagePool | None  # fakes of B (G_A's), shown to D_A
  rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)


# ----------------------------------------------------------------------------- losses

def lsgan_loss(prediction, target_is_real: bool):
  """Least-squares GAN loss: mean squared distance of the scores to 1 (real) or 0 (fake)."""
  target = 1.0 if target_is_real else 0.0
  return jnp.mean(jnp.square(prediction.astype(jnp.float32) - target))


def l1_loss(x, y):
  """Mean absolute difference: the cycle and identity losses."""
  return jnp.mean(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32)))


def _twice(fn, x, y):
  # Every layer treats each image on its own (InstanceNorm normalises per example), so one
  # call on x and y together equals two calls, in one launch. Interleaved (x0, y0, x1, y1,
  # ...), not concatenated: with the batch split over devices, each device then holds its
  # own rows of x and of y in the joint batch, where a concatenation would move half of
  # them to other devices and back (all-to-alls and collective-permutes in every step).
  out = fn(jnp.stack([x, y], axis=1).reshape((-1,) + x.shape[1:]))
  out = out.reshape((x.shape[0], 2) + out.shape[1:])
  return out[:, 0], out[:, 1]


def generator_losses(g_a, g_b, d_a, d_b, real_a, real_b, *, lambda_a: float,
                     lambda_b: float, lambda_identity: float):
  """The generators' objective, as the reference's ``backward_G`` computes it.

  Args:
    g_a, g_b: the generators as functions (G_A: A→B, G_B: B→A).
    d_a, d_b: the discriminators as functions (D_A scores B images, D_B scores A images).
    real_a, real_b: batches of real images in [-1, 1].
    lambda_a, lambda_b: cycle weights (10); lambda_identity: identity weight relative to
      them (0.5), 0 leaves the identity terms out.

  Returns:
    ``(total, losses, (fake_a, fake_b))`` with losses G_A, G_B, cycle_A, cycle_B, idt_A,
    idt_B.
  """
  if lambda_identity > 0:
    # G_A should leave an image that is already B alone, and G_B one that is already A.
    fake_b, idt_a = _twice(g_a, real_a, real_b)
    fake_a, idt_b = _twice(g_b, real_b, real_a)
  else:
    fake_b, fake_a = g_a(real_a), g_b(real_b)
  rec_a, rec_b = g_b(fake_b), g_a(fake_a)
  zero = jnp.zeros((), jnp.float32)
  losses = {
      "G_A": lsgan_loss(d_a(fake_b), True),
      "G_B": lsgan_loss(d_b(fake_a), True),
      "cycle_A": lambda_a * l1_loss(rec_a, real_a),
      "cycle_B": lambda_b * l1_loss(rec_b, real_b),
      "idt_A": lambda_b * lambda_identity * l1_loss(idt_a, real_b) if lambda_identity > 0
               else zero,
      "idt_B": lambda_a * lambda_identity * l1_loss(idt_b, real_a) if lambda_identity > 0
               else zero,
  }
  return sum(losses.values()), losses, (fake_a, fake_b)


def discriminator_losses(d_a, d_b, real_a, real_b, fake_a, fake_b):
  """``backward_D_basic`` for both: 0.5·(MSE(D(real), 1) + MSE(D(fake), 0)) each.

  The 0.5 slows the discriminators relative to the generators (the paper's choice).

  Returns:
    ``(total, {"D_A": ..., "D_B": ...})``.
  """
  real_score, fake_score = _twice(d_a, real_b, fake_b)
  loss_d_a = 0.5 * (lsgan_loss(real_score, True) + lsgan_loss(fake_score, False))
  real_score, fake_score = _twice(d_b, real_a, fake_a)
  loss_d_b = 0.5 * (lsgan_loss(real_score, True) + lsgan_loss(fake_score, False))
  return loss_d_a + loss_d_b, {"D_A": loss_d_a, "D_B": loss_d_b}


# ----------------------------------------------------------------------------- image pool

def query_pool(pool: ImagePool | None, key, fakes):
  """Passes a batch of new fakes through the pool, one image at a time as the reference.

  Until the pool is full each fake is stored and returned. Once full, with probability
  0.5 a random stored image is returned and the new fake takes its place; otherwise the
  new fake is returned and the pool stays as it is.

  Args:
    pool: the pool, or None for no pool (``pool_size`` 0): the fakes pass through.
    key: PRNG key; the same key gives the same choices.
    fakes: (N, H, W, C) images (not differentiated through).

  Returns:
    ``(new pool, images for the discriminator)``, the latter shaped like ``fakes``.
  """
  if pool is None:
    return None, fakes
  size = pool.images.shape[0]

  def one(pool, inputs):
    key, fake = inputs
    coin_key, slot_key = jax.random.split(key)
    full = pool.count >= size
    swap = full & jax.random.bernoulli(coin_key, 0.5)
    slot = jnp.where(full, jax.random.randint(slot_key, (), 0, size), pool.count)
    stored = pool.images[slot]
    keep = full & ~swap
    images = pool.images.at[slot].set(jnp.where(keep, stored, fake))
    new = ImagePool(images, jnp.minimum(pool.count + 1, size))
    return new, jnp.where(swap, stored, fake)

  keys = jax.random.split(key, fakes.shape[0])
  pool, out = jax.lax.scan(one, pool, (keys, fakes.astype(pool.images.dtype)))
  return pool, out


# ----------------------------------------------------------------------------- images

def crop_flip(key, images, crop_size: int):
  """The reference's training transform after the resize: random crop, flip, to [-1, 1]."""
  crop_key, flip_key = jax.random.split(key)
  images = augment.random_flip(flip_key, augment.random_crop(crop_key, images, crop_size))
  channels = images.shape[-1]
  return augment.normalize(images, (0.5,) * channels, (0.5,) * channels)


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
  """The central ``size``×``size`` window of host images (N, H, W, C)."""
  h, w = images.shape[1:3]
  top, left = (h - size) // 2, (w - size) // 2
  return images[:, top:top + size, left:left + size]


def to_unit_range(images) -> np.ndarray:
  """uint8 [0, 255] → float32 [-1, 1], as the reference's Normalize((0.5,), (0.5,))."""
  return np.asarray(images, np.float32) / 127.5 - 1.0


# ----------------------------------------------------------------------------- set-up

def image_channels(config) -> int:
  """Fashion-MNIST is grayscale and tfds cycle_gan is RGB; folders say so in the config."""
  return {"fashion_mnist": 1, "tfds": 3}.get(config.data.source, config.data.channels)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Catches impossible settings before any data is read; each error names the fix."""
  d = config.data
  config_checks.choice(config, "data.source", ("tfds", "folder", "fashion_mnist"))
  config_checks.choice(config, "data.channels", (1, 3))
  config_checks.choice(config, "precision", ("fp32", "bf16"))
  config_checks.positive(config, "batch_size", "lr", "data.load_size", "data.crop_size",
                         "model.ngf", "model.ndf", "model.n_layers_d", "n_epochs",
                         "log_every", "sample_every", "checkpoint_every", "n_samples")
  config_checks.non_negative(config, "n_epochs_decay", "pool_size", "lambda_identity",
                             "model.n_blocks", "model.dropout", "data.max_images",
                             "eval.samples", "eval.reference_images")
  if config.eval.judge:
    config_checks.positive(config, "eval.every", "eval.kid_subsets")
  if d.crop_size % 4:
    lower, upper = d.crop_size - d.crop_size % 4, d.crop_size + 4 - d.crop_size % 4
    raise ValueError(
        f"data.crop_size={d.crop_size} is not divisible by 4, which the generator's two "
        f"downsamplings need: set --config.data.crop_size={lower or upper} or {upper}.")
  if d.crop_size > d.load_size:
    raise ValueError(f"data.crop_size={d.crop_size} is larger than data.load_size="
                     f"{d.load_size}: set --config.data.load_size={d.crop_size} or more.")
  if d.source == "folder" and not d.path:
    raise ValueError("data.source='folder' needs a folder: set --config.data.path=DIR "
                     "(with DIR/trainA and DIR/trainB).")
  if config.lambda_a <= 0 or config.lambda_b <= 0:
    raise ValueError("config.lambda_a and config.lambda_b must be positive (the paper: 10).")


def epoch_of_step(step, batch_size: int, epoch_size: int):
  """The epoch the first pair of global batch ``step`` belongs to (works on arrays too)."""
  return step * batch_size // epoch_size


def total_steps(config, epoch_size: int) -> int:
  """Iterations for ``n_epochs + n_epochs_decay`` epochs of ``epoch_size`` pairs."""
  epochs = config.n_epochs + config.n_epochs_decay
  return -(-epochs * epoch_size // config.batch_size)


def with_learning_rate(opt_state, lr):
  """Sets the learning rate held in an ``optax.inject_hyperparams`` state."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)
  return opt_state._replace(hyperparams=hyper)


class CycleGAN(loop.Task):
  """The networks, the optimizers and the jitted functions that train and apply them.

  Args:
    config: a config from ``experiments/configs/cyclegan.py`` (already validated).
    mesh: the ("data",) device mesh.
    feed: the training pairs (`jaxgan.data.unaligned.UnalignedFeed`), or None to apply
      the generators only.
  """
  what = "a CycleGAN run"

  def __init__(self, config, mesh, feed: unaligned.UnalignedFeed | None = None):
    self.config, self.mesh, self.feed = config, mesh, feed
    self.epoch_size = feed.epoch_size if feed is not None else 1
    self.policy = precision.get_policy(config.precision)
    self.channels = image_channels(config)
    m = config.model
    dtypes = dict(dtype=self.policy.compute_dtype, param_dtype=self.policy.param_dtype)
    self.generator = ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks, nc=self.channels,
                                     dropout=m.dropout, **dtypes)
    self.discriminator = PatchDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d, **dtypes)
    adam = optax.inject_hyperparams(optax.adam)
    self.tx_g = adam(learning_rate=config.lr, b1=config.b1, b2=config.b2)
    self.tx_d = adam(learning_rate=config.lr, b1=config.b1, b2=config.b2)
    self.schedule = optim.linear_decay_epochs(config.lr, config.n_epochs,
                                              config.n_epochs_decay)
    self.image_shape = (config.data.crop_size, config.data.crop_size, self.channels)
    self._batch_sharding = parallel.data_sharding(mesh)
    self._replicated = parallel.replicated(mesh)
    self._train_step = ops.jit(self._step, donate_argnums=(0,))
    self._translate_pairs = ops.jit(self._translate_pairs_fn)
    self._generate = ops.jit(self._generate_fn, static_argnums=0)
    self._cycle = ops.jit(self._cycle_fn, static_argnums=0)
    self.samples = None  # the fixed test pairs of the sample grids, once on the devices

  # --- state

  def _create_state(self, seed) -> TrainState:
    # Threefry compiles one unrolled hash per parameter tensor: tens of seconds for four
    # networks on a CPU. The rbg generator draws the same N(0, 0.02) and compiles in about
    # a second; the steps keep threefry, whose streams do not depend on the sharding.
    init_key = jax.random.key(seed, impl="rbg")
    g_a_key, g_b_key, d_a_key, d_b_key = jax.random.split(init_key, 4)
    train_key = jax.random.PRNGKey(seed)
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    g_init = lambda k: self.generator.init(k, x)["params"]
    d_init = lambda k: self.discriminator.init(k, x)["params"]
    g_params = {"G_A": g_init(g_a_key), "G_B": g_init(g_b_key)}
    d_params = {"D_A": d_init(d_a_key), "D_B": d_init(d_b_key)}

    def pool():
      if self.config.pool_size == 0:
        return None
      return ImagePool.create(self.config.pool_size, self.image_shape)

    return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                      g_opt_state=self.tx_g.init(g_params),
                      d_opt_state=self.tx_d.init(d_params),
                      fake_a_pool=pool(), fake_b_pool=pool(), rng=train_key)

  def init_state(self) -> TrainState:
    """A fresh state, replicated over the mesh."""
    return jax.jit(self._create_state, out_shardings=self._replicated)(self.config.seed)

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
    return parallel.abstract_replicated(
        jax.eval_shape(self._create_state, self.config.seed), self.mesh)

  def learning_rate(self, step):
    """The learning rate the step ``step`` trains with (the schedule of its epoch)."""
    return self.schedule(epoch_of_step(step, self.config.batch_size, self.epoch_size))

  # --- the training iteration

  def _networks(self, g_params, d_params, dropout_key=None):
    """The four networks as functions of images, as `generator_losses` wants them.

    With a ``dropout_key`` (and ``model.dropout`` > 0) every generator call draws a mask
    of its own, as each forward pass does in the reference; without one the generators
    run deterministically (evaluation).
    """
    calls = itertools.count()

    def gen(name):
      if self.config.model.dropout > 0 and dropout_key is not None:
        return lambda x: self.generator.apply(
            {"params": g_params[name]}, x, train=True,
            rngs={"dropout": jax.random.fold_in(dropout_key, next(calls))})
      return lambda x: self.generator.apply({"params": g_params[name]}, x)
    disc = lambda name: lambda x: self.discriminator.apply({"params": d_params[name]}, x)
    return gen("G_A"), gen("G_B"), disc("D_A"), disc("D_B")

  def _step(self, state: TrainState, data, batch):
    """One iteration; pure, jitted once. ``data``: the domains where they live on device."""
    c = self.config
    key = jax.random.fold_in(state.rng, state.step)
    a_key, b_key, pool_a_key, pool_b_key, g_dropout, d_dropout = jax.random.split(key, 6)
    pairs = self.feed.take(data, batch)
    images_a = jax.lax.with_sharding_constraint(pairs["a"], self._batch_sharding)
    images_b = jax.lax.with_sharding_constraint(pairs["b"], self._batch_sharding)
    real_a = crop_flip(a_key, images_a, c.data.crop_size)
    real_b = crop_flip(b_key, images_b, c.data.crop_size)
    lr = self.learning_rate(state.step)

    # The generators' step. Differentiating only g_params leaves the discriminators fixed.
    def g_objective(g_params):
      g_a, g_b, d_a, d_b = self._networks(g_params, state.d_params, g_dropout)
      total, losses, fakes = generator_losses(
          g_a, g_b, d_a, d_b, real_a, real_b, lambda_a=c.lambda_a, lambda_b=c.lambda_b,
          lambda_identity=c.lambda_identity)
      return total, (losses, fakes)

    g_grads, (g_losses, (fake_a, fake_b)) = jax.grad(g_objective, has_aux=True)(
        state.g_params)
    updates, g_opt_state = self.tx_g.update(
        g_grads, with_learning_rate(state.g_opt_state, lr), state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)

    # The discriminators see this iteration's fakes (from the generators before their
    # update, as in the reference) through the pools.
    fake_a_pool, fake_a = query_pool(state.fake_a_pool, pool_a_key,
                                     jax.lax.stop_gradient(fake_a))
    fake_b_pool, fake_b = query_pool(state.fake_b_pool, pool_b_key,
                                     jax.lax.stop_gradient(fake_b))
    fake_a = jax.lax.with_sharding_constraint(fake_a, self._batch_sharding)
    fake_b = jax.lax.with_sharding_constraint(fake_b, self._batch_sharding)

    def d_objective(d_params):
      _, _, d_a, d_b = self._networks(g_params, d_params, d_dropout)
      return discriminator_losses(d_a, d_b, real_a, real_b, fake_a, fake_b)

    d_grads, d_losses = jax.grad(d_objective, has_aux=True)(state.d_params)
    updates, d_opt_state = self.tx_d.update(
        d_grads, with_learning_rate(state.d_opt_state, lr), state.d_params)
    d_params = optax.apply_updates(state.d_params, updates)

    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                              g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                              fake_a_pool=fake_a_pool, fake_b_pool=fake_b_pool)
    return new_state, {**g_losses, **d_losses, "lr": lr}

  # --- training, as the loop drives it

  def batches(self, start: int):
    return self.feed.batches(start)

  def compile(self, state, batch) -> bool:
    # Kept for its cost analysis (the benchmark's FLOPs), before XLA's passes.
    self.lowered_train_step = self._train_step.lower(state, self.feed.arrays, batch)
    self._train_step = self.lowered_train_step.compile()
    return True

  def train_step(self, state, batch):
    return self._train_step(state, self.feed.arrays, batch)

  def summarize(self, step: int, stacked: dict, seconds: float) -> dict:
    return {"epoch": int(epoch_of_step(step - 1, self.config.batch_size, self.epoch_size)),
            **{k: float(np.mean(stacked[k])) for k in LOSS_NAMES},
            "lr": float(stacked["lr"][-1]),
            "iterations_per_sec": len(stacked["lr"]) / seconds,
            "skipped_files": self.feed.skipped}

  @staticmethod
  def _headline_scores(record: dict) -> str:
    return "".join(f", {d}_{k} {record[f'{d}_{k}']:.4g}" for d in ("AtoB", "BtoA")
                   for k in ("fd", "translation_rate") if f"{d}_{k}" in record)

  def log_line(self, step: int, record: dict) -> str:
    losses = "  ".join(f"{k} {record[k]:.3f}" for k in LOSS_NAMES if k in record)
    if not losses:  # a hook-only record (evaluation, samples)
      return f"step {step}" + self._headline_scores(record)
    return f"step {step} epoch {record.get('epoch', '-')}: {losses}"

  def summary(self, record: dict) -> str:
    return (f"step {record['step']}: " + ", ".join(f"{k} {record[k]:.3f}" for k in LOSS_NAMES)
            + f"{self._headline_scores(record)}; {record['wall_time']:.1f} s; samples in "
            f"{record.get('sample')}")

  def samples_hook(self, workdir: str):
    """A loop hook: the sample grid of the fixed test pairs, as a PNG and in TensorBoard."""
    def save(state, step, record):  # pylint: disable=unused-argument
      grid = self.sample_grid(state.g_params, *self.samples)
      path = os.path.join(workdir, "samples", f"iter_{step:06d}.png")
      if jax.process_index() == 0:
        image_io.save_png(path, grid)
      return {"sample": path, "samples": loop.Image(grid)}
    return save

  # --- applying the generators

  def _translate_pairs_fn(self, g_params, real_a, real_b):
    g_a, g_b, _, _ = self._networks(g_params, None)
    fake_b, fake_a = g_a(real_a), g_b(real_b)
    return {"real_A": real_a, "fake_B": fake_b, "rec_A": g_b(fake_b),
            "real_B": real_b, "fake_A": fake_a, "rec_B": g_a(fake_a)}

  def sample_grid(self, g_params, real_a, real_b) -> np.ndarray:
    """The lesson's 2×3 view per test pair, the pairs stacked top to bottom.

    Row 2i: real_A, fake_B, rec_A of pair i; row 2i+1: real_B, fake_A, rec_B.

    Args:
      g_params: the generators' parameters.
      real_a, real_b: float32 (n, S, S, C) test images in [-1, 1].

    Returns:
      uint8 (2 + 2n(S + 2), 2 + 3(S + 2), C) image.
    """
    out = jax.device_get(self._translate_pairs(g_params, real_a, real_b))
    rows = []
    for i in range(real_a.shape[0]):
      rows += [out["real_A"][i], out["fake_B"][i], out["rec_A"][i],
               out["real_B"][i], out["fake_A"][i], out["rec_B"][i]]
    return image_io.make_grid(np.stack(rows), ncol=3)

  def _cycle_fn(self, names, g_params, x):
    forward, backward = names
    fake = self.generator.apply({"params": g_params[forward]}, x)
    rec = self.generator.apply({"params": g_params[backward]}, fake)
    return fake, jnp.mean(jnp.abs(rec.astype(jnp.float32) - x), axis=(1, 2, 3))

  def translate_batch(self, g_params, direction: str, images: np.ndarray,
                      batch_size: int = 50):
    """Translations (uint8) of uint8 images, and the mean cycle error |rec - x| in [-1, 1]."""
    names = {"AtoB": ("G_A", "G_B"), "BtoA": ("G_B", "G_A")}[direction]
    fakes, errors = [], []
    for i in range(0, len(images), batch_size):
      fake, err = jax.device_get(self._cycle(names, g_params,
                                             to_unit_range(images[i:i + batch_size])))
      fakes.append(image_io.to_uint8(fake))
      errors.append(err)
    return np.concatenate(fakes), float(np.mean(np.concatenate(errors)))

  def evaluation_hook(self, judge):
    """A loop hook: both directions of the test split scored by ``judge``
    (`jaxgan.evaluation.runs.CycleGANJudge`): FD, KID, ..., translation rate, cycle error."""
    def evaluate(state, step, record):  # pylint: disable=unused-argument
      clock = loop.Stopwatch()
      scores = judge.score(functools.partial(self.translate_batch, state.g_params))
      out = {"eval_seconds": clock.elapsed()}
      for direction, s in scores.items():
        logging.info("step %d, %s judged by %s:\n%s", step, direction, self.config.eval.judge,
                     runs.table(s))
        out.update(runs.flatten(s, f"{direction}_"), **runs.references(s, f"{direction}_"))
      return out
    return evaluate

  def _generate_fn(self, name, g_params, x):
    return self.generator.apply({"params": g_params[name]}, x)

  def translate(self, g_params, direction: str, image: np.ndarray) -> np.ndarray:
    """Translates one image of any size, as the reference's test mode: whole, not cropped.

    The generator needs sides divisible by 4, so the image is reflect-padded at the
    bottom and right up to the next multiple of 4 and the output cropped back. jit keeps
    one compiled program per padded shape.

    Args:
      g_params: the generators' parameters.
      direction: ``"AtoB"`` (G_A) or ``"BtoA"`` (G_B).
      image: uint8 (H, W, C).

    Returns:
      uint8 (H, W, C).
    """
    name = {"AtoB": "G_A", "BtoA": "G_B"}[direction]
    h, w = image.shape[:2]
    x = to_unit_range(image)[None]
    if min(h, w) < 5:
      # Padded to 8, the reflection padding at quarter resolution still has 2 pixels.
      raise ValueError(f"a {h}x{w} image is too small to translate: the generator needs "
                       "at least 5 pixels a side.")
    pad_h, pad_w = -h % 4, -w % 4
    x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    y = self._generate(name, g_params, jnp.asarray(x))
    return image_io.to_uint8(np.asarray(y)[0, :h, :w])


def sample_pairs(config, domains: unaligned.Domains) -> tuple[np.ndarray, np.ndarray]:
  """The fixed test images of the sample grids: the first n of testA and testB, centred."""
  n = min(config.n_samples, len(domains.test_a), len(domains.test_b))
  take = lambda source: np.stack([source[i]["image"] for i in range(n)])
  crop = config.data.crop_size
  return (to_unit_range(center_crop(take(domains.test_a), crop)),
          to_unit_range(center_crop(take(domains.test_b), crop)))


# ----------------------------------------------------------------------------- runs

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains for ``n_epochs + n_epochs_decay`` epochs, writing samples and checkpoints.

  Started again with the same workdir it resumes from the newest checkpoint (networks,
  optimizers, schedule position, pools, RNG) and ends exactly where an uninterrupted run
  ends.

  Returns:
    The last record: step, epoch, the mean losses since the previous record, lr,
    iterations/s, and the path of the last sample grid.
  """
  parallel.maybe_initialize_distributed()  # first: it must precede any other JAX call
  validate_config(config)
  loop.check_workdir(workdir)  # before hours of data loading, not after
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  # The judge first: a missing one is an error before any data is read.
  judge = judges.load_judge(config.eval.judge) if config.eval.judge else None
  domains = unaligned.load_domains(config.data)
  feed = unaligned.UnalignedFeed(domains, config.batch_size, config.seed, mesh,
                                 on_device=config.data.on_device,
                                 num_threads=config.data.num_threads)
  gan = CycleGAN(config, mesh, feed)
  num_steps = total_steps(config, feed.epoch_size)
  logging.info("%s: |A| = %d, |B| = %d, epoch = %d iterations of batch %d, %d in all, "
               "%d devices, %s", domains.description, feed.num_a, feed.num_b,
               feed.epoch_size, config.batch_size, num_steps, mesh.devices.size,
               config.precision)
  gan.samples = [parallel.replicate(x, mesh) for x in sample_pairs(config, domains)]
  hooks = [loop.Every(config.sample_every, gan.samples_hook(workdir))]
  if judge is not None:
    hooks.append(loop.Every(config.eval.every, gan.evaluation_hook(
        runs.CycleGANJudge(config, domains, judge, config.eval.samples,
        kid_subsets=config.eval.kid_subsets))))
  return loop.train(gan, config, workdir, num_steps=num_steps, log_every=config.log_every,
                    checkpoint_every=config.checkpoint_every,
                    stop_after=config.stop_after_step, hooks=tuple(hooks), desc="cyclegan")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json)."""
  return metrics.read_config(workdir, "cyclegan")


def load_generators(workdir: str, config=None, step: int | None = None):
  """``(CycleGAN, g_params, meta)`` from a run's checkpoint (default: the newest)."""
  config = config or load_run_config(workdir)
  validate_config(config)
  gan = CycleGAN(config, parallel.make_mesh())
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, meta = ckpt.restore(gan.abstract_state(), step)
  finally:
    ckpt.close()
  return gan, state.g_params, meta
