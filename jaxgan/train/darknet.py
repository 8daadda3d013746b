"""Darknet on CIFAR-10 with one cycle, mixed precision and every local device.

Reads like the lesson: load the data, build the network, SGD with momentum and L2 weight
decay driven by the one-cycle schedules, fit for ``num_epochs`` as one cycle, report
accuracy. What is new is how it runs: the uint8 data set lives in device memory
(`jaxgan.data.feed.DeviceFeed`), and each iteration is one jitted program that gathers
its batch there, augments it (`train_step`), and updates the replicated state from the
global batch sharded over a ("data",) mesh; the shared loop (`jaxgan.train.loop`)
evaluates, logs and checkpoints once per epoch.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import config as config_lib, models, optim, parallel, precision
from jaxgan.data import augment, classification, feed
from jaxgan.data.classification import ImageClassificationData
from jaxgan.train import loop, runs


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # raw uint32 key; the step's key is fold_in(rng, step)
  loss_scale: Any  # precision.LossScale under fp16, else None


# ----------------------------------------------------------------------------- set-up

def validate_config(config: ml_collections.ConfigDict) -> None:
  """Catches impossible settings before any data is read."""
  classification.check_data_config(config.data)
  config_lib.choice(config, "model.name", ("darknet", "wrn_22", "wide_resnet"))
  config_lib.choice(config, "pad_mode", augment.PAD_MODES)
  precision.get_policy(config.precision)
  config_lib.positive(config, "batch_size", "eval_batch_size", "num_epochs", "max_lr")
  config_lib.non_negative(config, "data.max_images", "data.max_test_images")


def build_model(config: ml_collections.ConfigDict):
  """The network a config names, for its data set's classes, in its precision."""
  m = config.model
  policy = precision.get_policy(config.precision)
  num_classes = classification.FACTS[classification.data_set(config.data)].num_classes
  dtypes = dict(num_classes=num_classes, dtype=policy.compute_dtype,
                param_dtype=policy.param_dtype)
  if m.name == "darknet":
    return models.Darknet(num_blocks=tuple(m.num_blocks), nf=m.nf, bottleneck=m.bottleneck,
                          **dtypes)
  if m.name == "wrn_22":
    return models.wrn_22(**dtypes)
  return models.WideResNet(num_groups=m.num_groups, blocks_per_group=m.blocks_per_group,
                           k=m.k, start_nf=m.start_nf, **dtypes)


def make_optimizer(config, total_steps: int | None):
  """SGD with L2 driven by one cycle over ``total_steps``.

  ``total_steps=None`` (a run read back) gives constant schedules: the same optimizer
  state structure, which is all a restore needs.
  """
  if total_steps is None:
    return optim.sgd_l2(optax.constant_schedule(config.max_lr),
                        optax.constant_schedule(config.moms[0]), config.weight_decay)
  lr, momentum = optim.one_cycle(total_steps, config.max_lr, config.div, config.pct,
                                 tuple(config.moms))
  return optim.sgd_l2(lr, momentum, config.weight_decay)


def create_train_state(config, model, tx, image_shape=None) -> TrainState:
  """A fresh state; ``image_shape`` (H, W, C) defaults to the config's data set's."""
  policy = precision.get_policy(config.precision)
  if image_shape is None:
    image_shape = classification.FACTS[classification.data_set(config.data)].image_shape
  init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
      rng=train_key,
      loss_scale=(precision.LossScale.create(config.initial_loss_scale)
                  if policy.needs_loss_scaling else None))


def abstract_state(config, mesh, tx=None, image_shape=None) -> TrainState:
  """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
  tx = make_optimizer(config, None) if tx is None else tx
  shapes = jax.eval_shape(lambda: create_train_state(config, build_model(config), tx,
                                                     image_shape))
  return parallel.abstract_replicated(shapes, mesh)


def cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1).mean()


# ----------------------------------------------------------------------------- steps

def train_step(state: TrainState, batch, *, model, tx, mean, std, pad: int, pad_mode: str,
               compute_dtype):
  """One iteration on ``batch`` ({"image": uint8, "label"}): augment, one SGD update."""
  x, y = batch["image"], batch["label"]
  x = augment.flip_pad_crop(jax.random.fold_in(state.rng, state.step), x, pad, pad_mode)
  x = augment.normalize(x, mean, std, compute_dtype)
  scale = 1.0 if state.loss_scale is None else state.loss_scale.scale

  def loss_fn(params):
    logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x,
                                  train=True, mutable=["batch_stats"])
    loss = cross_entropy(logits, y)
    return loss * scale, (loss, logits, updates["batch_stats"])

  grads, (loss, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  if state.loss_scale is not None:
    grads, finite = state.loss_scale.unscale(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      batch_stats=batch_stats, opt_state=opt_state)
  # The values this update used: optax's inject_hyperparams evaluates the schedules at
  # the update's count and keeps them in the *new* state (the old holds the previous
  # step's).
  hyper = opt_state.hyperparams
  step_metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
                  "lr": hyper["learning_rate"], "momentum": hyper["momentum"]}
  if state.loss_scale is not None:
    # fp16 overflow: keep the old weights, statistics and momentum buffer and halve the
    # scale. The one-cycle position still advances, as under PyTorch AMP and fastai.
    skipped = state.replace(step=state.step + 1, opt_state=opt_state._replace(
        inner_state=state.opt_state.inner_state))
    new = precision.select_tree(finite, new, skipped)
    new = new.replace(loss_scale=state.loss_scale.update(finite))
    step_metrics.update(skipped=(~finite).astype(jnp.float32),
                        loss_scale=state.loss_scale.scale)
  return new, step_metrics


def eval_step(state: TrainState, batch, *, model, mean, std, compute_dtype, tta: bool):
  """Summed loss and correct count on one test ``batch`` (label −1 marks padding)."""
  x, y = batch["image"], batch["label"]
  x = augment.normalize(x, mean, std, compute_dtype)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  probs = jax.nn.softmax(model.apply(variables, x, train=False))
  if tta:  # average with the mirror image, the augmentation the network was trained on
    probs = (probs + jax.nn.softmax(model.apply(variables, x[:, :, ::-1], train=False))) / 2
  valid = y >= 0
  nll = -jnp.log(jnp.take_along_axis(probs, jnp.maximum(y, 0)[:, None], -1)[:, 0] + 1e-12)
  return {"loss": jnp.sum(jnp.where(valid, nll, 0.0)),
          "correct": jnp.sum(valid & (jnp.argmax(probs, -1) == y)),
          "count": jnp.sum(valid)}


def make_evaluator(config, model, test_data: ImageClassificationData, mesh):
  """``evaluate(state, tta=False) -> {"test_loss", "test_accuracy"}`` over the test set.

  The test set goes to device memory once, padded to whole batches of
  ``eval_batch_size`` (label −1 marks the padding), and is read in order.
  """
  n, size = len(test_data), config.eval_batch_size
  padded = -(-n // size) * size
  images = np.zeros((padded, *test_data.images.shape[1:]), np.uint8)
  labels = np.full((padded,), -1, np.int32)
  images[:n], labels[:n] = test_data.images, test_data.labels
  test_feed = feed.DeviceFeed({"image": images, "label": labels}, feed.in_order(size), mesh)
  settings = dict(model=model, mean=test_data.mean, std=test_data.std,
                  compute_dtype=precision.get_policy(config.precision).compute_dtype)
  programs = {tta: loop.Program(functools.partial(eval_step, tta=tta, **settings), test_feed,
                                donate_state=False) for tta in (False, True)}

  def evaluate(state: TrainState, tta: bool = False) -> dict:
    batches = test_feed.batches(0)
    sums = jax.device_get([programs[tta](state, next(batches).inputs)
                           for _ in range(padded // size)])
    count = sum(int(s["count"]) for s in sums)
    return {"test_loss": sum(float(s["loss"]) for s in sums) / count,
            "test_accuracy": sum(int(s["correct"]) for s in sums) / count}
  return evaluate


def make_task(config, mesh, train_data: ImageClassificationData,
              test_data: ImageClassificationData):
  """The loop's `loop.Task` for a config and its data, and the test-set evaluator."""
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  parallel.check_batch_divisible(config.eval_batch_size, mesh, "eval_batch_size")
  sampler = feed.EpochSampler(len(train_data), config.batch_size, config.seed)
  train_feed = feed.DeviceFeed({"image": train_data.images, "label": train_data.labels},
                               sampler, mesh)
  model = build_model(config)
  image_shape = train_data.images.shape[1:]
  tx = make_optimizer(config, sampler.steps_per_epoch * config.num_epochs)
  step = loop.Program(functools.partial(
      train_step, model=model, tx=tx, mean=train_data.mean, std=train_data.std,
      pad=config.pad, pad_mode=config.pad_mode,
      compute_dtype=precision.get_policy(config.precision).compute_dtype), train_feed)
  task = loop.Task(
      what="a Darknet run",
      init_state=lambda: jax.jit(lambda: create_train_state(config, model, tx, image_shape),
                                 out_shardings=parallel.replicated(mesh))(),
      abstract_state=lambda: abstract_state(config, mesh, tx, image_shape),
      batches=lambda start, state: train_feed.batches(start),
      step=step,
      summarize=functools.partial(summarize, config=config,
                                  steps_per_epoch=sampler.steps_per_epoch))
  return task, make_evaluator(config, model, test_data, mesh)


# ----------------------------------------------------------------------------- records

def summarize(step: int, stacked: dict, seconds: float, record: dict, *, config,
              steps_per_epoch: int) -> dict:
  """An epoch's record: train loss and accuracy, speed, the schedule's lr and momentum."""
  steps = len(stacked["loss"])
  fields = {"epoch": step / steps_per_epoch,
            "train_loss": float(np.mean(stacked["loss"])),
            "train_accuracy": float(np.mean(stacked["accuracy"])),
            "images_per_sec": steps * config.batch_size / seconds,
            "lr": float(stacked["lr"][-1]), "momentum": float(stacked["momentum"][-1])}
  if "skipped" in stacked:
    fields["skipped_steps"] = int(np.sum(stacked["skipped"]))
    fields["loss_scale"] = float(stacked["loss_scale"][-1])
    fields["skipped_in_a_row"] = check_fp16(step, stacked, record.get("skipped_in_a_row", 0),
                                            config.max_skipped_in_a_row)
  return fields


def check_fp16(step: int, stacked: dict, in_a_row: int, limit: int) -> int:
  """fp16 skips overflowing steps; a long run of them, or a scale at its floor of 1 that
  still overflows, means the training itself diverged: stop as for a NaN loss.

  Returns the overflowed steps in a row at the interval's end.
  """
  for skipped, scale in zip(stacked["skipped"], stacked["loss_scale"]):
    in_a_row = in_a_row + 1 if skipped else 0
    collapsed = skipped and scale <= 1.0
    if collapsed or in_a_row > limit:
      why = ("the loss scale fell to 1 and the gradients still overflow" if collapsed else
             f"{in_a_row} fp16 steps in a row overflowed")
      raise loop.NonFiniteError(
          f"{why} by step {step}: training diverged. Lower --config.max_lr, or train in "
          "bf16 (--config.precision=bf16); a rerun in the same --workdir resumes from the "
          "last checkpoint.")
  return in_a_row


def evaluation_hook(evaluate, target_accuracy: float):
  """A loop hook, each epoch: test loss and accuracy, and when the target was first hit."""
  def hook(state, step, record):  # pylint: disable=unused-argument
    evaluation = evaluate(state)
    reached = record.get("time_to_target")
    if reached is None and evaluation["test_accuracy"] >= target_accuracy:
      reached = record["wall_time"]
    return {**evaluation, "time_to_target": reached}
  return hook


def log_line(step: int, r: dict, *, steps_per_epoch: int) -> str:
  # A run stopped by a signal mid-epoch logs its partial epoch without a test pass.
  test = (f"test loss {r['test_loss']:.4f}, accuracy {r['test_accuracy']:.4f}, "
          if "test_loss" in r else "")
  return (f"epoch {r.get('epoch', step / steps_per_epoch):g}: train loss "
          f"{r.get('train_loss', float('nan')):.4f}, {test}"
          f"{r.get('images_per_sec', 0):.0f} images/s, {r.get('wall_time', 0):.1f} s")


def summary(record: dict, *, target_accuracy: float) -> str:
  reached = record.get("time_to_target")
  reached = (f"{target_accuracy:.0%} first reached at {reached:.1f} s"
             if reached is not None else f"{target_accuracy:.0%} not reached")
  return (f"final test accuracy {record['test_accuracy']:.4f}, total time "
          f"{record['wall_time']:.1f} s, {reached}")


# ----------------------------------------------------------------------------- runs

def load_data(config) -> tuple[ImageClassificationData, ImageClassificationData]:
  """The training and test sets a config names, cut to its ``data.max_*images``."""
  train_data = classification.load_split(config.data, "train")
  return train_data.head(config.data.max_images), load_test_data(config)


def load_test_data(config) -> ImageClassificationData:
  test_data = classification.load_split(config.data, "test")
  return test_data.head(config.data.max_test_images)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains for ``config.num_epochs`` (one cycle), evaluating and checkpointing each epoch.

  Started again with the same workdir, it resumes from the newest checkpoint and ends with
  the same parameters as a run never interrupted.

  Returns:
    The final record: test accuracy and loss, total time, time to the target accuracy.
  """
  mesh = runs.start(config, workdir, validate=validate_config, batch_sizes={
      "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size})
  train_data, test_data = load_data(config)
  task, evaluate = make_task(config, mesh, train_data, test_data)
  spe = len(train_data) // config.batch_size
  logging.info("%s: %d train / %d test images, %d steps per epoch, %d devices, %s",
               classification.data_set(config.data), len(train_data), len(test_data), spe,
               mesh.devices.size, config.precision)
  stop_after = -1 if config.stop_after_epoch < 0 else (config.stop_after_epoch + 1) * spe
  return loop.train(
      task, config, workdir, num_steps=spe * config.num_epochs, log_every=spe,
      checkpoint_every=spe, stop_after=stop_after,
      hooks=(loop.Every(spe, evaluation_hook(evaluate, config.target_accuracy)),),
      log_line=functools.partial(log_line, steps_per_epoch=spe),
      summary=functools.partial(summary, target_accuracy=config.target_accuracy),
      desc="darknet")


def evaluate_checkpoint(workdir: str, config: ml_collections.ConfigDict | None = None,
                        tta: bool = False, step: int | None = None) -> dict:
  """Test-set loss and accuracy of a saved checkpoint (``tta``: average with the flip)."""
  run = runs.restore(workdir, "darknet", step=step, config=config)
  evaluate = make_evaluator(run.config, build_model(run.config), load_test_data(run.config),
                            run.mesh)
  result = {"step": run.step, **evaluate(run.state, tta=tta), "tta": tta}
  print(f"checkpoint step {run.step}: test accuracy {result['test_accuracy']:.4f}, "
        f"test loss {result['test_loss']:.4f}{' (flip TTA)' if tta else ''}", flush=True)
  return result
