"""Optax pieces the three systems need and optax does not ship as such.

- ``one_cycle``: fastai 0.7's ``use_clr_beta=(div, pct, mom_max, mom_min)`` learning-rate and
  momentum schedules, exactly.
- ``sgd_l2``: PyTorch's SGD with momentum and L2 weight decay added to the gradient, with
  learning rate and momentum driven by schedules (``optax.inject_hyperparams``).
- ``torch_rmsprop``: RMSProp as PyTorch defines it (the WGAN reference's optimiser).
- ``clip_params``: WGAN's weight clipping.
- ``linear_decay_epochs``: CycleGAN's constant-then-linear learning rate, per epoch.
- ``set_learning_rate``: the learning rate held in an ``inject_hyperparams`` state, set.
- ``ema_update``: an exponential moving average of parameters, with a warm-up.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def one_cycle(total_steps: int, max_lr: float, div: float = 20, pct: float = 20,
              moms: tuple[float, float] = (0.95, 0.85)) -> tuple[Callable, Callable]:
  """Leslie Smith's one cycle as fastai 0.7 computes it.

  With ``c = int(total_steps * (1 - pct/100) / 2)`` the learning rate climbs linearly from
  ``max_lr/div`` to ``max_lr`` over ``c`` steps, falls back over the next ``c``, then anneals
  to ``max_lr/(100*div)``; momentum mirrors it (``moms[0]`` → ``moms[1]`` → ``moms[0]``) and
  stays at ``moms[0]`` in the tail.

  Args:
    total_steps: iterations in the whole run (fastai's ``nb``).
    max_lr: the peak learning rate.
    div: ratio of the peak to the starting learning rate.
    pct: percentage of iterations spent in the final annealing tail.
    moms: (momentum at the low learning rate, momentum at the peak).

  Returns:
    ``(lr_schedule, momentum_schedule)``, each a function of the step (int or traced array).
  """
  c = int(total_steps * (1 - pct / 100) / 2)
  if c < 1 or total_steps - 2 * c < 1:
    raise ValueError(f"one_cycle needs more steps: total_steps={total_steps} with pct={pct} "
                     "leaves an empty phase; train longer or use a larger pct.")
  mom_max, mom_min = moms
  tail = total_steps - 2 * c

  def position(step):
    """(phase fraction p, in_tail) with p the distance from the bottom of the triangle."""
    t = jnp.asarray(step, jnp.float32)
    up = t / c
    down = 1 - (t - c) / c
    return jnp.where(t <= c, up, down), t > 2 * c, (t - 2 * c) / tail

  def lr_schedule(step):
    p, in_tail, q = position(step)
    triangle = max_lr * (1 + p * (div - 1)) / div
    return jnp.where(in_tail, max_lr * (1 - 0.99 * q) / div, triangle)

  def momentum_schedule(step):
    p, in_tail, _ = position(step)
    return jnp.where(in_tail, mom_max, mom_max + p * (mom_min - mom_max))

  return lr_schedule, momentum_schedule


def _sgd_l2(learning_rate, momentum, weight_decay):
  # PyTorch SGD: g += wd * p; buf = momentum * buf + g; p -= lr * buf (no dampening).
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.trace(decay=momentum),
      optax.scale_by_learning_rate(learning_rate),
  )


def sgd_l2(learning_rate, momentum, weight_decay: float = 0.0):
  """PyTorch's ``SGD(lr, momentum, weight_decay)``; lr and momentum may be schedules.

  The current values are kept in the optimizer state (``opt_state.hyperparams``), so they
  are checkpointed and can be logged.
  """
  return optax.inject_hyperparams(_sgd_l2)(
      learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay)


def torch_rmsprop(learning_rate) -> optax.GradientTransformation:
  """``torch.optim.RMSprop(lr)``: v = 0.99 v + 0.01 g²; p -= lr · g / (√v + 1e-8).

  optax's defaults differ (decay 0.9, eps inside the root), which changes WGAN training.
  """
  return optax.inject_hyperparams(optax.rmsprop)(
      learning_rate=learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)


def clip_params(params, clip_value: float):
  """WGAN's weight clipping: every parameter into [-c, c]."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip_value, clip_value), params)


def linear_decay_epochs(base_lr: float, n_epochs: int, n_epochs_decay: int) -> Callable:
  """CycleGAN's schedule: ``base_lr`` for ``n_epochs``, then linearly to zero.

  Computed per epoch as the reference does:
  ``lr(epoch) = base_lr * (1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))``.
  """
  def schedule(epoch):
    epoch = jnp.asarray(epoch, jnp.float32)
    return base_lr * (1 - jnp.maximum(0.0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))
  return schedule


def set_learning_rate(opt_state, learning_rate):
  """An ``optax.inject_hyperparams`` state with its learning rate set to ``learning_rate``.

  The rate then lives in the optimizer state, so it is checkpointed with it: CycleGAN's
  per-epoch decay and the WGAN's second pass at lr/10 set it this way.
  """
  hyper = dict(opt_state.hyperparams)
  hyper["learning_rate"] = jnp.asarray(learning_rate, hyper["learning_rate"].dtype)
  return opt_state._replace(hyperparams=hyper)


def ema_update(average, params, decay: float, step):
  """An exponential moving average after ``step`` earlier updates, with a warm-up.

  ``decay_t = min(decay, (1 + t) / (10 + t))``: early on, when the parameters move fast
  and the average would lag far behind them, it forgets quickly; later it settles at
  ``decay`` (Yazıcı et al. 2019, "The Unusual Effectiveness of Averaging in GAN
  Training"; Karras et al. 2018 average their generator likewise). Returns the new
  average.
  """
  t = jnp.asarray(step, jnp.float32)
  decay_t = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  return jax.tree.map(lambda a, p: decay_t * a + (1.0 - decay_t) * p.astype(a.dtype),
                      average, params)
