"""Wasserstein GAN with the lesson's DCGAN networks (lesson 12, "wgan").

Reads like the lesson's ``train()``: for every generator iteration, train the critic
``d_iters`` times (100 now and then, else 5), each time clamping the critic's weights to
[-c, c] first, on a fresh real batch and a fresh fake one, with loss critic(real) -
critic(fake); then train the generator once to lower critic(G(z)). RMSProp (PyTorch's),
lr 1e-4 for both; optionally one more pass at lr/10 with fresh optimizers, as the lesson
does after the first epoch.

What is new is how it runs. The whole run's schedule (which generator iteration takes how
many critic steps, from which stream position) is worked out once (`schedule`) and drives
both the data and the loop. A generator iteration is two jitted programs with the state
donated: the critic steps, a ``lax.scan`` over a block of real batches (n, B, H, W, C)
(on CPUs too, now that `jaxgan.ops` keeps the scan's convolution gradients in Eigen's
layout), then the generator step. The state (both
networks, both optimizer states, the counters, the RNG and the fixed gallery noise) is one
pytree, replicated over a ("data",) mesh while batches are split over it, so the same code
is data-parallel on any number of devices; the shared loop (`jaxgan.train.loop`) logs,
draws galleries and checkpoints.

The improved WGAN (``loss='wgan-gp'``, Gulrajani et al. 2017) swaps clipping for a gradient
penalty on random interpolates and RMSProp for Adam; its critic must not use BatchNorm.

Sign convention is the lesson's: the critic scores real images *low*; Loss_D = D(real) -
D(fake) (so -Loss_D estimates the Wasserstein distance) and Loss_G = D(G(z)).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import checkpoint, images, metrics, models, ops, optim, parallel, precision
from jaxgan.data import unlabelled
from jaxgan.data.device import StreamedBatches
from jaxgan.evaluation import judges, runs
from jaxgan.train import config_checks, loop

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

SCHEDULES = ("lesson", "paper")


class GenIteration(NamedTuple):
  """One generator iteration of the run, as `schedule` lays it out."""
  phase: int  # 0, or 1 in the optional lr/10 pass
  phase_iter: int  # generator iterations of this phase before this one
  critic_steps: int  # real batches its critic steps consume
  first_batch: int  # the stream position of the first of them


def critic_iterations(phase_iter: int, total_iter: int, config) -> int:
  """The lesson's ``d_iters``: a long critic burst now and then, else ``critic_iters``.

  The critic has to be good before the generator can learn from it, hence the long bursts
  (``critic_iters_long``, 100) at the start and, to keep it good, every so often.

  * ``critic_schedule="lesson"``: the lesson calls ``train(1, False)`` for each pass, and
    ``gen_iterations`` restarts at 0 in each call: a burst at every ``long_critic_every``-th
    iteration of a phase, 0 included, and no "< 25" warm-up.
  * ``"paper"`` (the WGAN paper's code): one counter for the whole run; a burst while it is
    under ``long_critic_until`` (once per run) and at every ``long_critic_every``-th.

  A ``long_critic_until`` / ``long_critic_every`` of 0 switches that rule off.
  """
  every = config.long_critic_every
  if config.critic_schedule == "lesson":
    long_burst = every > 0 and phase_iter % every == 0
  else:
    long_burst = total_iter < config.long_critic_until or (every > 0 and total_iter % every == 0)
  return config.critic_iters_long if long_burst else config.critic_iters


def phase_lr_factors(config) -> list[float]:
  """Learning-rate multiplier of each phase: [1], or [1, 0.1] with the lesson's second pass."""
  return [1.0] + ([config.second_phase_lr_factor] if config.second_phase else [])


def schedule(config, steps_per_epoch: int) -> list[GenIteration]:
  """Every generator iteration of the run, worked out once; data and loop both follow it.

  A phase is ``num_gen_iters`` generator iterations, or ``num_epochs`` passes over the data:
  then, as in the lesson's ``while (j < d_iters) and (i < n)``, the last critic burst is cut
  short where the pass ends.
  """
  items, total, position = [], 0, 0
  for phase in range(len(phase_lr_factors(config))):
    budget = (0 if config.num_gen_iters > 0
              else unlabelled.epochs_to_batches(config.num_epochs, steps_per_epoch))
    phase_iter = used = 0
    while (phase_iter < config.num_gen_iters) if budget == 0 else (used < budget):
      n = critic_iterations(phase_iter, total, config)
      if budget:
        n = min(n, budget - used)
      items.append(GenIteration(phase, phase_iter, n, position))
      phase_iter, total, used, position = phase_iter + 1, total + 1, used + n, position + n
  return items


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
  config_checks.choice(config, "loss", LOSSES)
  config_checks.choice(config, "optimizer", OPTIMIZERS)
  config_checks.choice(config, "critic_schedule", SCHEDULES)
  config_checks.choice(config, "data.source", unlabelled.SOURCES)
  config_checks.choice(config, "model.critic_norm", ("batch", "layer", "none"))
  config_checks.choice(config, "model.upsample", ("", "nearest", "bilinear"))
  config_checks.choice(config, "data.channels", (1, 3))
  if precision.get_policy(config.precision).needs_loss_scaling:
    raise ValueError("precision=fp16 needs loss scaling, which the WGAN steps do not do: "
                     "set --config.precision=bf16 (same speed, no scaling needed) or fp32.")
  isize = config.model.isize
  if not isinstance(isize, int) or isize < 16 or isize & (isize - 1):
    # The networks double 4x4 up to isize: 16, 32, 64, 128, ... only.
    lower = 16 if not isinstance(isize, int) or isize < 32 else 1 << (isize.bit_length() - 1)
    raise ValueError(f"config.model.isize={isize} is not 16 times a power of two, which the "
                     f"DCGAN networks need (4x4 doubled up to isize): set "
                     f"--config.model.isize={lower} or {2 * lower}.")
  if config.loss == "wgan-gp" and config.model.critic_norm == "batch":
    raise ValueError("loss=wgan-gp penalises each example's own gradient, which BatchNorm's "
                     "batch statistics mix up: set --config.model.critic_norm=layer (or none).")
  config_checks.positive(config, "batch_size", "lr_g", "lr_d", "critic_iters",
                         "critic_iters_long", "model.nz", "model.ngf", "model.ndf",
                         "num_samples", "log_every", "sample_every", "checkpoint_every",
                         "second_phase_lr_factor", "data.prefetch")
  config_checks.non_negative(config, "gen_batch_size", "eval.reference_images")
  if config.eval.judge:
    config_checks.positive(config, "eval.every", "eval.samples", "eval.kid_subsets")
  if config.loss == "wgan":
    config_checks.positive(config, "clip_value")
  if config.num_gen_iters <= 0 and config.num_epochs <= 0:
    raise ValueError("set a run length: --config.num_epochs=1 (passes over the data per "
                     "phase) or --config.num_gen_iters=N (generator iterations per phase).")
  if not 0.0 < config.data.fraction <= 1.0:
    raise ValueError(f"config.data.fraction={config.data.fraction} must be in (0, 1]: e.g. "
                     "--config.data.fraction=0.1 for a 10% sample.")


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


def critic_steps(state: WGANState, data, block, *, take, generator, critic, critic_tx,
                 loss: str, clip_value: float, gp_weight: float, nz: int, batch_sharding,
                 unroll: bool = False):
  """n critic steps, one per real batch of ``block`` (n, B, ...); pure, jitted per n.

  ``take(data, block)`` turns the block into images (n, B, H, W, C) uint8: a gather from
  the data set in device memory, or the decoded images themselves. ``unroll`` unrolls the
  loop (only ``experiments.critic_scan_timing`` does, to compare). Returns the new state and the numbers the lesson
  prints, of the last critic step (``critic_weight_max``: the largest over the steps).
  """
  real_blocks = take(data, block)
  n = real_blocks.shape[0]
  critic_key = jax.random.fold_in(state.rng, 1)

  def one_critic_step(carry, xs):
    critic_net, gen_batch_stats = carry
    real_u8, position = xs
    # A key per real batch, so no two steps of the whole run share noise.
    key = jax.random.fold_in(critic_key, position)
    critic_net, gen_batch_stats, numbers = critic_step(
        critic_net, state.generator.replace(batch_stats=gen_batch_stats), real_u8, key,
        generator=generator, critic=critic, critic_tx=critic_tx, loss=loss,
        clip_value=clip_value, gp_weight=gp_weight, nz=nz, batch_sharding=batch_sharding)
    return (critic_net, gen_batch_stats), numbers

  positions = state.data_position + jnp.arange(n, dtype=jnp.int32)
  (critic_net, gen_batch_stats), numbers = jax.lax.scan(
      one_critic_step, (state.critic, state.generator.batch_stats), (real_blocks, positions),
      unroll=n if unroll else 1)
  new = state.replace(critic=critic_net,
                      generator=state.generator.replace(batch_stats=gen_batch_stats),
                      data_position=state.data_position + n)
  last = {k: v[-1] for k, v in numbers.items()}
  if "critic_weight_max" in numbers:
    last["critic_weight_max"] = jnp.max(numbers["critic_weight_max"])
  return new, last


def generator_iteration_end(state: WGANState, *, generator, critic, gen_tx, batch_size: int,
                            nz: int, batch_sharding):
  """The generator step that closes a generator iteration; pure, jitted once."""
  gen_key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.total_gen_iters)
  gen_net, critic_net, loss_g = generator_step(
      state.generator, state.critic, gen_key, generator=generator, critic=critic,
      gen_tx=gen_tx, batch_size=batch_size, nz=nz, batch_sharding=batch_sharding)
  new = state.replace(generator=gen_net, critic=critic_net, gen_iters=state.gen_iters + 1,
                      total_gen_iters=state.total_gen_iters + 1)
  return new, loss_g


def generate(gen_net: NetState, z, *, generator):
  """Images in [-1, 1] from noise, BatchNorm on its running statistics (the lesson's eval())."""
  return generator.apply({"params": gen_net.params, "batch_stats": gen_net.batch_stats}, z,
                         train=False)


class WGAN(loop.Task):
  """The two networks, their optimizers, the run's schedule and the jitted programs.

  Args:
    config: a config from ``experiments/configs/wgan.py`` (already validated).
    mesh: the ("data",) mesh.
    data: the real images (`jaxgan.data.unlabelled.make_image_data`), or None for blocks
      of decoded images passed in directly (tests, the benchmark, sampling).
  """
  what = "a WGAN run"

  def __init__(self, config: ml_collections.ConfigDict, mesh, data=None):
    self.config, self.mesh, self.data = config, mesh, data
    self.policy = precision.get_policy(config.precision)
    self.generator, self.critic = build_models(config, self.policy)
    self.gen_tx = make_optimizer(config, config.lr_g)
    self.critic_tx = make_optimizer(config, config.lr_d)
    self.block_sharding = parallel.data_sharding(mesh, batch_axis=1)
    self.skipped = 0
    self.factors = phase_lr_factors(config)
    self.schedule = schedule(config, data.steps_per_epoch) if data is not None else []
    take = data.take if data is not None else StreamedBatches.take
    self.arrays = data.arrays if data is not None else {}
    sharding = parallel.data_sharding(mesh)
    models_kw = dict(generator=self.generator, critic=self.critic, nz=config.model.nz,
                     batch_sharding=sharding)
    self._critic_steps = ops.jit(functools.partial(
        critic_steps, take=take, critic_tx=self.critic_tx, loss=config.loss,
        clip_value=config.clip_value, gp_weight=config.gp_weight, **models_kw),
        donate_argnums=(0,))
    self._generator_step = ops.jit(functools.partial(
        generator_iteration_end, gen_tx=self.gen_tx,
        batch_size=config.gen_batch_size or config.batch_size, **models_kw),
        donate_argnums=(0,))
    self._generate = ops.jit(functools.partial(generate, generator=self.generator))
    self._start_phase = ops.jit(
        functools.partial(start_phase, gen_tx=self.gen_tx, critic_tx=self.critic_tx),
        out_shardings=parallel.replicated(mesh), donate_argnums=(0,))

  # --- state

  def _create_state(self) -> WGANState:
    return create_state(self.generator, self.critic, self.gen_tx, self.critic_tx, self.config)

  def init_state(self) -> WGANState:
    return jax.jit(self._create_state, out_shardings=parallel.replicated(self.mesh))()

  def abstract_state(self) -> WGANState:
    """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
    return parallel.abstract_replicated(jax.eval_shape(self._create_state), self.mesh)

  def block_shape(self, n: int) -> tuple[int, ...]:
    isize = self.config.model.isize
    return (n, self.config.batch_size, isize, isize, self.config.data.channels)

  # --- one generator iteration

  def iteration(self, state: WGANState, block, start_phase: float | None = None):
    """The critic steps over ``block``, then the generator step.

    ``start_phase``: the lr factor of a phase that starts with this iteration.
    """
    if start_phase is not None:
      state = self._start_phase(state, jnp.float32(start_phase))
    state, numbers = self._critic_steps(state, self.arrays, block)
    state, loss_g = self._generator_step(state)
    return state, dict(numbers, Loss_G=loss_g)

  def generate(self, gen_net: NetState, z) -> jax.Array:
    return self._generate(gen_net, z)

  # --- training, as the loop drives it

  def batches(self, start: int):
    """For each generator iteration from ``start`` on: (its schedule entry, its block)."""
    items = self.schedule[start:]
    if not items:
      return
    blocks = self.data.blocks(items[0].first_batch, (item.critic_steps for item in items))
    try:
      for item in items:
        block, skipped = next(blocks)
        self.skipped += skipped
        yield item, block
    finally:
      blocks.close()

  def lower(self, state, block):
    """The two programs of a generator iteration, lowered for this block (the benchmark)."""
    return (self._critic_steps.lower(state, self.arrays, block),
            self._generator_step.lower(state))

  def train_step(self, state, batch):
    item, block = batch
    new_phase = item.phase > 0 and item.phase_iter == 0
    return self.iteration(state, block, self.factors[item.phase] if new_phase else None)

  def summarize(self, step: int, stacked: dict, seconds: float) -> dict:
    item = self.schedule[step - 1]
    real_batches = item.first_batch + item.critic_steps
    start = self.schedule[step - len(stacked["Loss_G"])].first_batch
    factor = self.factors[item.phase]
    # Means over the interval (the lesson prints the last values, which are noisy).
    record = {k: float(np.mean(v)) for k, v in stacked.items()}
    record.update(
        wasserstein_estimate=-record["Loss_D"], phase=item.phase,
        epoch=real_batches / self.data.steps_per_epoch, real_batches=real_batches,
        lr_g=self.config.lr_g * factor, lr_d=self.config.lr_d * factor,
        skipped_images=self.skipped, gen_iters_per_sec=len(stacked["Loss_G"]) / seconds,
        real_images_per_sec=(real_batches - start) * self.config.batch_size / seconds)
    if "critic_weight_max" in stacked:
      record["critic_weight_max"] = float(np.max(stacked["critic_weight_max"]))
    return record

  def log_line(self, step: int, r: dict) -> str:
    if "Loss_D" not in r:
      return f"gen iter {step}: gallery {r.get('gallery')}"
    return (f"gen iter {step}: Loss_D {r['Loss_D']:.5f}; Loss_G {r['Loss_G']:.5f}; D_real "
            f"{r['D_real']:.5f}; D_fake {r['D_fake']:.5f}; {r['gen_iters_per_sec']:.2f} it/s;"
            f" {r['skipped_images']} unreadable images skipped")

  def summary(self, record: dict) -> str:
    scores = "".join(f", {k} {record[k]:.4g}" for k in runs.HEADLINE if k in record)
    return (f"done: {record['step']} generator iterations, {record.get('real_batches')} real "
            f"batches, {record['wall_time']:.1f} s{scores}; gallery {record.get('gallery')}")

  def meta(self) -> dict:
    return {"skipped_images": self.skipped}

  def load_meta(self, meta: dict) -> None:
    self.skipped = int(meta.get("skipped_images", 0))

  def close(self) -> None:
    if self.data is not None:
      self.data.close()

  def samples(self, state: WGANState, z, batch_size: int = 500) -> np.ndarray:
    """uint8 images of the generator (eval mode) on noise ``z``, in batches."""
    return np.concatenate([
        images.to_uint8(jax.device_get(self.generate(state.generator, z[i:i + batch_size])))
        for i in range(0, len(z), batch_size)])

  def evaluation_hook(self, judge):
    """A loop hook: ``eval.samples`` samples on fixed noise, scored by ``judge``
    (`jaxgan.evaluation.runs.WGANJudge`), with the floor and ceiling of each score."""
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0xE7A1)
    z = jax.random.normal(key, (self.config.eval.samples, self.config.model.nz))

    def evaluate(state, step, record):  # pylint: disable=unused-argument
      clock = loop.Stopwatch()
      scores = judge.score(self.samples(state, z))
      logging.info("gen iter %d, judged by %s:\n%s", step, self.config.eval.judge,
                   runs.table(scores))
      return {**runs.flatten(scores), **runs.references(scores),
              "eval_seconds": clock.elapsed()}
    return evaluate

  def gallery_hook(self, workdir: str):
    """A loop hook: the generator on the run's fixed noise, 8 a row, as PNG and in TB."""
    def save(state, step, record):  # pylint: disable=unused-argument
      fakes = jax.device_get(self.generate(state.generator, state.fixed_noise))
      grid = images.make_grid(fakes, ncol=8)
      path = os.path.join(workdir, "samples", f"gen_{step:06d}.png")
      if jax.process_index() == 0:
        images.save_png(path, grid)
      return {"gallery": path, "samples": loop.Image(grid)}
    return save


# ----------------------------------------------------------------------------- runs

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains a WGAN in ``workdir``; started again there, resumes exactly where it stopped.

  Writes ``config.json``, ``metrics.jsonl`` + TensorBoard, galleries in ``samples/`` and
  orbax checkpoints in ``checkpoints/``. The lesson's ``train(niter)`` once per phase.

  Returns:
    The last record (losses, counters, speed), with the last gallery's path.
  """
  parallel.maybe_initialize_distributed()  # first: it must precede any other JAX call
  validate_config(config)
  loop.check_workdir(workdir)  # before hours of data loading, not after
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  parallel.check_batch_divisible(config.gen_batch_size or config.batch_size, mesh,
                                 "gen_batch_size")
  # The judge first: a missing one is an error before any data is read.
  judge = judges.load_judge(config.eval.judge) if config.eval.judge else None
  data = unlabelled.make_image_data(config.data, config.model.isize, config.batch_size,
                                    config.seed, mesh)
  wgan = WGAN(config, mesh, data)
  hooks = [loop.Every(config.sample_every, wgan.gallery_hook(workdir))]
  if judge is not None:
    clock = loop.Stopwatch()
    hooks.append(loop.Every(config.eval.every, wgan.evaluation_hook(
        runs.WGANJudge(config, judge, config.eval.samples,
        kid_subsets=config.eval.kid_subsets))))
    logging.info("evaluation reference (%s) built in %.1f s", config.eval.judge,
                 clock.elapsed())
  logging.info("%s: %d images, %d real batches of %d per epoch, %d generator iterations "
               "in %d phase(s), %d devices, %s, loss %s", config.data.source,
               data.num_images, data.steps_per_epoch, config.batch_size, len(wgan.schedule),
               len(wgan.factors), mesh.devices.size, config.precision, config.loss)
  return loop.train(wgan, config, workdir, num_steps=len(wgan.schedule),
                    log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                    stop_after=config.stop_after_gen_iters, hooks=tuple(hooks), desc="wgan")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json)."""
  return metrics.read_config(workdir, "wgan")


def restore_state(workdir: str, config=None, step: int | None = None):
  """``(wgan, state)`` of the latest (or ``step``) checkpoint of a run."""
  config = load_run_config(workdir) if config is None else config
  validate_config(config)
  wgan = WGAN(config, parallel.make_mesh())
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, _ = ckpt.restore(wgan.abstract_state(), step)
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
