"""Wasserstein GAN with the lesson's DCGAN networks (lesson 12, "wgan").

Reads like the lesson's ``train()``: for every generator iteration, train the critic
``d_iters`` times (100 while the generator is young and at every 500th iteration, else 5),
each time clamping the critic's weights to [-c, c] first, on a fresh real batch and a fresh
fake one, with loss critic(real) - critic(fake); then train the generator once to lower
critic(G(z)). RMSProp (PyTorch's), lr 1e-4 for both; optionally one more phase at lr/10
with fresh optimizers, as the lesson does after the first epoch.

What is new is how it runs. One generator iteration is **one jitted call**: a ``lax.scan``
over the critic steps consumes a block of real batches (n_critic, B, H, W, C), then the
generator step follows, all on the device with the state donated; one program is compiled
per distinct critic count (5 and 100). The state (both networks, both optimizer states,
the counters, the RNG and the fixed gallery noise) is one pytree, replicated over a
("data",) mesh while batches are split over it, so the same code is data-parallel on any
number of devices. The host mirrors the counters, so it never waits for the device except
to log, draw the gallery or checkpoint. On CPUs the critic steps run unrolled, a few per
call (``critic_chunks`` says why).

The improved WGAN (``loss='wgan-gp'``, Gulrajani et al. 2017) swaps clipping for a gradient
penalty on random interpolates and RMSProp for Adam; its critic must not use BatchNorm.

Sign convention is the lesson's: the critic scores real images *low*; Loss_D = D(real) -
D(fake) (so -Loss_D estimates the Wasserstein distance) and Loss_G = D(G(z)).
"""

from __future__ import annotations

import dataclasses
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

from jaxgan import checkpoint, images, metrics, models, optim, parallel, precision
from jaxgan.data import unlabelled
from jaxgan.train import common

LOSSES = ("wgan", "wgan-gp")
OPTIMIZERS = ("rmsprop", "adam")


@flax.struct.dataclass
class NetState:
  """One network and its optimizer."""
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class WGANState:
  generator: NetState
  critic: NetState
  phase: jax.Array  # 0, or 1 in the optional lr/10 pass
  gen_iters: jax.Array  # generator iterations in this phase: drives the critic schedule
  total_gen_iters: jax.Array  # generator iterations since the start (step of logs, files)
  data_position: jax.Array  # real batches consumed since the start: where the data resumes
  rng: jax.Array  # raw uint32 key; each step folds in its own counter
  fixed_noise: jax.Array  # (num_samples, nz): the gallery's noise, fixed for the whole run


# ----------------------------------------------------------------------------- the lesson's rules

def critic_iterations(gen_iters: int, config: ml_collections.ConfigDict) -> int:
  """The lesson's ``d_iters``: 100 while gen_iterations < 25 or every 500th, else 5.

  The critic has to be good before the generator can learn from it, hence the long bursts
  at the start and, to keep it good, every so often. All four numbers are config fields
  (``long_critic_until`` / ``long_critic_every`` of 0 switch a rule off).
  """
  long_burst = gen_iters < config.long_critic_until or (
      config.long_critic_every > 0 and gen_iters % config.long_critic_every == 0)
  return config.critic_iters_long if long_burst else config.critic_iters


def critic_chunks(n_critic: int, config) -> list[int]:
  """How one generator iteration's n critic steps are split into device calls.

  ``unrolled_chunk`` = 0 (accelerators): all n in one call, a rolled ``lax.scan``.
  k > 0 (CPUs): k per call, unrolled. XLA:CPU compiles convolution gradients inside a loop
  to a generic kernel (their layouts are not canonicalised for Eigen there): measured on
  2 CPU cores, 5 critic steps of the 32x32 DCGAN critic take 7.3 s as a scan and 0.26 s
  unrolled. Unrolling a burst of 100 would take minutes to compile, hence the chunks.
  """
  k = config.unrolled_chunk
  return [n_critic] if k <= 0 else [k] * (n_critic // k)


def phase_lr_factors(config) -> list[float]:
  """Learning-rate multiplier of each phase: [1], or [1, 0.1] with the lesson's second pass."""
  return [1.0] + ([config.second_phase_lr_factor] if config.second_phase else [])


def gen_iters_per_phase(config, steps_per_epoch: int) -> int:
  """Generator iterations in one phase: ``num_gen_iters``, or enough for ``num_epochs``.

  A phase of epochs ends with the first generator iteration that completes them (the last
  critic burst is not cut short at the epoch's end as the lesson's ``i < n`` does: every
  call keeps its compiled length, and the data simply streams on).
  """
  if config.num_gen_iters > 0:
    return config.num_gen_iters
  target = unlabelled.epochs_to_batches(config.num_epochs, steps_per_epoch)
  gen_iters = consumed = 0
  while consumed < target:
    consumed += critic_iterations(gen_iters, config)
    gen_iters += 1
  return gen_iters


def gradient_penalty(critic_fn, real, fake, eps, weight: float):
  """WGAN-GP's penalty ``weight * mean((||grad_x D(x_hat)||_2 - 1)^2)``.

  ``x_hat = eps * real + (1 - eps) * fake`` with ``eps`` (N, 1, 1, 1) in [0, 1]: the
  1-Lipschitz constraint is enforced along lines between the two distributions.
  ``critic_fn`` maps a batch to per-example scores; each score depends on its own example
  only (no BatchNorm), so the gradient of their sum holds every example's own gradient.
  """
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)
  # The tiny constant keeps the norm's gradient finite where a gradient vanishes.
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.astype(jnp.float32)), axis=(1, 2, 3)) + 1e-12)
  return weight * jnp.mean(jnp.square(norms - 1.0))


def largest_weight(params):
  """max |w| over every parameter: what weight clipping bounds."""
  return jnp.max(jnp.stack([jnp.max(jnp.abs(p)) for p in jax.tree.leaves(params)]))


# ----------------------------------------------------------------------------- set-up

def validate_config(config: ml_collections.ConfigDict) -> None:
  """Catches impossible settings before any data is read; each error names the fix."""
  common.check_choice("loss", config.loss, LOSSES)
  common.check_choice("optimizer", config.optimizer, OPTIMIZERS)
  common.check_choice("data.source", config.data.source, unlabelled.SOURCES)
  common.check_choice("model.critic_norm", config.model.critic_norm, ("batch", "layer", "none"))
  common.check_choice("model.upsample", config.model.upsample, ("", "nearest", "bilinear"))
  common.check_choice("data.channels", config.data.channels, (1, 3))
  if precision.get_policy(config.precision).needs_loss_scaling:
    raise ValueError("precision=fp16 needs loss scaling, which the WGAN steps do not do: "
                     "set --config.precision=bf16 (same speed, no scaling needed) or fp32.")
  isize = config.model.isize
  if not isinstance(isize, int) or isize < 16 or isize % 16:
    lower, upper = max(16, isize // 16 * 16), (isize // 16 + 1) * 16
    raise ValueError(f"config.model.isize={isize} is not a multiple of 16, which the DCGAN "
                     f"networks need (4x4 doubled up to isize): set --config.model.isize="
                     f"{lower} or {upper}.")
  if config.loss == "wgan-gp" and config.model.critic_norm == "batch":
    raise ValueError("loss=wgan-gp penalises each example's own gradient, which BatchNorm's "
                     "batch statistics mix up: set --config.model.critic_norm=layer (or none).")
  common.check_positive(config, "batch_size", "lr_g", "lr_d", "critic_iters",
                        "critic_iters_long", "model.nz", "model.ngf", "model.ndf",
                        "num_samples", "log_every", "sample_every", "checkpoint_every",
                        "second_phase_lr_factor", "data.prefetch")
  if config.loss == "wgan":
    common.check_positive(config, "clip_value")
  k = config.unrolled_chunk
  if k > 0 and (config.critic_iters % k or config.critic_iters_long % k):
    raise ValueError(f"unrolled_chunk={k} must divide critic_iters={config.critic_iters} and "
                     f"critic_iters_long={config.critic_iters_long}: set "
                     f"--config.unrolled_chunk={config.critic_iters} (or 0 on a GPU/TPU).")
  if config.num_gen_iters <= 0 and config.num_epochs <= 0:
    raise ValueError("set a run length: --config.num_epochs=1 (passes over the data per "
                     "phase) or --config.num_gen_iters=N (generator iterations per phase).")
  if not 0.0 < config.data.fraction <= 1.0:
    raise ValueError(f"config.data.fraction={config.data.fraction} must be in (0, 1]: e.g. "
                     "--config.data.fraction=0.1 for the lesson's 10% sample.")


def build_models(config, policy: precision.Policy):
  m = config.model
  dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
  generator = models.DCGANGenerator(
      isize=m.isize, nz=m.nz, nc=config.data.channels, ngf=m.ngf,
      n_extra_layers=m.n_extra_layers, upsample=m.upsample or None, **dtypes)
  critic = models.DCGANCritic(isize=m.isize, nc=config.data.channels, ndf=m.ndf,
                              n_extra_layers=m.n_extra_layers, norm=m.critic_norm, **dtypes)
  return generator, critic


def make_optimizer(config, learning_rate: float) -> optax.GradientTransformation:
  """PyTorch's RMSProp (the lesson), or Adam for WGAN-GP; lr lives in the state."""
  if config.optimizer == "rmsprop":
    return optim.torch_rmsprop(learning_rate)
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def with_lr_factor(opt_state, factor: float):
  """The optimizer state with its injected learning rate multiplied by ``factor``."""
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = hyper["learning_rate"] * factor
  return opt_state._replace(hyperparams=hyper)


def create_state(generator, critic, gen_tx, critic_tx, config) -> WGANState:
  g_key, c_key, train_key, noise_key = jax.random.split(jax.random.PRNGKey(config.seed), 4)
  isize, nc, nz = config.model.isize, config.data.channels, config.model.nz
  g_vars = generator.init(g_key, jnp.zeros((1, nz), jnp.float32), train=False)
  c_vars = critic.init(c_key, jnp.zeros((1, isize, isize, nc), jnp.float32), train=False)

  def net(variables, tx):
    return NetState(variables["params"], variables.get("batch_stats", {}),
                    tx.init(variables["params"]))

  zero = jnp.zeros((), jnp.int32)
  return WGANState(
      generator=net(g_vars, gen_tx), critic=net(c_vars, critic_tx), phase=zero,
      gen_iters=zero, total_gen_iters=zero, data_position=zero, rng=train_key,
      fixed_noise=jax.random.normal(noise_key, (config.num_samples, nz), jnp.float32))


def start_phase(state: WGANState, factor, *, gen_tx, critic_tx) -> WGANState:
  """The lesson's second pass: fresh optimizers at lr * factor, the schedule starts again."""
  def fresh(net, tx):
    return net.replace(opt_state=with_lr_factor(tx.init(net.params), factor))

  return state.replace(generator=fresh(state.generator, gen_tx),
                       critic=fresh(state.critic, critic_tx),
                       phase=state.phase + 1, gen_iters=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- steps

def _apply(model, params, batch_stats, x):
  """Train-mode forward pass; returns (output, updated BatchNorm running statistics)."""
  if not batch_stats:  # a critic without BatchNorm
    return model.apply({"params": params}, x, train=True), batch_stats
  out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"])
  return out, updates["batch_stats"]


def _noise(key, batch_size: int, nz: int, batch_sharding):
  z = jax.random.normal(key, (batch_size, nz), jnp.float32)
  return jax.lax.with_sharding_constraint(z, batch_sharding)


def critic_step(critic_net: NetState, gen_net: NetState, real_u8, key, *, generator, critic,
                critic_tx, loss: str, clip_value: float, gp_weight: float, nz: int,
                batch_sharding):
  """One critic update on one real batch and one fresh fake batch.

  Returns the new critic, the generator's new BatchNorm statistics (the lesson's generator
  is in train mode while it makes fakes) and the step's numbers.
  """
  noise_key, eps_key = jax.random.split(key)
  params = critic_net.params
  if loss == "wgan":
    # The lesson clamps *before* the update, so the update itself may carry weights up to
    # one step past c; the next critic step clamps them again.
    params = optim.clip_params(params, clip_value)
  real = jax.lax.with_sharding_constraint(unlabelled.to_unit_range(real_u8), batch_sharding)
  batch_size = real.shape[0]
  fake, gen_batch_stats = _apply(generator, gen_net.params, gen_net.batch_stats,
                                 _noise(noise_key, batch_size, nz, batch_sharding))
  fake = jax.lax.stop_gradient(fake)  # the lesson's V(fake.data): no gradient into G

  def loss_fn(p):
    # Two forward passes, as in the lesson: BatchNorm normalises real and fake batches
    # separately, and its running statistics are updated by each.
    d_real, batch_stats = _apply(critic, p, critic_net.batch_stats, real)
    d_fake, batch_stats = _apply(critic, p, batch_stats, fake)
    loss_d = jnp.mean(d_real) - jnp.mean(d_fake)
    penalty = jnp.zeros((), jnp.float32)
    if loss == "wgan-gp":
      eps = jax.random.uniform(eps_key, (batch_size, 1, 1, 1), jnp.float32)
      penalty = gradient_penalty(lambda x: _apply(critic, p, batch_stats, x)[0], real, fake,
                                 eps, gp_weight)
    return loss_d + penalty, (loss_d, jnp.mean(d_real), jnp.mean(d_fake), penalty,
                              batch_stats)

  grads, (loss_d, d_real, d_fake, penalty, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      params)
  updates, opt_state = critic_tx.update(grads, critic_net.opt_state, params)
  new_critic = NetState(optax.apply_updates(params, updates), batch_stats, opt_state)
  numbers = {"Loss_D": loss_d, "D_real": d_real, "D_fake": d_fake}
  if loss == "wgan":
    numbers["critic_weight_max"] = largest_weight(params)  # the weights this step used
  else:
    numbers["gradient_penalty"] = penalty
  return new_critic, gen_batch_stats, numbers


def generator_step(gen_net: NetState, critic_net: NetState, key, *, generator, critic,
                   gen_tx, batch_size: int, nz: int, batch_sharding):
  """One generator update to lower critic(G(z)); the critic is held fixed.

  As in the lesson the critic runs in train mode (batch statistics, running averages
  updated) with the weights its last update left, unclamped.
  """
  z = _noise(key, batch_size, nz, batch_sharding)

  def loss_fn(params):
    fake, gen_batch_stats = _apply(generator, params, gen_net.batch_stats, z)
    scores, critic_batch_stats = _apply(critic, critic_net.params, critic_net.batch_stats,
                                        fake)
    return jnp.mean(scores), (gen_batch_stats, critic_batch_stats)

  (loss_g, (gen_batch_stats, critic_batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(gen_net.params)
  updates, opt_state = gen_tx.update(grads, gen_net.opt_state, gen_net.params)
  new_gen = NetState(optax.apply_updates(gen_net.params, updates), gen_batch_stats, opt_state)
  return new_gen, critic_net.replace(batch_stats=critic_batch_stats), loss_g


def generator_iteration(state: WGANState, block, *, generator, critic, gen_tx, critic_tx,
                        loss: str, clip_value: float, gp_weight: float, nz: int,
                        batch_sharding, train_generator: bool = True, unroll: bool = False):
  """n critic steps over ``block`` (n, B, H, W, C) uint8, then one generator step.

  Pure; jitted once per n with the state donated. Returns the new state and the numbers:
  per critic step arrays of shape (n,) and the generator's scalar ``Loss_G``.

  ``train_generator=False`` stops after the critic steps: a long burst can then be run as
  several calls (see ``critic_chunks``). ``unroll`` unrolls the critic loop, for XLA:CPU.
  """
  n, batch_size = block.shape[0], block.shape[1]
  critic_key = jax.random.fold_in(state.rng, 1)
  gen_key = jax.random.fold_in(state.rng, 2)
  step_kw = dict(generator=generator, critic=critic, nz=nz, batch_sharding=batch_sharding)

  def one_critic_step(carry, xs):
    critic_net, gen_batch_stats = carry
    real_u8, position = xs
    # A key per real batch, so no two steps of the whole run share noise.
    key = jax.random.fold_in(critic_key, position)
    critic_net, gen_batch_stats, numbers = critic_step(
        critic_net, state.generator.replace(batch_stats=gen_batch_stats), real_u8, key,
        critic_tx=critic_tx, loss=loss, clip_value=clip_value, gp_weight=gp_weight,
        **step_kw)
    return (critic_net, gen_batch_stats), numbers

  positions = state.data_position + jnp.arange(n, dtype=jnp.int32)
  (critic_net, gen_batch_stats), numbers = jax.lax.scan(
      one_critic_step, (state.critic, state.generator.batch_stats), (block, positions),
      unroll=n if unroll else 1)
  if not train_generator:
    return state.replace(critic=critic_net,
                         generator=state.generator.replace(batch_stats=gen_batch_stats),
                         data_position=state.data_position + n), numbers
  gen_net, critic_net, loss_g = generator_step(
      state.generator.replace(batch_stats=gen_batch_stats), critic_net,
      jax.random.fold_in(gen_key, state.total_gen_iters), gen_tx=gen_tx,
      batch_size=batch_size, **step_kw)
  new = state.replace(generator=gen_net, critic=critic_net, gen_iters=state.gen_iters + 1,
                      total_gen_iters=state.total_gen_iters + 1,
                      data_position=state.data_position + n)
  return new, {**numbers, "Loss_G": loss_g}


def generate(gen_net: NetState, z, *, generator):
  """Images in [-1, 1] from noise, BatchNorm on its running statistics (the lesson's eval())."""
  return generator.apply({"params": gen_net.params, "batch_stats": gen_net.batch_stats}, z,
                         train=False)


class WGAN:
  """The two networks, their optimizers and the jitted programs that train them."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    validate_config(config)
    self.config, self.mesh = config, mesh
    self.policy = precision.get_policy(config.precision)
    self.generator, self.critic = build_models(config, self.policy)
    self.gen_tx = make_optimizer(config, config.lr_g)
    self.critic_tx = make_optimizer(config, config.lr_d)
    self.block_sharding = unlabelled.block_sharding(mesh)
    rep = parallel.replicated(mesh)
    iteration = functools.partial(
        generator_iteration, generator=self.generator, critic=self.critic,
        gen_tx=self.gen_tx, critic_tx=self.critic_tx, loss=config.loss,
        clip_value=config.clip_value, gp_weight=config.gp_weight, nz=config.model.nz,
        batch_sharding=parallel.data_sharding(mesh), unroll=config.unrolled_chunk > 0)
    self._iteration = {
        train_generator: jax.jit(functools.partial(iteration, train_generator=train_generator),
                                 donate_argnums=(0,))
        for train_generator in (True, False)}
    self._compiled = {}  # (critic count, train_generator) -> compiled program
    self._generate = jax.jit(functools.partial(generate, generator=self.generator))
    self._start_phase = jax.jit(
        functools.partial(start_phase, gen_tx=self.gen_tx, critic_tx=self.critic_tx),
        out_shardings=rep, donate_argnums=(0,))

  def init_state(self) -> WGANState:
    make = functools.partial(create_state, self.generator, self.critic, self.gen_tx,
                             self.critic_tx, self.config)
    return jax.jit(make, out_shardings=parallel.replicated(self.mesh))()

  def block_shape(self, n: int) -> tuple[int, ...]:
    isize = self.config.model.isize
    return (n, self.config.batch_size, isize, isize, self.config.data.channels)

  def compile(self, state: WGANState, n: int, train_generator: bool = True) -> float:
    """Compiles n critic steps (+ the generator step); returns the seconds it took."""
    clock = common.Stopwatch()
    block = jax.ShapeDtypeStruct(self.block_shape(n), jnp.uint8, sharding=self.block_sharding)
    self._compiled[n, train_generator] = (
        self._iteration[train_generator].lower(state, block).compile())
    return clock.elapsed()

  def compiled(self, n: int, train_generator: bool = True):
    return self._compiled[n, train_generator]

  def iteration(self, state: WGANState, block, train_generator: bool = True):
    """Critic steps over ``block``, then (by default) the generator step; one device call.

    Compiles on the first use of each block length.
    """
    key = (block.shape[0], train_generator)
    if key not in self._compiled:
      seconds = self.compile(state, *key)
      logging.info("%d critic steps%s compiled in %.1f s", key[0],
                   " + generator step" if train_generator else "", seconds)
    return self._compiled[key](state, block)

  def start_phase(self, state: WGANState, factor: float) -> WGANState:
    return self._start_phase(state, jnp.float32(factor))

  def generate(self, gen_net: NetState, z) -> jax.Array:
    return self._generate(gen_net, z)


# ----------------------------------------------------------------------------- the loop

@dataclasses.dataclass
class Progress:
  """The host's copy of the state's counters, so choosing n never waits for the device."""
  phase: int
  gen_iters: int
  total_gen_iters: int
  data_position: int

  @classmethod
  def of(cls, state: WGANState) -> "Progress":
    c = jax.device_get((state.phase, state.gen_iters, state.total_gen_iters,
                        state.data_position))
    return cls(*(int(v) for v in c))

  def advance(self, n_critic: int) -> None:
    self.gen_iters += 1
    self.total_gen_iters += 1
    self.data_position += n_critic


def save_gallery(wgan: WGAN, state: WGANState, workdir: str, step: int,
                 writer: metrics.MetricWriter) -> str:
  """The generator on the run's fixed noise, 8 per row, as PNG and in TensorBoard."""
  fakes = jax.device_get(wgan.generate(state.generator, state.fixed_noise))
  grid = images.make_grid(fakes, ncol=8)
  path = os.path.join(workdir, "samples", f"gen_{step:06d}.png")
  if writer.enabled:
    images.save_png(path, grid)
  writer.write_image(step, "samples", grid)
  return path


def _record(numbers, progress: Progress, config, steps_per_epoch: int, skipped: int,
            lr_factor: float, speed: dict, clock: common.Stopwatch) -> dict:
  numbers = jax.device_get(numbers)
  loss_d = float(numbers["Loss_D"][-1])
  record = {
      # The lesson prints the last critic step's numbers and the generator's loss.
      "Loss_D": loss_d, "Loss_G": float(numbers["Loss_G"]),
      "D_real": float(numbers["D_real"][-1]), "D_fake": float(numbers["D_fake"][-1]),
      "wasserstein_estimate": -loss_d,
      "phase": progress.phase, "epoch": progress.data_position / steps_per_epoch,
      "real_batches": progress.data_position, "lr_g": config.lr_g * lr_factor,
      "lr_d": config.lr_d * lr_factor, "skipped_images": skipped,
      "wall_time": clock.elapsed(), **speed,
  }
  if "critic_weight_max" in numbers:
    record["critic_weight_max"] = float(np.max(numbers["critic_weight_max"]))
  if "gradient_penalty" in numbers:
    record["gradient_penalty"] = float(numbers["gradient_penalty"][-1])
  return record


class _Run:
  """One run in a workdir: the trainer, its data and outputs, and the host's counters."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    validate_config(config)
    parallel.maybe_initialize_distributed()
    mesh = parallel.make_mesh()
    parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
    self.config, self.workdir = config, workdir
    self.data = unlabelled.make_image_data(config.data, config.model.isize, config.batch_size,
                                           config.seed, mesh)
    self.wgan = WGAN(config, mesh)
    self.ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                        config.keep_checkpoints)
    self.state = self.wgan.init_state()
    meta = {"elapsed": 0.0, "skipped_images": 0}
    if self.ckpt.latest_step() is not None:
      self.state, meta = self.ckpt.restore(self.state)
      logging.info("Resuming at generator iteration %d in %s", meta["total_gen_iters"],
                   workdir)
    metrics.write_config(workdir, config)
    self.writer = metrics.MetricWriter(workdir)
    self.clock = common.Stopwatch(meta["elapsed"])
    self.progress = Progress.of(self.state)
    self.skipped = int(meta["skipped_images"])
    self.factors = phase_lr_factors(config)
    self.phase_length = gen_iters_per_phase(config, self.data.steps_per_epoch)
    self.last_saved = self.ckpt.latest_step()
    self.record, self.gallery = {}, None
    logging.info("%s: %d images, %d real batches of %d per epoch, %d generator iterations "
                 "per phase, %d phase(s), %d devices, %s, loss %s", config.data.source,
                 self.data.num_images, self.data.steps_per_epoch, config.batch_size,
                 self.phase_length, len(self.factors), mesh.devices.size, config.precision,
                 config.loss)

  def next_phase(self) -> bool:
    """Moves on to the next phase when this one is done; False when no phase is left."""
    p = self.progress
    if p.gen_iters < self.phase_length:
      return True
    if p.phase + 1 >= len(self.factors):
      return False
    self.state = self.wgan.start_phase(self.state, self.factors[p.phase + 1])
    p.phase, p.gen_iters = p.phase + 1, 0
    logging.info("Phase %d of %d: fresh optimizers at lr x %g", p.phase + 1,
                 len(self.factors), self.factors[p.phase])
    return True

  def train_phase(self) -> bool:
    """Generator iterations to the end of the phase; True if stop_after_gen_iters hit."""
    config, p = self.config, self.progress
    # The schedule of critic counts tells the data source what to prepare ahead.
    counts = (k for g in itertools.count(p.gen_iters)
              for k in critic_chunks(critic_iterations(g, config), config))
    blocks = self.data.blocks(p.data_position, counts)
    left = self.phase_length - p.gen_iters
    bar = iter(common.progress(range(left), left,
                               f"phase {p.phase + 1}/{len(self.factors)}"))
    self._interval = (common.Stopwatch(), p.total_gen_iters, p.data_position)
    try:
      while p.gen_iters < self.phase_length:
        chunks = critic_chunks(critic_iterations(p.gen_iters, config), config)
        for i in range(len(chunks)):
          block, skipped = next(blocks)
          self.state, numbers = self.wgan.iteration(self.state, block,
                                                    train_generator=i == len(chunks) - 1)
          self.skipped += skipped
        p.advance(sum(chunks))
        next(bar, None)
        total = p.total_gen_iters
        if total % config.log_every == 0 or p.gen_iters == self.phase_length:
          self.log(numbers)
        if total % config.sample_every == 0:
          self.save_gallery()
        stop = 0 <= config.stop_after_gen_iters <= total
        if total % config.checkpoint_every == 0 or stop:
          self.save()
        if stop:
          logging.info("Stopping after generator iteration %d (stop_after_gen_iters); run "
                       "the same command again to continue.", total)
          return True
    finally:
      blocks.close()
      bar.close()
    return False

  def log(self, numbers) -> None:
    """The only regular host sync: the last iteration's numbers, and the speed since."""
    jax.block_until_ready(numbers)
    p = self.progress
    clock, start_iters, start_position = self._interval
    seconds = clock.elapsed()
    speed = {"gen_iters_per_sec": (p.total_gen_iters - start_iters) / seconds,
             "real_images_per_sec":
                 (p.data_position - start_position) * self.config.batch_size / seconds}
    self.record = _record(numbers, p, self.config, self.data.steps_per_epoch, self.skipped,
                          self.factors[p.phase], speed, self.clock)
    self.writer.write_scalars(p.total_gen_iters, self.record)
    logging.info("gen iter %d: Loss_D %.5f; Loss_G %.5f; D_real %.5f; D_fake %.5f; %.2f it/s;"
                 " %d unreadable images skipped", p.total_gen_iters, self.record["Loss_D"],
                 self.record["Loss_G"], self.record["D_real"], self.record["D_fake"],
                 speed["gen_iters_per_sec"], self.skipped)
    self._interval = (common.Stopwatch(), p.total_gen_iters, p.data_position)

  def save_gallery(self) -> None:
    self.gallery = save_gallery(self.wgan, self.state, self.workdir,
                                self.progress.total_gen_iters, self.writer)

  def save(self) -> None:
    p = self.progress
    if self.last_saved == p.total_gen_iters:
      return
    self.ckpt.save(p.total_gen_iters, self.state, {
        "total_gen_iters": p.total_gen_iters, "data_position": p.data_position,
        "skipped_images": self.skipped, "elapsed": self.clock.elapsed()})
    self.last_saved = p.total_gen_iters

  def finish(self) -> None:
    """The end of training: the last gallery and checkpoint, unless already written."""
    total = self.progress.total_gen_iters
    if self.gallery is None or not self.gallery.endswith(f"gen_{total:06d}.png"):
      self.save_gallery()
    self.save()
    logging.info("Done: %d generator iterations, %d real batches, %.1f s; gallery %s", total,
                 self.progress.data_position, self.clock.elapsed(), self.gallery)

  def close(self) -> dict:
    self.ckpt.close()
    self.writer.close()
    self.data.close()
    p = self.progress
    return {**self.record, "total_gen_iters": p.total_gen_iters,
            "data_position": p.data_position, "skipped_images": self.skipped,
            "gallery": self.gallery, "wall_time": self.clock.elapsed()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains a WGAN in ``workdir``; started again there, resumes exactly where it stopped.

  Writes ``config.json``, ``metrics.jsonl`` + TensorBoard, galleries in ``samples/`` and
  orbax checkpoints in ``checkpoints/``. The lesson's ``train(niter)`` once per phase.

  Returns:
    The last logged record (losses, counters, speed), plus the last gallery's path.
  """
  run = _Run(config, workdir)
  stopped = False
  while not stopped and run.next_phase():
    stopped = run.train_phase()
  if not stopped:
    run.finish()
  return run.close()


# ----------------------------------------------------------------------------- after training

def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json)."""
  return metrics.read_config(workdir, "a WGAN run")


def restore_state(workdir: str, config=None, step: int | None = None):
  """``(wgan, state)`` of the latest (or ``step``) checkpoint of a run."""
  config = load_run_config(workdir) if config is None else config
  wgan = WGAN(config, parallel.make_mesh())
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, _ = ckpt.restore(wgan.init_state(), step)
  finally:
    ckpt.close()
  return wgan, state


def sample(workdir: str, num: int = 64, seed: int = 0, step: int | None = None) -> np.ndarray:
  """``num`` generated images from a run's latest checkpoint, (num, H, W, C) uint8.

  The same (workdir, num, seed) gives the same images; the noise is N(0, 1) from ``seed``.
  """
  if num < 1:
    raise ValueError(f"num={num} must be positive.")
  wgan, state = restore_state(workdir, step=step)
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, wgan.config.model.nz), jnp.float32)
  return images.to_uint8(jax.device_get(wgan.generate(state.generator, z)))


def benchmark_setup(variant: str | None = None, batch: int | None = None,
                    precision: str | None = None):  # pylint: disable=redefined-outer-name
  """A generator iteration (5 critic steps + 1 generator step) ready to time.

  The block of real batches is random uint8 of the real shape already on the device, so
  the timing is of the training math (data decoding is the host's business).

  Returns:
    ``(step_fn, carry, images_per_call, compiled, compile_seconds, config)`` with
    ``step_fn(carry) -> carry`` one generator iteration and ``images_per_call`` the real
    images it consumes (critic_iters x batch).
  """
  # The configs live with the entry points; only this helper reaches for them.
  from experiments.configs import wgan as wgan_configs  # pylint: disable=g-import-not-at-top

  config = common.with_overrides(wgan_configs.get_config(variant or "lsun"),
                                 batch_size=batch, precision=precision)
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  wgan = WGAN(config, mesh)
  state = wgan.init_state()
  chunks = critic_chunks(config.critic_iters, config)
  rng = np.random.default_rng(0)
  block = jax.device_put(rng.integers(0, 256, wgan.block_shape(chunks[0]), np.uint8),
                         wgan.block_sharding)
  compile_seconds = sum(wgan.compile(state, chunks[0], train_generator)
                        for train_generator in {True, len(chunks) > 1})

  def step(carry):
    s, b = carry
    for i in range(len(chunks)):
      s, _ = wgan.iteration(s, b, train_generator=i == len(chunks) - 1)
    return s, b

  return (step, (state, block), config.critic_iters * config.batch_size,
          wgan.compiled(chunks[0]), compile_seconds, config)
