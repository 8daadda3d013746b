"""Wasserstein GAN with the lesson's DCGAN networks (lesson 12, "wgan").

Reads like the lesson's ``train()``: for every generator iteration, train the critic
``d_iters`` times (100 now and then, else 5), each time clamping the critic's weights to
[-c, c] first, on a fresh real batch and a fresh fake one, with loss critic(real) -
critic(fake); then train the generator once to lower critic(G(z)). RMSProp (PyTorch's),
lr 1e-4 for both; optionally one more pass at lr/10 with fresh optimizers, as the lesson
does after the first epoch.

What is new is how it runs. The whole run's `schedule` (which generator iteration takes
how many critic steps, in which pass) is worked out once from the config. A generator
iteration is two jitted programs with the state donated: `critic_steps`, a ``lax.scan``
over a block of real batches (n, B, H, W, C) from the feed (`load_data`),
then `generator_step`. The state (both networks, both optimizer states, the counters, the
stream position, the RNG and the fixed gallery noise) is one pytree, replicated over a
("data",) mesh while batches are split over it, so the same code is data-parallel on any
number of devices; the shared loop (`jaxgan.train.loop`) logs, draws galleries and
checkpoints.

The improved WGAN (``loss='wgan-gp'``, Gulrajani et al. 2017) swaps clipping for a gradient
penalty on random interpolates and RMSProp for Adam; its critic must not use BatchNorm.
``loss='hinge'`` with ``model.spectral_norm`` is the hinge loss on a spectrally normalised
critic (Miyato et al. 2018). With Adam, ``lr_d`` and ``lr_g`` may differ: the two time-scale
update rule (TTUR, Heusel et al. 2017). ``ema_decay`` keeps an average of the generator's
weights to sample from.

Sign convention is the lesson's: the critic scores real images *low*; Loss_D = D(real) -
D(fake) (so -Loss_D estimates the Wasserstein distance) and Loss_G = D(G(z)).
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import config as config_lib, images, models, ops, optim, parallel, precision
from jaxgan.data import augment, classification, feed as feed_lib, folder, prepared
from jaxgan.evaluation import judges, runs as judged_runs
from jaxgan.models import dcgan
from jaxgan.train import loop, runs

LOSSES = ("wgan", "wgan-gp", "hinge")
OPTIMIZERS = ("rmsprop", "adam")
SCHEDULES = ("lesson", "paper")


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
  generator_ema: Any = None  # the generator's parameters averaged (ema_decay > 0), or None


# ----------------------------------------------------------------------------- the lesson's rules

class GenIteration(NamedTuple):
  """One generator iteration of the run, as `schedule` lays it out."""
  phase: int  # 0, or 1 in the optional lr/10 pass
  phase_iter: int  # generator iterations of this phase before this one
  critic_steps: int  # real batches its critic steps consume


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
  """Every generator iteration of the run, worked out once from the config.

  A phase is ``num_gen_iters`` generator iterations, or ``num_epochs`` passes over the data:
  then, as in the lesson's ``while (j < d_iters) and (i < n)``, the last critic burst is cut
  short where the pass ends.
  """
  items, total = [], 0
  for phase in range(len(phase_lr_factors(config))):
    budget = (0 if config.num_gen_iters > 0
              else max(1, math.ceil(config.num_epochs * steps_per_epoch)))
    phase_iter = used = 0
    while (phase_iter < config.num_gen_iters) if budget == 0 else (used < budget):
      n = critic_iterations(phase_iter, total, config)
      if budget:
        n = min(n, budget - used)
      items.append(GenIteration(phase, phase_iter, n))
      phase_iter, total, used = phase_iter + 1, total + 1, used + n
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
  config_lib.choice(config, "loss", LOSSES)
  config_lib.choice(config, "optimizer", OPTIMIZERS)
  config_lib.choice(config, "critic_schedule", SCHEDULES)
  config_lib.choice(config, "data.source", SOURCES)
  config_lib.choice(config, "model.critic_norm", ("batch", "layer", "none"))
  config_lib.choice(config, "model.upsample", ("", "nearest", "bilinear"))
  config_lib.choice(config, "data.channels", (1, 3))
  if precision.get_policy(config.precision).needs_loss_scaling:
    raise ValueError("precision=fp16 needs loss scaling, which the WGAN steps do not do: "
                     "set --config.precision=bf16 (same speed, no scaling needed) or fp32.")
  dcgan.check_isize(config.model.isize, "config.model.isize", "--config.model.isize")
  if config.model.spectral_norm and config.model.critic_norm == "batch":
    raise ValueError("a spectrally normalised critic goes without BatchNorm (Miyato et al. "
                     "2018): set --config.model.critic_norm=none.")
  if config.loss == "wgan-gp" and config.model.critic_norm == "batch":
    raise ValueError("loss=wgan-gp penalises each example's own gradient, which BatchNorm's "
                     "batch statistics mix up: set --config.model.critic_norm=layer (or none).")
  config_lib.positive(config, "batch_size", "lr_g", "lr_d", "critic_iters",
                      "critic_iters_long", "model.nz", "model.ngf", "model.ndf",
                      "num_samples", "log_every", "sample_every", "checkpoint_every",
                      "second_phase_lr_factor", "data.prefetch")
  config_lib.non_negative(config, "gen_batch_size", "eval.reference_images",
                          "data.num_workers", "data.num_threads")
  if config.eval.judge:
    config_lib.positive(config, "eval.every", "eval.samples", "eval.kid_subsets")
  if config.loss == "wgan":
    config_lib.positive(config, "clip_value")
  if config.num_gen_iters <= 0 and config.num_epochs <= 0:
    raise ValueError("set a run length: --config.num_epochs=1 (passes over the data per "
                     "phase) or --config.num_gen_iters=N (generator iterations per phase).")
  config_lib.non_negative(config, "data.margin")
  config_lib.choice(config, "data.placement", PLACEMENTS)
  if config.data.prepared and config.data.source == "fashion_mnist":
    raise ValueError("config.data.prepared applies to folder and lsun images (Fashion-MNIST "
                     "is held in memory already): set --config.data.prepared=''.")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1): e.g. "
                     "--config.ema_decay=0.999, or 0 to keep no average.")
  if config.data.source == "fashion_mnist" and config.data.margin:
    raise ValueError("config.data.margin applies to folder and lsun images: set "
                     "--config.data.margin=0 for fashion_mnist.")
  if not 0.0 <= config.data.heldout_fraction < 1.0:
    raise ValueError(f"config.data.heldout_fraction={config.data.heldout_fraction} must be "
                     "in [0, 1): e.g. --config.data.heldout_fraction=0.2 (the lesson's).")
  if not 0.0 < config.data.fraction <= 1.0:
    raise ValueError(f"config.data.fraction={config.data.fraction} must be in (0, 1]: e.g. "
                     "--config.data.fraction=0.1 for a 10% sample.")


def build_models(config):
  """The lesson's generator and critic, as a config sets them up."""
  m = config.model
  policy = precision.get_policy(config.precision)
  dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
  generator = models.DCGANGenerator(
      isize=m.isize, nz=m.nz, nc=config.data.channels, ngf=m.ngf,
      n_extra_layers=m.n_extra_layers, upsample=m.upsample or None, **dtypes)
  critic = models.DCGANCritic(isize=m.isize, nc=config.data.channels, ndf=m.ndf,
                              n_extra_layers=m.n_extra_layers, norm=m.critic_norm,
                              spectral_norm=m.spectral_norm, **dtypes)
  return generator, critic


def make_optimizer(config, learning_rate: float) -> optax.GradientTransformation:
  """PyTorch's RMSProp (the lesson), or Adam for WGAN-GP; lr lives in the state."""
  if config.optimizer == "rmsprop":
    return optim.torch_rmsprop(learning_rate)
  return optax.inject_hyperparams(optax.adam)(
      learning_rate=learning_rate, b1=config.adam_b1, b2=config.adam_b2)


def create_state(config) -> WGANState:
  generator, critic = build_models(config)
  gen_tx, critic_tx = make_optimizer(config, config.lr_g), make_optimizer(config, config.lr_d)
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
      fixed_noise=jax.random.normal(noise_key, (config.num_samples, nz), jnp.float32),
      generator_ema=g_vars["params"] if config.ema_decay > 0 else None)


def initial_state(config, mesh) -> WGANState:
  """A fresh state, replicated over the mesh."""
  return jax.jit(functools.partial(create_state, config),
                 out_shardings=parallel.replicated(mesh))()


def abstract_state(config, mesh) -> WGANState:
  """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
  return parallel.abstract_replicated(jax.eval_shape(functools.partial(create_state, config)),
                                      mesh)


def start_phase(state: WGANState, factor, *, gen_tx, critic_tx) -> WGANState:
  """The lesson's second pass: fresh optimizers at lr * factor, the schedule starts again."""
  def fresh(net, tx):
    opt_state = tx.init(net.params)
    lr = opt_state.hyperparams["learning_rate"] * factor
    return net.replace(opt_state=optim.set_learning_rate(opt_state, lr))

  return state.replace(generator=fresh(state.generator, gen_tx),
                       critic=fresh(state.critic, critic_tx),
                       phase=state.phase + 1, gen_iters=jnp.zeros((), jnp.int32))


# ----------------------------------------------------------------------------- the real images

SOURCES = ("fashion_mnist", "folder", "lsun")
PLACEMENTS = ("auto", "device", "host")


class ImageData(NamedTuple):
  """The real images of a WGAN run: its feed of real batches, and their count."""
  feed: Any  # feed.DeviceFeed | feed.StreamedFeed
  num_images: int
  steps_per_epoch: int  # real batches in a pass over the images (at least one)


def _source_hint(source: str) -> str:
  return {"folder": "set --config.data.path to a folder that holds image files",
          "lsun": "set --config.data.path to the LSUN LMDB folder (e.g. bedroom_train_lmdb)",
          }.get(source, "")


def load_data(data: ml_collections.ConfigDict, isize: int, batch_size: int, seed: int,
              mesh) -> ImageData:
  """The real images a WGAN config's ``data`` asks for, read and checked before training.

  * ``fashion_mnist``: the 60,000 training images framed to ``isize``
    (`classification.fit_fashion_mnist`), held whole in device memory
    (`feed.DeviceFeed`, a fresh permutation each epoch);
  * ``folder`` (any image folder, searched recursively) and ``lsun`` (an LSUN LMDB):
    decoded on the host by grain (`folder.rows_from`) and uploaded ahead of the step
    (`feed.StreamedFeed`); unreadable files are skipped and counted.

  Either way real batch k is a pure function of (seed, k): the stream position, one
  integer in the state, says where a resumed run continues. Folder and LMDB images: with
  ``data.heldout_fraction`` a fixed split (`folder.split_source`) keeps part of them for
  evaluation, never trained on, as fastai held out 20% of the lesson's LSUN; each image
  is scaled to cover ``isize`` × (``isize`` + ``data.margin``) and centre-cropped to it in
  one antialiased resize (the lesson read LSUN at 128, then resized to 64), and the
  critic's program takes a random ``isize`` × ``isize`` window of it (`critic_step`), as
  fastai's training transform scales the short side and crops at random.

  Raises:
    FileNotFoundError / ValueError: a missing or empty folder or database, with the fix.
  """
  if data.source not in SOURCES:
    raise ValueError(f"config.data.source={data.source!r} is not one of {SOURCES}: set "
                     "--config.data.source=fashion_mnist, folder or lsun.")
  if data.source == "fashion_mnist":
    if data.channels != 1:
      raise ValueError("Fashion-MNIST is grayscale: set --config.data.channels=1.")
    images = classification.fashion_mnist_images(isize, "train", data.data_dir,
                                                 data.max_images)
    if len(images) < batch_size:
      raise ValueError(f"batch_size={batch_size} is larger than the {len(images)} images: "
                       "lower --config.batch_size (or raise --config.data.max_images).")
    sampler = feed_lib.EpochSampler(len(images), batch_size, seed)
    return ImageData(feed_lib.DeviceFeed(images, sampler, mesh), len(images),
                     sampler.steps_per_epoch)

  if data.max_images:
    raise ValueError("config.data.max_images applies to fashion_mnist only: use "
                     "--config.data.fraction to sample a folder or LMDB.")
  if data.prepared:
    return _prepared_data(data, isize, batch_size, seed, mesh)
  if not data.path:
    raise ValueError(f"config.data.path is empty: {_source_hint(data.source)}.")
  try:
    # Stored isize × (isize + margin): the random crop to isize × isize happens in the
    # critic's program (`critic_step`), so batch k stays a function of (seed, k).
    source = folder.split_source(data, isize, seed, "train", width=isize + data.margin)
    source.check_readable()
  except (FileNotFoundError, ValueError) as e:
    # Same type, plus the config flag to change.
    raise type(e)(f"{e} ({_source_hint(data.source)}.)") from None
  loader = folder.rows_from(source, batch_size, seed=seed, num_workers=data.num_workers,
                            num_threads=data.num_threads)
  # Batches straddle epochs (make_loader), so an epoch is N / B batches, at least one.
  return ImageData(feed_lib.StreamedFeed(loader, mesh, data.prefetch), len(source),
                   max(1, len(source) // batch_size))


def _prepared_data(data, isize: int, batch_size: int, seed: int, mesh) -> ImageData:
  """Training images decoded once (`prepared`), in the decoding path's order: on the
  devices when ``data.placement`` says so or (``auto``) they fit in half their memory,
  else read from the host's memory-mapped shards by threads and uploaded ahead."""
  images = prepared.open_part(data.prepared, "train", size=isize, margin=data.margin,
                              channels=data.channels, heldout_fraction=data.heldout_fraction,
                              split_seed=data.split_seed)
  items = folder.sample_rows(len(images), data.fraction, seed)  # as split_source samples
  sampler = feed_lib.StreamSampler(len(items), batch_size, seed)
  order = prepared.PreparedOrder(images, items, sampler)
  local = mesh.local_devices if hasattr(mesh, "local_devices") else jax.local_devices()
  on_device = data.placement == "device" or (
      data.placement == "auto" and prepared.fits_on_device(images.nbytes, local))
  logging.info("Prepared images %s: %d at %s, %s.", data.prepared, len(images),
               "x".join(map(str, images.frame)),
               "held on the devices" if on_device else "read from the host")
  if on_device:
    feed = feed_lib.DeviceFeed(
        prepared.to_device(images, mesh), order.rows, mesh, on_device=True,
        skipped=lambda k: order.skipped(feed_lib.local_rows(sampler(k))))
  else:
    loader = prepared.host_loader(images, order, feed_lib.local_rows,
                                  data.num_threads or 4)
    feed = feed_lib.StreamedFeed(loader, mesh, data.prefetch)
  return ImageData(feed, len(items), sampler.steps_per_epoch)


def heldout_items(data) -> list[str]:
  """The images a folder or LSUN config holds out: LMDB keys or paths under the folder."""
  source = folder.split_source(data, size=1, seed=0, split="heldout")  # nothing decoded
  if isinstance(source, folder.LmdbSource):
    return [k.decode("utf-8", "backslashreplace") for k in source.keys(source.indices)]
  return [os.path.relpath(p, data.path) for p in source.paths]


def record_heldout(workdir: str, data) -> None:
  """Writes which images a folder or LSUN run holds out: ``WORKDIR/heldout.json`` and the
  held-out LMDB keys or file paths, one a line, in ``WORKDIR/heldout.txt`` (for a
  prepared set, the list its prepare wrote)."""
  if data.source == "fashion_mnist" or data.heldout_fraction <= 0 or jax.process_index():
    return
  if data.prepared:
    listing = os.path.join(data.prepared, "heldout.txt")
    if not os.path.exists(listing):
      raise prepared.PreparedError(f"{listing} is missing: rerun the prepare command for "
                                   f"{data.prepared} (it writes the list again).")
    with open(listing) as f:
      items = f.read().split("\n")[:-1]
  else:
    items = heldout_items(data)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "heldout.txt"), "w") as f:
    f.write("\n".join(items) + "\n")
  with open(os.path.join(workdir, "heldout.json"), "w") as f:
    json.dump({"source": data.source, "path": data.path, "prepared": data.prepared,
               "split_seed": data.split_seed, "heldout_fraction": data.heldout_fraction,
               "heldout": len(items), "items": "heldout.txt"}, f, indent=2)


# ----------------------------------------------------------------------------- steps

def _apply(model, params, batch_stats, x, **kwargs):
  """Train-mode forward pass; returns (output, updated ``batch_stats``: BatchNorm running
  statistics, spectral norms' power-iteration vectors)."""
  if not batch_stats:  # a critic without BatchNorm or spectral norm
    return model.apply({"params": params}, x, train=True, **kwargs), batch_stats
  out, updates = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                             mutable=["batch_stats"], **kwargs)
  return out, updates["batch_stats"]


def hinge_loss(d_real, d_fake):
  """The critic's hinge loss (Lim & Ye 2017; Miyato et al. 2018), in the lesson's sign
  convention (the critic scores real images *low*): mean(relu(1 + D(real))) +
  mean(relu(1 − D(fake))). The generator's loss stays mean(D(G(z)))."""
  return jnp.mean(jax.nn.relu(1.0 + d_real)) + jnp.mean(jax.nn.relu(1.0 - d_fake))


def _noise(key, batch_size: int, nz: int, batch_sharding):
  z = jax.random.normal(key, (batch_size, nz), jnp.float32)
  return jax.lax.with_sharding_constraint(z, batch_sharding)


def critic_step(critic_net: NetState, gen_net: NetState, real_u8, key, *, generator, critic,
                critic_tx, loss: str, clip_value: float, gp_weight: float, nz: int,
                batch_sharding):
  """One critic update on one real batch and one fresh fake batch.

  ``real_u8`` (B, isize, isize + margin, C): a batch stored wider than the networks' input
  gets a random isize × isize window per image, from ``key``.

  Returns the new critic, the generator's new BatchNorm statistics (the lesson's generator
  is in train mode while it makes fakes) and the step's numbers.
  """
  noise_key, eps_key = jax.random.split(key)
  isize = real_u8.shape[1]
  if real_u8.shape[2] > isize:  # stored with a margin: fastai's random crop, here
    real_u8 = augment.random_crop(jax.random.fold_in(key, 0xC409), real_u8, isize)
  params = critic_net.params
  if loss == "wgan":
    # The lesson clamps *before* the update, so the update itself may carry weights up to
    # one step past c; the next critic step clamps them again.
    params = optim.clip_params(params, clip_value)
  real = jax.lax.with_sharding_constraint(augment.to_unit_range(real_u8), batch_sharding)
  batch_size = real.shape[0]
  fake, gen_batch_stats = _apply(generator, gen_net.params, gen_net.batch_stats,
                                 _noise(noise_key, batch_size, nz, batch_sharding))
  fake = jax.lax.stop_gradient(fake)  # the lesson's V(fake.data): no gradient into G

  # A spectral norm's power iteration is stored once a step, by the real batch's pass;
  # the step's other passes iterate from it without storing.
  sn = {"update_stats": False} if critic.spectral_norm else {}

  def loss_fn(p):
    # Two forward passes, as in the lesson: BatchNorm normalises real and fake batches
    # separately, and its running statistics are updated by each.
    d_real, batch_stats = _apply(critic, p, critic_net.batch_stats, real)
    d_fake, batch_stats = _apply(critic, p, batch_stats, fake, **sn)
    if loss == "hinge":
      loss_d = hinge_loss(d_real, d_fake)
    else:
      loss_d = jnp.mean(d_real) - jnp.mean(d_fake)
    penalty = jnp.zeros((), jnp.float32)
    if loss == "wgan-gp":
      eps = jax.random.uniform(eps_key, (batch_size, 1, 1, 1), jnp.float32)
      penalty = gradient_penalty(lambda x: _apply(critic, p, batch_stats, x, **sn)[0], real,
                                 fake, eps, gp_weight)
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


def critic_steps(state: WGANState, real_blocks, *, generator, critic, critic_tx, loss: str,
                 clip_value: float, gp_weight: float, nz: int, batch_sharding):
  """One critic update per real batch of ``real_blocks`` (n, B, H, W, C) uint8: a scan.

  Returns the new state and the numbers the lesson prints, of the last critic step
  (``critic_weight_max``: the largest over the steps), with ``real_batches``, the stream
  position after them.
  """
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
      one_critic_step, (state.critic, state.generator.batch_stats), (real_blocks, positions))
  new = state.replace(critic=critic_net,
                      generator=state.generator.replace(batch_stats=gen_batch_stats),
                      data_position=state.data_position + n)
  last = {k: v[-1] for k, v in numbers.items()}
  if "critic_weight_max" in numbers:
    last["critic_weight_max"] = jnp.max(numbers["critic_weight_max"])
  return new, {**last, "real_batches": new.data_position}


def generator_step(state: WGANState, *, generator, critic, gen_tx, batch_size: int, nz: int,
                   batch_sharding, ema_decay: float = 0.0):
  """One generator update to lower critic(G(z)), closing a generator iteration.

  Its only input is the state's RNG. As in the lesson the critic runs in train mode
  (batch statistics, running averages updated) with the weights its last update left,
  unclamped. With ``ema_decay`` > 0 the averaged generator follows (`optim.ema_update`).
  """
  gen_net, critic_net = state.generator, state.critic
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.total_gen_iters)
  z = _noise(key, batch_size, nz, batch_sharding)

  def loss_fn(params):
    fake, gen_batch_stats = _apply(generator, params, gen_net.batch_stats, z)
    sn = {"update_stats": False} if critic.spectral_norm else {}  # the critic is held fixed
    scores, critic_batch_stats = _apply(critic, critic_net.params, critic_net.batch_stats,
                                        fake, **sn)
    return jnp.mean(scores), (gen_batch_stats, critic_batch_stats)

  (loss_g, (gen_batch_stats, critic_batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(gen_net.params)
  updates, opt_state = gen_tx.update(grads, gen_net.opt_state, gen_net.params)
  params = optax.apply_updates(gen_net.params, updates)
  new = state.replace(
      generator=NetState(params, gen_batch_stats, opt_state),
      critic=critic_net.replace(batch_stats=critic_batch_stats),
      gen_iters=state.gen_iters + 1, total_gen_iters=state.total_gen_iters + 1)
  if state.generator_ema is not None:
    new = new.replace(generator_ema=optim.ema_update(state.generator_ema, params, ema_decay,
                                               state.total_gen_iters))
  return new, {"Loss_G": loss_g}


def generate(gen_net: NetState, z, *, generator):
  """Images in [-1, 1] from noise, BatchNorm on its running statistics (the lesson's eval())."""
  return generator.apply({"params": gen_net.params, "batch_stats": gen_net.batch_stats}, z,
                         train=False)


def generator_fn(config):
  """`generate` for a config's generator, jitted: ``(gen_net, z) -> images``."""
  return ops.jit(functools.partial(generate, generator=build_models(config)[0]))


# Noise images the averaged generator's BatchNorm statistics are measured on (8 batches
# of 64 in one).
STATISTICS_SAMPLES = 512


def sampling_generator(state: WGANState, *, generator, nz: int, seed: int,
                       raw: bool = False) -> NetState:
  """The generator samples come from: the averaged one when the run keeps an average
  (and ``raw`` is False), else the one training updates.

  The averaged weights never ran in training, so the running BatchNorm statistics (those
  of the raw generator's recent batches) do not describe their activations. They are
  measured instead, as BigGAN's "standing statistics" are: one train-mode pass over
  `STATISTICS_SAMPLES` noise vectors drawn from ``seed``, whose batch statistics it keeps.
  """
  if raw or state.generator_ema is None:
    return state.generator
  z = jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 0x57A7),
                        (STATISTICS_SAMPLES, nz), jnp.float32)
  _, updates = generator.clone(bn_momentum=0.0).apply(
      {"params": state.generator_ema, "batch_stats": state.generator.batch_stats}, z,
      train=True, mutable=["batch_stats"])
  return NetState(state.generator_ema, updates["batch_stats"], None)


def sampling_fn(config, raw: bool = False):
  """`sampling_generator` for a config, jitted: ``state -> NetState``."""
  return ops.jit(functools.partial(sampling_generator, generator=build_models(config)[0],
                                   nz=config.model.nz, seed=config.seed, raw=raw))


class Programs(NamedTuple):
  """The jitted programs of a WGAN run, each bound once to its settings."""
  critic: loop.Program  # (state, block inputs) -> (state, numbers)
  generator: Any  # state -> (state, {"Loss_G"})
  start_phase: Any  # (state, lr factor) -> state
  generate: Any  # (generator NetState, z) -> images in [-1, 1]
  sampler: Any  # state -> the generator NetState samples come from (averaged if kept)


def make_programs(config, mesh, feed=None) -> Programs:
  """The programs for a config; ``feed``: where the critic's real blocks come from (None:
  the inputs are the decoded blocks themselves)."""
  generator, critic = build_models(config)
  gen_tx, critic_tx = make_optimizer(config, config.lr_g), make_optimizer(config, config.lr_d)
  nets = dict(generator=generator, critic=critic, nz=config.model.nz,
              batch_sharding=feed_lib.batch_sharding(mesh))
  return Programs(
      critic=loop.Program(functools.partial(
          critic_steps, critic_tx=critic_tx, loss=config.loss, clip_value=config.clip_value,
          gp_weight=config.gp_weight, **nets), feed),
      generator=ops.jit(functools.partial(
          generator_step, gen_tx=gen_tx,
          batch_size=config.gen_batch_size or config.batch_size, ema_decay=config.ema_decay,
          **nets), donate_argnums=(0,)),
      start_phase=ops.jit(functools.partial(start_phase, gen_tx=gen_tx, critic_tx=critic_tx),
                          out_shardings=parallel.replicated(mesh), donate_argnums=(0,)),
      generate=generator_fn(config),
      sampler=sampling_fn(config))


def iteration(state: WGANState, inputs, *, programs: Programs, phase_lr_factors):
  """One generator iteration: the critic steps over its block, then the generator step.

  ``inputs``: ``(GenIteration, block)``. The first iteration of a later phase starts it
  (`start_phase`) first.
  """
  item, block = inputs
  if item.phase > 0 and item.phase_iter == 0:
    state = programs.start_phase(state, jnp.float32(phase_lr_factors[item.phase]))
  state, numbers = programs.critic(state, block)
  state, gen_numbers = programs.generator(state)
  return state, {**numbers, **gen_numbers}


def make_task(config, mesh, feed, programs: Programs, plan: list[GenIteration],
              steps_per_epoch: int) -> loop.Task:
  """The loop's `loop.Task`: one step is one generator iteration of ``plan`` (`schedule`),
  its critic steps fed real blocks by ``feed``."""
  def batches(start, state):
    position = int(jax.device_get(state.data_position))  # where the stream resumes
    return _paired(plan[start:], feed.batches(
        position, (item.critic_steps for item in plan[start:])))

  return loop.Task(
      what="a WGAN run",
      init_state=lambda: initial_state(config, mesh),
      abstract_state=lambda: abstract_state(config, mesh),
      batches=batches,
      step=functools.partial(iteration, programs=programs,
                             phase_lr_factors=phase_lr_factors(config)),
      summarize=functools.partial(summarize, config=config, plan=plan,
                                  steps_per_epoch=steps_per_epoch))


def _paired(items, blocks):
  try:
    for item, block in zip(items, blocks):
      yield feed_lib.Batch((item, block.inputs), block.skipped)
  finally:
    blocks.close()


# ----------------------------------------------------------------------------- records

def summarize(step: int, stacked: dict, seconds: float, record: dict, *, config, plan,
              steps_per_epoch: int) -> dict:
  """A log interval's record: the lesson's numbers (means over the interval: the lesson
  prints the last values, which are noisy), the schedule's position and the speed."""
  iterations = len(stacked["Loss_G"])
  item = plan[step - 1]
  real_batches = int(stacked.pop("real_batches")[-1])
  skipped = record.get("skipped_images", 0) + int(np.sum(stacked.pop("skipped_images")))
  critic_batches = sum(it.critic_steps for it in plan[step - iterations:step])
  factor = phase_lr_factors(config)[item.phase]
  fields = {k: float(np.mean(v)) for k, v in stacked.items()}
  if "critic_weight_max" in stacked:
    fields["critic_weight_max"] = float(np.max(stacked["critic_weight_max"]))
  fields.update(
      wasserstein_estimate=(-fields["Loss_D"] if config.loss != "hinge"
                            else fields["D_fake"] - fields["D_real"]), phase=item.phase,
      epoch=real_batches / steps_per_epoch, real_batches=real_batches,
      lr_g=config.lr_g * factor, lr_d=config.lr_d * factor, skipped_images=skipped,
      gen_iters_per_sec=iterations / seconds,
      real_images_per_sec=critic_batches * config.batch_size / seconds)
  return fields


def log_line(step: int, r: dict) -> str:
  if "Loss_D" not in r:
    return f"gen iter {step}: gallery {r.get('gallery')}"
  return (f"gen iter {step}: Loss_D {r['Loss_D']:.5f}; Loss_G {r['Loss_G']:.5f}; D_real "
          f"{r['D_real']:.5f}; D_fake {r['D_fake']:.5f}; {r['gen_iters_per_sec']:.2f} it/s;"
          f" {r['skipped_images']} unreadable images skipped")


def summary(record: dict) -> str:
  scores = "".join(f", {k} {record[k]:.4g}" for k in judged_runs.HEADLINE if k in record)
  return (f"done: {record['step']} generator iterations, {record.get('real_batches')} real "
          f"batches, {record['wall_time']:.1f} s{scores}; gallery {record.get('gallery')}")


def samples(generate_fn, gen_net: NetState, z, batch_size: int = 500) -> np.ndarray:
  """uint8 images of the generator (eval mode) on noise ``z``, in batches."""
  return np.concatenate([
      images.to_uint8(jax.device_get(generate_fn(gen_net, z[i:i + batch_size])))
      for i in range(0, len(z), batch_size)])


def gallery_hook(workdir: str, programs: Programs):
  """A loop hook: the generator (the averaged one, if kept) on the run's fixed noise, 8 a
  row, as PNG and in TensorBoard."""
  def save(state, step, record):  # pylint: disable=unused-argument
    fakes = jax.device_get(programs.generate(programs.sampler(state), state.fixed_noise))
    grid = images.make_grid(fakes, ncol=8)
    path = os.path.join(workdir, "samples", f"gen_{step:06d}.png")
    if jax.process_index() == 0:
      images.save_png(path, grid)
    return {"gallery": path, "samples": loop.Image(grid)}
  return save


def evaluation_hook(config, judge: judged_runs.WGANJudge, programs: Programs):
  """A loop hook: ``eval.samples`` samples on fixed noise (of the averaged generator, if
  kept), scored by ``judge`` with the floor and ceiling of each score."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0xE7A1)
  z = jax.random.normal(key, (config.eval.samples, config.model.nz))

  def evaluate(state, step, record):  # pylint: disable=unused-argument
    clock = loop.Stopwatch()
    scores = judge.score(samples(programs.generate, programs.sampler(state), z))
    logging.info("gen iter %d, judged by %s:\n%s", step, config.eval.judge,
                 judged_runs.table(scores))
    return {**judged_runs.flatten(scores), **judged_runs.references(scores),
            "eval_seconds": clock.elapsed()}
  return evaluate


# ----------------------------------------------------------------------------- runs

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains a WGAN in ``workdir``; started again there, resumes exactly where it stopped.

  Writes ``config.json``, ``metrics.jsonl`` + TensorBoard, galleries in ``samples/`` and
  orbax checkpoints in ``checkpoints/``. The lesson's ``train(niter)`` once per phase.

  Returns:
    The last record (losses, counters, speed), with the last gallery's path.
  """
  mesh = runs.start(config, workdir, validate=validate_config, batch_sizes={
      "batch_size": config.batch_size,
      "gen_batch_size": config.gen_batch_size or config.batch_size})
  # The judge first: a missing one is an error before any data is read.
  judge = judges.load_judge(config.eval.judge) if config.eval.judge else None
  data = load_data(config.data, config.model.isize, config.batch_size, config.seed, mesh)
  record_heldout(workdir, config.data)
  plan = schedule(config, data.steps_per_epoch)
  programs = make_programs(config, mesh, data.feed)
  task = make_task(config, mesh, data.feed, programs, plan, data.steps_per_epoch)
  hooks = [loop.Every(config.sample_every, gallery_hook(workdir, programs))]
  if judge is not None:
    clock = loop.Stopwatch()
    reference = judged_runs.WGANJudge(config, judge, config.eval.samples,
                                      kid_subsets=config.eval.kid_subsets)
    hooks.append(loop.Every(config.eval.every,
                            evaluation_hook(config, reference, programs)))
    logging.info("evaluation reference (%s) built in %.1f s", config.eval.judge,
                 clock.elapsed())
  logging.info("%s: %d images, %d real batches of %d per epoch, %d generator iterations "
               "in %d phase(s), %d devices, %s, loss %s", config.data.source,
               data.num_images, data.steps_per_epoch, config.batch_size, len(plan),
               len(phase_lr_factors(config)), mesh.devices.size, config.precision,
               config.loss)
  return loop.train(task, config, workdir, num_steps=len(plan), log_every=config.log_every,
                    checkpoint_every=config.checkpoint_every,
                    stop_after=config.stop_after_gen_iters, hooks=tuple(hooks),
                    log_line=log_line, summary=summary, desc="wgan")


def sample(workdir: str, num: int = 64, seed: int = 0, step: int | None = None,
           raw: bool = False) -> np.ndarray:
  """``num`` generated images from a run's latest checkpoint, (num, H, W, C) uint8.

  From the averaged generator when the run keeps one, unless ``raw``. The same
  (workdir, num, seed) gives the same images; the noise is N(0, 1) from ``seed``.
  """
  if num < 1:
    raise ValueError(f"num={num} must be positive.")
  run = runs.restore(workdir, "wgan", step=step)
  z = jax.random.normal(jax.random.PRNGKey(seed), (num, run.config.model.nz), jnp.float32)
  net = sampling_fn(run.config, raw)(run.state)
  return images.to_uint8(jax.device_get(generator_fn(run.config)(net, z)))


def weights_used(config, raw: bool = False) -> str:
  """Which generator `sample` and the evaluation use, in words."""
  if config.get("ema_decay", 0) > 0 and not raw:
    return f"averaged weights (EMA, decay {config.ema_decay:g})"
  return "raw weights" + (" (the run keeps no average)" if not raw else "")
