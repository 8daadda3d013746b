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
epoch), both image pools and the RNG. One jitted, state-donating program does a whole
iteration: the feed (`jaxgan.data.unaligned`) gathers the pair batch on the device, and
`train_step` crops and flips it, takes the generators' step, passes the fakes through the
pools and takes the discriminators' step; it runs data-parallel over a ("data",) mesh of
every device with the state replicated.
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

from jaxgan import config as config_lib, images as image_io, ops, optim, parallel, precision
from jaxgan.data import augment, feed, unaligned
from jaxgan.evaluation import judges, runs as judged_runs
from jaxgan.models.cyclegan import PatchDiscriminator, ResnetGenerator
from jaxgan.train import loop, runs

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
  g_ema: Any = None  # both generators' parameters averaged (ema_decay > 0), or None


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
  return augment.to_unit_range(
      augment.random_flip(flip_key, augment.random_crop(crop_key, images, crop_size)))


# ----------------------------------------------------------------------------- set-up

def image_channels(config) -> int:
  """Fashion-MNIST is grayscale and tfds cycle_gan is RGB; folders say so in the config."""
  return {"fashion_mnist": 1, "tfds": 3}.get(config.data.source, config.data.channels)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Catches impossible settings before any data is read; each error names the fix."""
  d = config.data
  config_lib.choice(config, "data.source", ("tfds", "folder", "fashion_mnist"))
  config_lib.choice(config, "data.channels", (1, 3))
  config_lib.choice(config, "precision", ("fp32", "bf16"))
  config_lib.positive(config, "batch_size", "lr", "data.load_size", "data.crop_size",
                      "model.ngf", "model.ndf", "model.n_layers_d", "n_epochs",
                      "log_every", "sample_every", "checkpoint_every", "num_samples",
                      "data.prefetch")
  config_lib.non_negative(config, "n_epochs_decay", "pool_size", "lambda_identity",
                          "model.n_blocks", "model.dropout", "data.max_images",
                          "data.num_workers", "data.num_threads", "eval.samples",
                          "eval.reference_images")
  if config.eval.judge:
    config_lib.positive(config, "eval.every", "eval.kid_subsets")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1): e.g. "
                     "--config.ema_decay=0.999, or 0 to keep no average.")
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


# ----------------------------------------------------------------------------- the networks

def build_models(config):
  """The ResNet generator and the PatchGAN discriminator a config sets up (two of each are
  trained: their parameters live in the state under G_A, G_B, D_A, D_B)."""
  m = config.model
  policy = precision.get_policy(config.precision)
  dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
  generator = ResnetGenerator(ngf=m.ngf, n_blocks=m.n_blocks, nc=image_channels(config),
                              dropout=m.dropout, **dtypes)
  return generator, PatchDiscriminator(ndf=m.ndf, n_layers=m.n_layers_d, **dtypes)


def make_optimizers(config):
  """One Adam over both generators, one over both discriminators; lr lives in the state."""
  adam = optax.inject_hyperparams(optax.adam)
  make = lambda: adam(learning_rate=config.lr, b1=config.adam_b1, b2=config.adam_b2)
  return make(), make()


def create_state(config) -> TrainState:
  generator, discriminator = build_models(config)
  tx_g, tx_d = make_optimizers(config)
  # Threefry compiles one unrolled hash per parameter tensor: tens of seconds for four
  # networks on a CPU. The rbg generator draws the same N(0, 0.02) and compiles in about
  # a second; the steps keep threefry, whose streams do not depend on the sharding.
  init_key = jax.random.key(config.seed, impl="rbg")
  g_a_key, g_b_key, d_a_key, d_b_key = jax.random.split(init_key, 4)
  image_shape = (config.data.crop_size, config.data.crop_size, image_channels(config))
  x = jnp.zeros((1, *image_shape), jnp.float32)
  g_init = lambda k: generator.init(k, x)["params"]
  d_init = lambda k: discriminator.init(k, x)["params"]
  g_params = {"G_A": g_init(g_a_key), "G_B": g_init(g_b_key)}
  d_params = {"D_A": d_init(d_a_key), "D_B": d_init(d_b_key)}

  def pool():
    return None if config.pool_size == 0 else ImagePool.create(config.pool_size, image_shape)

  return TrainState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                    g_opt_state=tx_g.init(g_params), d_opt_state=tx_d.init(d_params),
                    fake_a_pool=pool(), fake_b_pool=pool(), rng=jax.random.PRNGKey(config.seed),
                    g_ema=g_params if config.ema_decay > 0 else None)


def initial_state(config, mesh) -> TrainState:
  """A fresh state, replicated over the mesh."""
  return jax.jit(functools.partial(create_state, config),
                 out_shardings=parallel.replicated(mesh))()


def abstract_state(config, mesh) -> TrainState:
  """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
  return parallel.abstract_replicated(
      jax.eval_shape(functools.partial(create_state, config)), mesh)


def networks(g_params, d_params, *, generator, discriminator, dropout: float,
             dropout_key=None):
  """The four networks as functions of images, as `generator_losses` wants them.

  With a ``dropout_key`` (and ``dropout`` > 0) every generator call draws a mask of its
  own, as each forward pass does in the reference; without one the generators run
  deterministically (evaluation).
  """
  calls = itertools.count()

  def gen(name):
    if dropout > 0 and dropout_key is not None:
      return lambda x: generator.apply(
          {"params": g_params[name]}, x, train=True,
          rngs={"dropout": jax.random.fold_in(dropout_key, next(calls))})
    return lambda x: generator.apply({"params": g_params[name]}, x)
  disc = lambda name: lambda x: discriminator.apply({"params": d_params[name]}, x)
  return gen("G_A"), gen("G_B"), disc("D_A"), disc("D_B")


# ----------------------------------------------------------------------------- the step

def epoch_of_step(step, batch_size: int, epoch_size: int):
  """The epoch the first pair of global batch ``step`` belongs to (works on arrays too)."""
  return step * batch_size // epoch_size


def total_steps(config, epoch_size: int) -> int:
  """Iterations for ``n_epochs + n_epochs_decay`` epochs of ``epoch_size`` pairs."""
  epochs = config.n_epochs + config.n_epochs_decay
  return -(-epochs * epoch_size // config.batch_size)


def learning_rate(step, *, schedule, batch_size: int, epoch_size: int):
  """The learning rate step ``step`` trains with: the schedule at its epoch."""
  return schedule(epoch_of_step(step, batch_size, epoch_size))


def train_step(state: TrainState, batch, *, nets: dict, tx_g, tx_d, learning_rate_fn,
               crop_size: int, lambda_a: float, lambda_b: float, lambda_identity: float,
               batch_sharding, ema_decay: float = 0.0):
  """One iteration on ``batch`` ({"a", "b"} uint8 at load size): crop and flip both, the
  generators' step, the pools, the discriminators' step, and with ``ema_decay`` > 0 the
  generators' average (`optim.ema_update`). Pure; jitted once."""
  key = jax.random.fold_in(state.rng, state.step)
  a_key, b_key, pool_a_key, pool_b_key, g_dropout, d_dropout = jax.random.split(key, 6)
  real_a = crop_flip(a_key, batch["a"], crop_size)
  real_b = crop_flip(b_key, batch["b"], crop_size)
  lr = learning_rate_fn(state.step)

  # The generators' step. Differentiating only g_params leaves the discriminators fixed.
  def g_objective(g_params):
    g_a, g_b, d_a, d_b = networks(g_params, state.d_params, dropout_key=g_dropout, **nets)
    total, losses, fakes = generator_losses(
        g_a, g_b, d_a, d_b, real_a, real_b, lambda_a=lambda_a, lambda_b=lambda_b,
        lambda_identity=lambda_identity)
    return total, (losses, fakes)

  g_grads, (g_losses, (fake_a, fake_b)) = jax.grad(g_objective, has_aux=True)(
      state.g_params)
  updates, g_opt_state = tx_g.update(
      g_grads, optim.set_learning_rate(state.g_opt_state, lr), state.g_params)
  g_params = optax.apply_updates(state.g_params, updates)

  # The discriminators see this iteration's fakes (from the generators before their
  # update, as in the reference) through the pools.
  fake_a_pool, fake_a = query_pool(state.fake_a_pool, pool_a_key,
                                   jax.lax.stop_gradient(fake_a))
  fake_b_pool, fake_b = query_pool(state.fake_b_pool, pool_b_key,
                                   jax.lax.stop_gradient(fake_b))
  fake_a = jax.lax.with_sharding_constraint(fake_a, batch_sharding)
  fake_b = jax.lax.with_sharding_constraint(fake_b, batch_sharding)

  def d_objective(d_params):
    _, _, d_a, d_b = networks(g_params, d_params, dropout_key=d_dropout, **nets)
    return discriminator_losses(d_a, d_b, real_a, real_b, fake_a, fake_b)

  d_grads, d_losses = jax.grad(d_objective, has_aux=True)(state.d_params)
  updates, d_opt_state = tx_d.update(
      d_grads, optim.set_learning_rate(state.d_opt_state, lr), state.d_params)
  d_params = optax.apply_updates(state.d_params, updates)

  new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params,
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                            fake_a_pool=fake_a_pool, fake_b_pool=fake_b_pool)
  if state.g_ema is not None:
    new_state = new_state.replace(g_ema=optim.ema_update(state.g_ema, g_params, ema_decay,
                                                         state.step))
  return new_state, {**g_losses, **d_losses, "lr": lr}


def make_task(config, mesh, data: unaligned.PairData) -> loop.Task:
  """The loop's `loop.Task` for a config and its training pairs."""
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  generator, discriminator = build_models(config)
  tx_g, tx_d = make_optimizers(config)
  step = loop.Program(functools.partial(
      train_step, nets=dict(generator=generator, discriminator=discriminator,
                            dropout=config.model.dropout),
      tx_g=tx_g, tx_d=tx_d,
      learning_rate_fn=functools.partial(
          learning_rate, schedule=optim.linear_decay_epochs(
              config.lr, config.n_epochs, config.n_epochs_decay),
          batch_size=config.batch_size, epoch_size=data.epoch_size),
      crop_size=config.data.crop_size, lambda_a=config.lambda_a, lambda_b=config.lambda_b,
      lambda_identity=config.lambda_identity, batch_sharding=feed.batch_sharding(mesh),
      ema_decay=config.ema_decay), data.feed)
  return loop.Task(
      what="a CycleGAN run",
      init_state=lambda: initial_state(config, mesh),
      abstract_state=lambda: abstract_state(config, mesh),
      batches=lambda start, state: data.feed.batches(start),
      step=step,
      summarize=functools.partial(summarize, batch_size=config.batch_size,
                                  epoch_size=data.epoch_size))


# ----------------------------------------------------------------------------- records

def summarize(step: int, stacked: dict, seconds: float, record: dict, *, batch_size: int,
              epoch_size: int) -> dict:
  """A log interval's record: mean losses, the learning rate, the speed."""
  return {"epoch": int(epoch_of_step(step - 1, batch_size, epoch_size)),
          **{k: float(np.mean(stacked[k])) for k in LOSS_NAMES},
          "lr": float(stacked["lr"][-1]),
          "iterations_per_sec": len(stacked["lr"]) / seconds,
          "skipped_images": (record.get("skipped_images", 0)
                             + int(np.sum(stacked["skipped_images"])))}


def _headline_scores(record: dict) -> str:
  return "".join(f", {d}_{k} {record[f'{d}_{k}']:.4g}" for d in ("AtoB", "BtoA")
                 for k in ("fd", "translation_rate") if f"{d}_{k}" in record)


def log_line(step: int, record: dict) -> str:
  losses = "  ".join(f"{k} {record[k]:.3f}" for k in LOSS_NAMES if k in record)
  if not losses:  # a hook-only record (evaluation, samples)
    return f"step {step}" + _headline_scores(record)
  return f"step {step} epoch {record.get('epoch', '-')}: {losses}"


def summary(record: dict) -> str:
  return (f"step {record['step']}: " + ", ".join(f"{k} {record[k]:.3f}" for k in LOSS_NAMES)
          + f"{_headline_scores(record)}; {record['wall_time']:.1f} s; samples in "
          f"{record.get('sample')}")


# ----------------------------------------------------------------------------- applying the generators

DIRECTIONS = {"AtoB": ("G_A", "G_B"), "BtoA": ("G_B", "G_A")}  # (forward, backward)


def generators(state: TrainState, raw: bool = False):
  """The generators' parameters translations use: their average when the run keeps one
  (and ``raw`` is False), else those training updates. InstanceNorm keeps no running
  statistics, so the averaged weights need nothing else."""
  return state.g_params if raw or state.g_ema is None else state.g_ema


def weights_used(config, raw: bool = False) -> str:
  """Which generators translations use, in words."""
  if config.get("ema_decay", 0) > 0 and not raw:
    return f"averaged weights (EMA, decay {config.ema_decay:g})"
  return "raw weights"


def check_direction(direction: str) -> None:
  if direction not in DIRECTIONS:
    raise ValueError(f"direction={direction!r}: use AtoB (G_A) or BtoA (G_B).")


def translate_pairs(g_params, images_a, images_b, *, generator):
  """uint8 test images of both domains → the lesson's six views of each pair, in [-1, 1]."""
  real_a, real_b = augment.to_unit_range(images_a), augment.to_unit_range(images_b)
  apply = lambda name, x: generator.apply({"params": g_params[name]}, x)
  fake_b, fake_a = apply("G_A", real_a), apply("G_B", real_b)
  return {"real_A": real_a, "fake_B": fake_b, "rec_A": apply("G_B", fake_b),
          "real_B": real_b, "fake_A": fake_a, "rec_B": apply("G_A", fake_a)}


def cycle(g_params, images, *, generator, names: tuple[str, str]):
  """uint8 images → their translations in [-1, 1] and each one's cycle error
  mean |rec − x| (in [-1, 1] units), through generators ``names`` (forward, backward)."""
  x = augment.to_unit_range(images)
  forward, backward = names
  fake = generator.apply({"params": g_params[forward]}, x)
  rec = generator.apply({"params": g_params[backward]}, fake)
  return fake, jnp.mean(jnp.abs(rec.astype(jnp.float32) - x), axis=(1, 2, 3))


def sample_grid(grid_fn, g_params, images_a, images_b) -> np.ndarray:
  """The lesson's 2×3 view per test pair, the pairs stacked top to bottom.

  Row 2i: real_A, fake_B, rec_A of pair i; row 2i+1: real_B, fake_A, rec_B.

  Args:
    grid_fn: `translate_pairs`, jitted.
    g_params: the generators' parameters.
    images_a, images_b: uint8 (n, S, S, C) test images.

  Returns:
    uint8 (2 + 2n(S + 2), 2 + 3(S + 2), C) image.
  """
  out = jax.device_get(grid_fn(g_params, images_a, images_b))
  rows = []
  for i in range(images_a.shape[0]):
    rows += [out["real_A"][i], out["fake_B"][i], out["rec_A"][i],
             out["real_B"][i], out["fake_A"][i], out["rec_B"][i]]
  return image_io.make_grid(np.stack(rows), ncol=3)


def translator(config, batch_size: int = 50):
  """``translate(g_params, direction, uint8 images) -> (uint8 translations, mean cycle
  error)``: what the judge (`jaxgan.evaluation.runs.CycleGANJudge`) scores, with the
  parameters bound. Compiled once, for every evaluation of a run."""
  generator, _ = build_models(config)
  programs = {d: ops.jit(functools.partial(cycle, generator=generator, names=names))
              for d, names in DIRECTIONS.items()}

  def translate(g_params, direction: str, images: np.ndarray):
    fakes, errors = [], []
    for i in range(0, len(images), batch_size):
      fake, err = jax.device_get(programs[direction](g_params, images[i:i + batch_size]))
      fakes.append(image_io.to_uint8(fake))
      errors.append(err)
    return np.concatenate(fakes), float(np.mean(np.concatenate(errors)))
  return translate


def whole_image_translator(config, g_params):
  """``translate(direction, image) -> image``: one uint8 (H, W, C) image of any size,
  translated whole, as the reference's test mode does (not cropped).

  The generator needs sides divisible by 4, so the image is reflect-padded at the bottom
  and right up to the next multiple of 4 and the output cropped back. jit keeps one
  compiled program per padded shape.
  """
  generator, _ = build_models(config)
  apply = ops.jit(lambda params, x: generator.apply(
      {"params": params}, augment.to_unit_range(x)))

  def translate(direction: str, image: np.ndarray) -> np.ndarray:
    check_direction(direction)
    h, w = image.shape[:2]
    if min(h, w) < 5:
      # Padded to 8, the reflection padding at quarter resolution still has 2 pixels.
      raise ValueError(f"a {h}x{w} image is too small to translate: the generator needs "
                       "at least 5 pixels a side.")
    x = np.pad(image[None], ((0, 0), (0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    y = apply(g_params[DIRECTIONS[direction][0]], x)
    return image_io.to_uint8(np.asarray(y)[0, :h, :w])
  return translate


def samples_hook(workdir: str, config, test_pairs):
  """A loop hook: the sample grid of the fixed test pairs (the averaged generators', if
  kept), as a PNG and in TensorBoard."""
  generator, _ = build_models(config)
  grid_fn = ops.jit(functools.partial(translate_pairs, generator=generator))

  def save(state, step, record):  # pylint: disable=unused-argument
    grid = sample_grid(grid_fn, generators(state), *test_pairs)
    path = os.path.join(workdir, "samples", f"iter_{step:06d}.png")
    if jax.process_index() == 0:
      image_io.save_png(path, grid)
    return {"sample": path, "samples": loop.Image(grid)}
  return save


def evaluation_hook(config, judge: judged_runs.CycleGANJudge):
  """A loop hook: both directions of the test split scored by ``judge``: FD, KID, ...,
  translation rate, cycle error."""
  translate = translator(config)

  def evaluate(state, step, record):  # pylint: disable=unused-argument
    clock = loop.Stopwatch()
    scores = judge.score(functools.partial(translate, generators(state)))
    out = {"eval_seconds": clock.elapsed()}
    for direction, s in scores.items():
      logging.info("step %d, %s judged by %s:\n%s", step, direction, config.eval.judge,
                   judged_runs.table(s))
      out.update(judged_runs.flatten(s, f"{direction}_"),
                 **judged_runs.references(s, f"{direction}_"))
    return out
  return evaluate


def test_pairs(config, domains: unaligned.Domains) -> tuple[np.ndarray, np.ndarray]:
  """The fixed test images of the sample grids: the first n of testA and testB, centred."""
  n = min(config.num_samples, len(domains.test_a), len(domains.test_b))
  take = lambda source: np.stack([source[i]["image"] for i in range(n)])
  crop = (config.data.crop_size,) * 2
  return (image_io.fit_to(take(domains.test_a), crop),
          image_io.fit_to(take(domains.test_b), crop))


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
  mesh = runs.start(config, workdir, validate=validate_config,
                    batch_sizes={"batch_size": config.batch_size})
  # The judge first: a missing one is an error before any data is read.
  judge = judges.load_judge(config.eval.judge) if config.eval.judge else None
  domains = unaligned.load_domains(config.data)
  d = config.data
  data = unaligned.make_feed(domains, config.batch_size, config.seed, mesh,
                             on_device=d.on_device, num_workers=d.num_workers,
                             num_threads=d.num_threads, prefetch=d.prefetch)
  num_steps = total_steps(config, data.epoch_size)
  logging.info("%s: |A| = %d, |B| = %d, epoch = %d iterations of batch %d, %d in all, "
               "%d devices, %s", domains.description, data.num_a, data.num_b,
               data.epoch_size, config.batch_size, num_steps, mesh.devices.size,
               config.precision)
  pairs = [parallel.replicate(x, mesh) for x in test_pairs(config, domains)]
  hooks = [loop.Every(config.sample_every, samples_hook(workdir, config, pairs))]
  if judge is not None:
    hooks.append(loop.Every(config.eval.every, evaluation_hook(config, judged_runs.CycleGANJudge(
        config, domains, judge, config.eval.samples, kid_subsets=config.eval.kid_subsets))))
  return loop.train(make_task(config, mesh, data), config, workdir, num_steps=num_steps,
                    log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                    stop_after=config.stop_after_step, hooks=tuple(hooks),
                    log_line=log_line, summary=summary, desc="cyclegan")
