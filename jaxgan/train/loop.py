"""The one training loop the three systems share.

Each system (``darknet``, ``wgan``, ``cyclegan``) supplies a *task*: its state, its jitted
step and its batches. This loop does the rest, the same way for all three, in the spirit of
the Flax examples' ``train_and_evaluate`` and big_vision's ``train.py``:

1. restore the newest checkpoint in ``workdir`` (restore targets from ``jax.eval_shape``,
   nothing computed), or initialise; write ``config.json``;
2. run steps ``start+1 .. stop``, one task step each (a jitted call, or for the WGAN's
   critic bursts a few), never waiting for the device in between;
3. every ``log_every`` steps, the one regular host sync: fetch the interval's metrics, let
   the task summarise them, stop if a loss is not finite, write ``metrics.jsonl`` and
   TensorBoard;
4. run the periodic hooks (evaluation, sample galleries) when due;
5. checkpoint every ``checkpoint_every`` steps and at the end, and when the process is
   asked to stop (SIGTERM from a scheduler, Ctrl-C): the current step finishes, the
   checkpoint is written, and the same command resumes exactly.

A task provides (see `Task`): ``what`` (for messages), ``init_state()``,
``abstract_state()``, ``batches(start)``, ``train_step(state, batch) -> (state,
metrics)``, ``compile(state, batch)`` (ahead of time; False if it leaves that to jit), ``summarize(step, metrics, seconds) -> record``,
``log_line(step, record)``,
``meta() / load_meta(meta)`` (host-side numbers a resume needs), ``summary(record)``
(the closing line) and ``close()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from jaxgan import checkpoint, metrics


class Task:
  """What a system gives the loop; the defaults suit a system with nothing to add."""
  what = "a run"

  def init_state(self) -> Any:
    raise NotImplementedError

  def abstract_state(self) -> Any:
    """Shapes, dtypes and shardings of the state (``jax.eval_shape``): restore targets."""
    raise NotImplementedError

  def batches(self, start: int) -> Iterator[Any]:
    """The input of each step from step ``start`` on."""
    raise NotImplementedError

  def train_step(self, state, batch) -> tuple[Any, dict]:
    """One step: the new state and the step's metrics (device scalars, not fetched)."""
    raise NotImplementedError

  def summarize(self, step: int, metrics: dict[str, np.ndarray], seconds: float) -> dict:
    """The record of a log interval from its stacked per-step metrics."""
    return mean_record(metrics)

  def compile(self, state, batch) -> bool:
    """Compiles the step ahead of time; False leaves it to jit's first call."""
    del state, batch
    return False

  def log_line(self, step: int, record: dict) -> str:
    return f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                         if isinstance(v, float))

  def summary(self, record: dict) -> str:
    return f"done: {self.log_line(record['step'], record)}"

  def meta(self) -> dict:
    """Host-side numbers a resume needs (saved beside the state)."""
    return {}

  def load_meta(self, meta: dict) -> None:
    del meta

  def close(self) -> None:
    pass


@dataclasses.dataclass
class Every:
  """``action(state, step, record) -> new fields or None``, every ``steps`` and at the end.

  ``record`` holds the fields already written for this step (the train summary when one
  was due, with its ``wall_time``).
  """
  steps: int
  action: Callable[[Any, int, dict], dict | None]


@dataclasses.dataclass
class Image:
  """A hook's image field: written to TensorBoard under its key, kept out of the record."""
  pixels: np.ndarray  # (H, W, C) uint8


class NonFiniteError(FloatingPointError):
  """A loss became NaN or infinite; no checkpoint of that state was written."""


class Stopwatch:
  """Wall time that survives a resume: ``offset`` is the time spent before the restart."""

  def __init__(self, offset: float = 0.0):
    self.offset = offset
    self._start = time.perf_counter()

  def elapsed(self) -> float:
    return self.offset + time.perf_counter() - self._start


def progress(iterable, total: int, desc: str):
  """A tqdm bar on process 0 only; other hosts iterate silently."""
  return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
              disable=jax.process_index() != 0, file=sys.stderr)


@contextlib.contextmanager
def stop_requests():
  """Turns SIGTERM and SIGINT into a flag the loop reads between steps.

  A cloud scheduler or a preempted TPU/GPU VM sends SIGTERM and waits a little; Ctrl-C
  sends SIGINT. Either way the step in flight finishes and the loop checkpoints and stops.
  A second Ctrl-C interrupts at once.
  """
  received: list[str] = []
  if jax.process_count() > 1 or not _in_main_thread():
    yield received  # signals reach one process only; multi-host runs rely on checkpoints
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    if received and signum == signal.SIGINT:
      raise KeyboardInterrupt
    received.append(name)
    logging.warning("%s received: finishing this step, then checkpointing.", name)

  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    yield received
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _in_main_thread() -> bool:
  import threading  # pylint: disable=g-import-not-at-top
  return threading.current_thread() is threading.main_thread()


def check_finite(record: dict, step: int, workdir: str, last_checkpoint) -> None:
  """Raises `NonFiniteError` naming the losses that are NaN/inf and what to do."""
  bad = sorted(k for k, v in record.items()
               if isinstance(v, float) and not math.isfinite(v))
  if not bad:
    return
  where = (f"the last good checkpoint is step {last_checkpoint} in {workdir}/checkpoints"
           if last_checkpoint is not None else "no checkpoint was written yet")
  raise NonFiniteError(
      f"{', '.join(bad)} not finite by step {step}: training diverged; {where}. Lower the "
      "learning rate (or use fp32/bf16 rather than fp16) and run again; a rerun in the "
      "same --workdir resumes from that checkpoint.")


def stack_metrics(history: list[dict]) -> dict[str, np.ndarray]:
  """Per-step metric dicts (device scalars or (n,) arrays) → one host array per key."""
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *history)
  return {k: np.asarray(v) for k, v in jax.device_get(stacked).items()}


def mean_record(stacked: dict[str, np.ndarray]) -> dict:
  """The default summary: every metric's mean over the interval, as Python floats."""
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def check_workdir(workdir: str) -> None:
  """Fails before any work if the run's outputs cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"cannot write to --workdir {workdir}: {e.strerror}. Choose a "
                          "folder you can write to.") from None


def train(task: Task, config, workdir: str, *, num_steps: int, log_every: int,
          checkpoint_every: int, stop_after: int = -1, hooks: tuple[Every, ...] = (),
          desc: str = "train") -> dict:
  """Runs ``task`` for ``num_steps`` steps in ``workdir``, resuming if it was started before.

  Args:
    task: the system's `Task`.
    config: the run's ConfigDict (written to config.json; ``keep_checkpoints`` read).
    workdir: the run's folder.
    num_steps: steps of the whole run.
    log_every: steps between metric records (host syncs).
    checkpoint_every: steps between checkpoints.
    stop_after: >= 0: stop (checkpointed) after this step; the same command continues.
    hooks: periodic actions (evaluation, galleries), each also run at the last step.
    desc: the progress bar's label.

  Returns:
    The last record, merged over the run's fields (``step``, ``wall_time``, the task's
    summary, the hooks' fields); ``stopped_by`` names a signal that ended it early.

  Raises:
    NonFiniteError: a loss was NaN or infinite (no checkpoint of that state is written).
  """
  check_workdir(workdir)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 config.get("keep_checkpoints", 3))
  try:
    return _train(task, config, workdir, ckpt, num_steps, log_every, checkpoint_every,
                  stop_after, hooks, desc)
  finally:
    ckpt.close()
    task.close()


def _train(task, config, workdir, ckpt, num_steps, log_every, checkpoint_every, stop_after,
           hooks, desc) -> dict:
  state, meta = None, {}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(task.abstract_state())
    logging.info("Resuming %s at step %d of %d from %s", task.what, meta["step"], num_steps,
                 workdir)
  else:
    state = task.init_state()
  task.load_meta(meta)
  start = int(meta.get("step", 0))
  stop = num_steps if stop_after < 0 else min(num_steps, stop_after)
  metrics.write_config(workdir, config)
  clock = Stopwatch(meta.get("elapsed", 0.0))
  record: dict = {}
  last_saved = ckpt.latest_step()

  def save(step):
    nonlocal last_saved
    if last_saved != step:
      ckpt.save(step, state, {"step": step, "elapsed": clock.elapsed(), **task.meta()})
      last_saved = step

  writer = metrics.MetricWriter(workdir)
  try:
    with stop_requests() as stop_signals:
      if start < stop:
        batches = task.batches(start)
        first = next(batches)
        compile_clock = Stopwatch()
        if task.compile(state, first):
          logging.info("train step compiled in %.1f s", compile_clock.elapsed())
        batches = itertools.chain([first], batches)
        history, interval = [], Stopwatch()
        for step in progress(range(start + 1, stop + 1), stop - start, desc):
          state, step_metrics = task.train_step(state, next(batches))
          history.append(step_metrics)
          end = step == stop or bool(stop_signals)
          checkpoint_due = step % checkpoint_every == 0 or end
          fields = {}
          if step % log_every == 0 or end:
            fields = task.summarize(step, stack_metrics(history), interval.elapsed())
            fields["wall_time"] = clock.elapsed()
            check_finite(fields, step, workdir, last_saved)
            history, interval = [], Stopwatch()
          elif checkpoint_due:  # never checkpoint a state whose losses went non-finite
            check_finite(mean_record(stack_metrics(history)), step, workdir, last_saved)
          for hook in hooks:
            if step % hook.steps == 0 or step == num_steps:
              fields.update(hook.action(state, step, fields) or {})
          for key in [k for k, v in fields.items() if isinstance(v, Image)]:
            writer.write_image(step, key, fields.pop(key).pixels)
          if fields:
            writer.write_scalars(step, fields)
            logging.info("%s", task.log_line(step, fields))
            record.update(fields, step=step)
          if checkpoint_due:
            save(step)
          if end and stop_signals:  # a signal that came after `end` was set: one more step
            record["stopped_by"] = stop_signals[0]
            logging.warning("Stopped by %s after step %d; checkpoint saved. Run the same "
                            "command to resume.", stop_signals[0], step)
            break
        if stop < num_steps and not stop_signals:
          logging.info("Stopping after step %d (stop_after); run the same command again "
                       "to continue.", stop)
  finally:
    writer.close()
  record.setdefault("step", start)
  record["wall_time"] = clock.elapsed()
  if record.get("step") == num_steps and jax.process_index() == 0:
    print(task.summary(record), flush=True)
  return record
