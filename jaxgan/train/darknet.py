"""Darknet on CIFAR-10 with one cycle, mixed precision and every local device.

Reads like the lesson: load the data, build the network, SGD with momentum and L2 weight
decay driven by the one-cycle schedules, fit for ``num_epochs`` as one cycle, report
accuracy. What is new is how it runs: the uint8 data set lives in device memory, each
iteration is one jitted step that gathers its batch there, augments it, and updates the
replicated state from the global batch sharded over a ("data",) mesh; the shared loop
(`jaxgan.train.loop`) evaluates, logs and checkpoints once per epoch.
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

from jaxgan import checkpoint, metrics, models, ops, optim, parallel, precision
from jaxgan.data import augment
from jaxgan.data.classification import ImageClassificationData, load_classification
from jaxgan.data.device import DeviceDataset, EpochSampler, batches_from
from jaxgan.train import config_checks, loop


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
  config_checks.choice(config, "dataset", ("cifar10", "fashion_mnist"))
  config_checks.choice(config, "model.name", ("darknet", "wrn_22", "wide_resnet"))
  config_checks.choice(config, "pad_mode", ("symmetric", "reflect", "constant"))
  precision.get_policy(config.precision)
  config_checks.positive(config, "batch_size", "eval_batch_size", "num_epochs", "max_lr")


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


def make_optimizer(config, total_steps: int | None):
  """SGD with L2 driven by one cycle over ``total_steps``.

  ``total_steps=None`` (evaluation) gives constant schedules: the same optimizer state
  structure, which is all a restore for evaluation needs.
  """
  if total_steps is None:
    return optim.sgd_l2(optax.constant_schedule(config.max_lr),
                        optax.constant_schedule(config.moms[0]), config.weight_decay)
  lr, momentum = optim.one_cycle(total_steps, config.max_lr, config.div, config.pct,
                                 tuple(config.moms))
  return optim.sgd_l2(lr, momentum, config.weight_decay)


def create_train_state(model, tx, image_shape, seed: int,
                       policy: precision.Policy, initial_loss_scale: float = 2.0**15):
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
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

def train_step(state: TrainState, data, indices, *, model, tx, mean, std, pad: int,
               pad_mode: str, compute_dtype, batch_sharding):
  """One iteration: gather the batch, augment it, one SGD update. Pure; jitted once."""
  batch = DeviceDataset.take(data, indices)
  x = jax.lax.with_sharding_constraint(batch["image"], batch_sharding)
  y = jax.lax.with_sharding_constraint(batch["label"], batch_sharding)
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
  hyper = state.opt_state.hyperparams  # the values this step trained with
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


class Classifier(loop.Task):
  """The network, its optimizer, the data on the devices and the steps: the loop's task.

  Args:
    config: a config from ``experiments/configs/darknet.py`` (already validated).
    mesh: the ("data",) mesh.
    train_data: the training set, or None to evaluate only.
    test_data: the test set (its statistics normalise both).
  """
  what = "a Darknet run"

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
    self.time_to_target = None
    self.skipped_in_a_row = 0  # fp16: overflowed steps since the last good one

    self.tx = make_optimizer(config, None)  # evaluation only: no schedule
    if train_data is not None:
      self.num_train = len(train_data)
      self.sampler = EpochSampler(self.num_train, config.batch_size, config.seed)
      self.steps_per_epoch = self.sampler.steps_per_epoch
      self.total_steps = self.steps_per_epoch * config.num_epochs
      self.tx = make_optimizer(config, self.total_steps)
      self.data = DeviceDataset({"image": train_data.images, "label": train_data.labels},
                                mesh)
      self._train_step = ops.jit(
          functools.partial(train_step, tx=self.tx, pad=config.pad, pad_mode=config.pad_mode,
                            **common_kw),
          donate_argnums=(0,))

    # Test set padded to whole batches; label −1 marks the padding.
    n_test = len(test_data)
    padded = -(-n_test // config.eval_batch_size) * config.eval_batch_size
    images = np.zeros((padded, *self.image_shape), np.uint8)
    labels = np.full((padded,), -1, np.int32)
    images[:n_test], labels[:n_test] = test_data.images, test_data.labels
    self.test_images = parallel.replicate(images, mesh)
    self.test_labels = parallel.replicate(labels, mesh)
    self._eval_step = {tta: ops.jit(functools.partial(
        eval_step, batch_size=config.eval_batch_size, tta=tta, **common_kw))
                       for tta in (False, True)}

  # --- the state

  def _create_state(self):
    return create_train_state(self.model, self.tx, self.image_shape, self.config.seed,
                              self.policy, self.config.initial_loss_scale)

  def init_state(self) -> TrainState:
    return jax.jit(self._create_state, out_shardings=parallel.replicated(self.mesh))()

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the state, computing nothing (restore targets)."""
    return parallel.abstract_replicated(jax.eval_shape(self._create_state), self.mesh)

  # --- training, as the loop drives it

  def batches(self, start: int):
    return batches_from(self.sampler.indices, start, self.data.to_device)

  def compile(self, state, indices) -> bool:
    # Kept for its cost analysis (the benchmark's FLOPs), before XLA's passes.
    self.lowered_train_step = self._train_step.lower(state, self.data.arrays, indices)
    self._train_step = self.lowered_train_step.compile()
    return True

  def train_step(self, state, indices):
    return self._train_step(state, self.data.arrays, indices)

  def summarize(self, step: int, stacked: dict, seconds: float) -> dict:
    steps = len(stacked["loss"])
    record = {"epoch": step / self.steps_per_epoch,
              "train_loss": float(np.mean(stacked["loss"])),
              "train_accuracy": float(np.mean(stacked["accuracy"])),
              "images_per_sec": steps * self.config.batch_size / seconds,
              "lr": float(stacked["lr"][-1]), "momentum": float(stacked["momentum"][-1])}
    if "skipped" in stacked:
      record["skipped_steps"] = int(np.sum(stacked["skipped"]))
      record["loss_scale"] = float(stacked["loss_scale"][-1])
      self.check_fp16(step, stacked)
    return record

  def check_fp16(self, step: int, stacked: dict) -> None:
    """fp16 skips overflowing steps; a long run of them, or a scale at its floor of 1
    that still overflows, means the training itself diverged: stop as for a NaN loss."""
    for skipped, scale in zip(stacked["skipped"], stacked["loss_scale"]):
      self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
      collapsed = skipped and scale <= 1.0
      if collapsed or self.skipped_in_a_row > self.config.max_skipped_in_a_row:
        why = ("the loss scale fell to 1 and the gradients still overflow" if collapsed else
               f"{self.skipped_in_a_row} fp16 steps in a row overflowed")
        raise loop.NonFiniteError(
            f"{why} by step {step}: training diverged. Lower --config.max_lr, or train "
            "in bf16 (--config.precision=bf16); a rerun in the same --workdir resumes from "
            "the last checkpoint.")

  def evaluate_hook(self, state, step: int, record: dict) -> dict:  # pylint: disable=unused-argument
    """Per epoch: test loss and accuracy, and when the target accuracy was first reached."""
    evaluation = self.evaluate(state)
    if (self.time_to_target is None and "wall_time" in record
        and evaluation["test_accuracy"] >= self.config.target_accuracy):
      self.time_to_target = record["wall_time"]
    return {**evaluation, "time_to_target": self.time_to_target}

  def log_line(self, step: int, r: dict) -> str:
    # A run stopped by a signal mid-epoch logs its partial epoch without a test pass.
    test = (f"test loss {r['test_loss']:.4f}, accuracy {r['test_accuracy']:.4f}, "
            if "test_loss" in r else "")
    return (f"epoch {r.get('epoch', step / self.steps_per_epoch):g}: train loss "
            f"{r.get('train_loss', float('nan')):.4f}, {test}"
            f"{r.get('images_per_sec', 0):.0f} images/s, {r.get('wall_time', 0):.1f} s")

  def summary(self, record: dict) -> str:
    target = self.config.target_accuracy
    reached = (f"{target:.0%} first reached at {self.time_to_target:.1f} s"
               if self.time_to_target is not None else f"{target:.0%} not reached")
    return (f"final test accuracy {record['test_accuracy']:.4f}, total time "
            f"{record['wall_time']:.1f} s, {reached}")

  def meta(self) -> dict:
    # Checkpoints fall on summarised steps, so the fp16 count is exact there; keeping it
    # makes a resumed run halt where a run never stopped would.
    return {"time_to_target": self.time_to_target, "skipped_in_a_row": self.skipped_in_a_row}

  def load_meta(self, meta: dict) -> None:
    self.time_to_target = meta.get("time_to_target")
    self.skipped_in_a_row = meta.get("skipped_in_a_row", 0)

  # --- evaluation

  def evaluate(self, state: TrainState, tta: bool = False) -> dict:
    step = self._eval_step[tta]
    sums = [step(state, self.test_images, self.test_labels, jnp.int32(start))
            for start in range(0, self.test_labels.shape[0], self.config.eval_batch_size)]
    sums = jax.device_get(sums)
    count = sum(int(s["count"]) for s in sums)
    return {"test_loss": sum(float(s["loss"]) for s in sums) / count,
            "test_accuracy": sum(int(s["correct"]) for s in sums) / count}


# ----------------------------------------------------------------------------- runs

def load_data(config) -> tuple[ImageClassificationData, ImageClassificationData]:
  """The training and test sets a config names, cut to its ``max_*_examples``."""
  train_data = load_classification(config.dataset, "train", config.data_dir)
  test_data = load_classification(config.dataset, "test", config.data_dir)
  return (train_data.head(config.max_train_examples),
          test_data.head(config.max_test_examples))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains for ``config.num_epochs`` (one cycle), evaluating and checkpointing each epoch.

  Started again with the same workdir, it resumes from the newest checkpoint and ends with
  the same parameters as a run never interrupted.

  Returns:
    The final record: test accuracy and loss, total time, time to the target accuracy.
  """
  parallel.maybe_initialize_distributed()  # first: it must precede any other JAX call
  validate_config(config)
  loop.check_workdir(workdir)  # before hours of data loading, not after
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(config.batch_size, mesh, "batch_size")
  parallel.check_batch_divisible(config.eval_batch_size, mesh, "eval_batch_size")
  train_data, test_data = load_data(config)
  clf = Classifier(config, mesh, train_data, test_data)
  spe = clf.steps_per_epoch
  logging.info("%s: %d train / %d test images, %d steps per epoch, %d devices, %s",
               config.dataset, clf.num_train, len(test_data), spe, mesh.devices.size,
               config.precision)
  stop_after = -1 if config.stop_after_epoch < 0 else (config.stop_after_epoch + 1) * spe
  return loop.train(clf, config, workdir, num_steps=clf.total_steps, log_every=spe,
                    checkpoint_every=spe, stop_after=stop_after,
                    hooks=(loop.Every(spe, clf.evaluate_hook),), desc="darknet")


def restore(workdir: str, config=None, step: int | None = None):
  """``(classifier, state, meta)`` of a run's checkpoint (default: the newest)."""
  config = load_run_config(workdir) if config is None else config
  validate_config(config)
  _, test_data = load_data(config)
  clf = Classifier(config, parallel.make_mesh(), None, test_data)
  ckpt = checkpoint.Checkpointer(f"{workdir}/checkpoints")
  try:
    state, meta = ckpt.restore(clf.abstract_state(), step)
  finally:
    ckpt.close()
  return clf, state, meta


def evaluate_checkpoint(workdir: str, config: ml_collections.ConfigDict | None = None,
                        tta: bool = False, step: int | None = None) -> dict:
  """Test-set loss and accuracy of a saved checkpoint (``tta``: average with the flip)."""
  clf, state, meta = restore(workdir, config, step)
  result = {"step": meta["step"], **clf.evaluate(state, tta=tta), "tta": tta}
  print(f"checkpoint step {meta['step']}: test accuracy {result['test_accuracy']:.4f}, "
        f"test loss {result['test_loss']:.4f}{' (flip TTA)' if tta else ''}", flush=True)
  return result


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json)."""
  return metrics.read_config(workdir, "darknet")
