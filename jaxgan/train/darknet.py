"""Darknet on CIFAR-10 with one cycle, mixed precision and every local device.

Reads like the lesson: load the data, build the network, SGD with momentum and L2 weight
decay driven by the one-cycle schedules, fit for ``num_epochs`` as one cycle, report
accuracy. What is new is how it runs: the uint8 data set lives in device memory, each
iteration is one jitted step that picks its batch, augments it on the device, and updates
the replicated state from the global batch sharded over a ("data",) mesh.
"""

import functools
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxgan import checkpoint, metrics, models, optim, parallel, precision
from jaxgan.data import augment
from jaxgan.data.classification import ImageClassificationData, load_classification
from jaxgan.train import common


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
  common.check_choice("dataset", config.dataset, ("cifar10", "fashion_mnist"))
  common.check_choice("model.name", config.model.name, ("darknet", "wrn_22", "wide_resnet"))
  precision.get_policy(config.precision)
  common.check_positive(config, "batch_size", "eval_batch_size", "num_epochs", "max_lr")


def build_model(config: ml_collections.ConfigDict, num_classes: int,
                policy: precision.Policy):
  m = config.model
  dtypes = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype)
  if m.name == "darknet":
    return models.Darknet(num_blocks=tuple(m.num_blocks), num_classes=num_classes, nf=m.nf,
                          bottleneck=m.bottleneck, **dtypes)
  if m.name == "wrn_22":
    return models.wrn_22(num_classes=num_classes, **dtypes)
  return models.WideResNet(num_groups=m.num_groups, blocks_per_group=m.blocks_per_group,
                           k=m.k, start_nf=m.start_nf, num_classes=num_classes, **dtypes)


def make_optimizer(config, total_steps: int):
  lr, momentum = optim.one_cycle(total_steps, config.max_lr, config.div, config.pct,
                                 tuple(config.moms))
  return optim.sgd_l2(lr, momentum, config.weight_decay)


def create_train_state(model, tx, image_shape, seed: int,
                       policy: precision.Policy, initial_loss_scale: float = 2.0**15):
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = jax.jit(functools.partial(model.init, train=False))(
      init_key, jnp.zeros((1, *image_shape), jnp.float32))
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
      rng=train_key,
      loss_scale=(precision.LossScale.create(initial_loss_scale)
                  if policy.needs_loss_scaling else None))


def cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1).mean()


# ----------------------------------------------------------------------------- steps

def train_step(state: TrainState, images, labels, perm, totals, *, model, tx, mean, std,
               pad: int, batch_size: int, steps_per_epoch: int, compute_dtype, batch_sharding):
  """One iteration: gather the batch, augment it, one SGD update. Pure; jitted once."""
  i = state.step % steps_per_epoch
  idx = jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))
  x = jax.lax.with_sharding_constraint(images[idx], batch_sharding)
  y = jax.lax.with_sharding_constraint(labels[idx], batch_sharding)
  x = augment.flip_pad_crop(jax.random.fold_in(state.rng, state.step), x, pad)
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
  if state.loss_scale is not None:
    # fp16 overflow: keep the old weights and statistics, halve the scale, move on.
    new = precision.select_tree(finite, new, state.replace(step=state.step + 1))
    new = new.replace(loss_scale=state.loss_scale.update(finite))
    totals = dict(totals, skipped=totals["skipped"] + (~finite).astype(jnp.int32))
  correct = jnp.sum(jnp.argmax(logits, -1) == y)
  totals = dict(totals, loss=totals["loss"] + loss, correct=totals["correct"] + correct,
                steps=totals["steps"] + 1)
  return new, totals


def eval_step(state: TrainState, images, labels, start, *, model, mean, std, batch_size: int,
              compute_dtype, batch_sharding, tta: bool):
  """Loss and correct count on ``batch_size`` test images from ``start`` (label −1 = padding)."""
  x = jax.lax.dynamic_slice_in_dim(images, start, batch_size)
  y = jax.lax.dynamic_slice_in_dim(labels, start, batch_size)
  x = jax.lax.with_sharding_constraint(x, batch_sharding)
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


class Classifier:
  """A data set on the devices and the jitted steps that train and evaluate on it."""

  def __init__(self, config, mesh, train_data: ImageClassificationData | None,
               test_data: ImageClassificationData):
    self.config, self.mesh = config, mesh
    self.policy = precision.get_policy(config.precision)
    parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
    parallel.check_batch_divisible(config.eval_batch_size, mesh, "eval_batch_size")
    self.num_classes = test_data.num_classes
    self.image_shape = test_data.images.shape[1:]
    self.model = build_model(config, self.num_classes, self.policy)
    self.mean, self.std = test_data.mean, test_data.std
    sharding = parallel.data_sharding(mesh)
    common_kw = dict(model=self.model, mean=self.mean, std=self.std,
                     compute_dtype=self.policy.compute_dtype, batch_sharding=sharding)

    if train_data is not None:
      self.num_train = len(train_data)
      self.steps_per_epoch = self.num_train // config.batch_size
      if self.steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the "
                         f"{self.num_train} training images: lower --config.batch_size.")
      self.total_steps = self.steps_per_epoch * config.num_epochs
      self.tx = make_optimizer(config, self.total_steps)
      # Whole uint8 data set on every device: the step gathers its own batch.
      self.train_images = parallel.replicate(train_data.images, mesh)
      self.train_labels = parallel.replicate(train_data.labels, mesh)
      self._train_step = jax.jit(
          functools.partial(train_step, tx=self.tx, pad=config.pad,
                            batch_size=config.batch_size,
                            steps_per_epoch=self.steps_per_epoch, **common_kw),
          donate_argnums=(0, 4))
    else:
      self.tx = make_optimizer(config, max(3, config.num_epochs))  # structure only

    # Test set padded to whole batches; label −1 marks the padding.
    n_test = len(test_data)
    padded = -(-n_test // config.eval_batch_size) * config.eval_batch_size
    images = np.zeros((padded, *self.image_shape), np.uint8)
    labels = np.full((padded,), -1, np.int32)
    images[:n_test], labels[:n_test] = test_data.images, test_data.labels
    self.test_images = parallel.replicate(images, mesh)
    self.test_labels = parallel.replicate(labels, mesh)
    self._eval_step = {tta: jax.jit(functools.partial(
        eval_step, batch_size=config.eval_batch_size, tta=tta, **common_kw))
                       for tta in (False, True)}
    self._permutation = jax.jit(
        lambda key, epoch, n: jax.random.permutation(jax.random.fold_in(key, epoch), n),
        static_argnums=2, out_shardings=parallel.replicated(mesh))

  def init_state(self) -> TrainState:
    state = create_train_state(self.model, self.tx, self.image_shape, self.config.seed,
                               self.policy, self.config.initial_loss_scale)
    return parallel.replicate(state, self.mesh)

  def epoch_permutation(self, state: TrainState, epoch: int):
    # A key of its own so the data order does not depend on the augmentation stream.
    return self._permutation(jax.random.fold_in(state.rng, 2**30), epoch, self.num_train)

  def zero_totals(self):
    zeros = {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.int32),
             "steps": jnp.zeros((), jnp.int32), "skipped": jnp.zeros((), jnp.int32)}
    return parallel.replicate(zeros, self.mesh)

  def compile(self, state, perm, totals) -> float:
    """Compiles the train step ahead of time; returns the seconds it took."""
    clock = common.Stopwatch()
    self._train_step = self._train_step.lower(
        state, self.train_images, self.train_labels, perm, totals).compile()
    return clock.elapsed()

  @property
  def compiled_train_step(self):
    """The executable after ``compile`` (its ``cost_analysis`` feeds the benchmark)."""
    return self._train_step

  def train_step(self, state, perm, totals):
    return self._train_step(state, self.train_images, self.train_labels, perm, totals)

  def evaluate(self, state: TrainState, tta: bool = False) -> dict:
    step = self._eval_step[tta]
    sums = [step(state, self.test_images, self.test_labels, jnp.int32(start))
            for start in range(0, self.test_labels.shape[0], self.config.eval_batch_size)]
    sums = jax.device_get(sums)
    count = sum(int(s["count"]) for s in sums)
    return {"test_loss": sum(float(s["loss"]) for s in sums) / count,
            "test_accuracy": sum(int(s["correct"]) for s in sums) / count}


# ----------------------------------------------------------------------------- loop

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains for ``config.num_epochs`` (one cycle), evaluating and checkpointing each epoch.

  Started again with the same workdir, it resumes from the newest checkpoint and ends with
  the same parameters as a run never interrupted.

  Returns:
    The final record: test accuracy and loss, total time, time to the target accuracy.
  """
  validate_config(config)
  parallel.maybe_initialize_distributed()
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  parallel.check_batch_divisible(config.eval_batch_size, mesh, "eval_batch_size")
  train_data = load_classification(config.dataset, "train", config.data_dir)
  test_data = load_classification(config.dataset, "test", config.data_dir)
  if config.max_train_examples:
    train_data = _head(train_data, config.max_train_examples)
  if config.max_test_examples:
    test_data = _head(test_data, config.max_test_examples)

  clf = Classifier(config, mesh, train_data, test_data)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  state = clf.init_state()
  start_epoch, meta = 0, {"elapsed": 0.0, "time_to_target": None}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    start_epoch = meta["epoch"] + 1
    logging.info("Resuming from epoch %d (step %d) in %s", start_epoch, int(state.step), workdir)
  metrics.write_config(workdir, config)
  writer = metrics.MetricWriter(workdir)
  clock = common.Stopwatch(meta["elapsed"])
  time_to_target = meta["time_to_target"]
  logging.info("%s: %d train / %d test images, %d steps per epoch, %d devices, %s",
               config.dataset, clf.num_train, len(test_data), clf.steps_per_epoch,
               mesh.devices.size, config.precision)

  if start_epoch < config.num_epochs:
    compile_time = clf.compile(state, clf.epoch_permutation(state, start_epoch),
                               clf.zero_totals())
    logging.info("train step compiled in %.1f s", compile_time)
  record = {}
  last_epoch = config.num_epochs - 1
  if config.stop_after_epoch >= 0:
    last_epoch = min(last_epoch, config.stop_after_epoch)
  for epoch in range(start_epoch, last_epoch + 1):
    perm = clf.epoch_permutation(state, epoch)
    totals = clf.zero_totals()
    epoch_clock = common.Stopwatch()
    for _ in common.progress(range(clf.steps_per_epoch), clf.steps_per_epoch,
                             f"epoch {epoch + 1}/{config.num_epochs}"):
      state, totals = clf.train_step(state, perm, totals)
    totals = jax.device_get(totals)  # the epoch's one host sync
    train_time = epoch_clock.elapsed()
    evaluation = clf.evaluate(state, tta=False)
    seen = int(totals["steps"]) * config.batch_size
    hyper = jax.device_get(state.opt_state.hyperparams)
    record = {
        "epoch": epoch + 1,
        "train_loss": float(totals["loss"]) / max(1, int(totals["steps"])),
        "train_accuracy": int(totals["correct"]) / max(1, seen),
        **evaluation,
        "images_per_sec": seen / train_time,
        "epoch_time": epoch_clock.elapsed(),
        "wall_time": clock.elapsed(),
        "lr": float(hyper["learning_rate"]), "momentum": float(hyper["momentum"]),
    }
    if state.loss_scale is not None:
      record["loss_scale"] = float(state.loss_scale.scale)
      record["skipped_steps"] = int(totals["skipped"])
    if time_to_target is None and evaluation["test_accuracy"] >= config.target_accuracy:
      time_to_target = record["wall_time"]
    record["time_to_target"] = time_to_target
    writer.write_scalars(int(state.step), record)
    logging.info("epoch %d: train loss %.4f, test loss %.4f, accuracy %.4f, %.0f images/s, "
                 "%.1f s", epoch + 1, record["train_loss"], record["test_loss"],
                 record["test_accuracy"], record["images_per_sec"], record["wall_time"])
    ckpt.save(epoch, state, {"epoch": epoch, "step": int(state.step),
                             "elapsed": clock.elapsed(), "time_to_target": time_to_target})
  ckpt.close()
  writer.close()
  if record:
    target = (f"{config.target_accuracy:.0%} first reached at {time_to_target:.1f} s"
              if time_to_target is not None else f"{config.target_accuracy:.0%} not reached")
    logging.info("Done: test accuracy %.4f after %d epochs in %.1f s; %s.",
                 record["test_accuracy"], record["epoch"], record["wall_time"], target)
    print(f"final test accuracy {record['test_accuracy']:.4f}, total time "
          f"{record['wall_time']:.1f} s, {target}", flush=True)
  return record


def evaluate_checkpoint(workdir: str, config: ml_collections.ConfigDict | None = None,
                        tta: bool = False, step: int | None = None) -> dict:
  """Test-set loss and accuracy of a saved checkpoint (``tta``: average with the flip)."""
  if config is None:
    config = load_run_config(workdir)
  validate_config(config)
  mesh = parallel.make_mesh()
  test_data = load_classification(config.dataset, "test", config.data_dir)
  if config.max_test_examples:
    test_data = _head(test_data, config.max_test_examples)
  clf = Classifier(config, mesh, None, test_data)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
  target = clf.init_state()
  state, meta = ckpt.restore(target, step)
  ckpt.close()
  result = {"epoch": meta["epoch"] + 1, **clf.evaluate(state, tta=tta), "tta": tta}
  print(f"checkpoint epoch {result['epoch']}: test accuracy {result['test_accuracy']:.4f}, "
        f"test loss {result['test_loss']:.4f}{' (flip TTA)' if tta else ''}", flush=True)
  return result


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json)."""
  return metrics.read_config(workdir, "a Darknet run")


def _head(data: ImageClassificationData, n: int) -> ImageClassificationData:
  return ImageClassificationData(data.images[:n], data.labels[:n], data.mean, data.std,
                                 data.num_classes)
