"""The one training loop the three systems share.

Each system (``darknet``, ``wgan``, ``cyclegan``) hands the loop a `Task`: its state, its
batches, its step and how to summarise the step's metrics. The loop does the rest, the
same way for all three, in the spirit of the Flax examples' ``train_and_evaluate`` and
big_vision's ``train.py``:

1. restore the newest checkpoint in ``workdir`` (restore targets from ``jax.eval_shape``,
   nothing computed), or initialise; write ``config.json``;
2. run steps ``start+1 .. stop``, one step call each, never waiting for the device in
   between;
3. every ``log_every`` steps, the one regular host sync: fetch the interval's metrics,
   let the task summarise them, stop if a loss is not finite, write ``metrics.jsonl``
   and TensorBoard, log a line;
4. run the hooks (evaluation, sample galleries) when due;
5. checkpoint every ``checkpoint_every`` steps and at the end, and when the process is
   asked to stop (SIGTERM from a scheduler, Ctrl-C): the current step finishes, the
   checkpoint is written, and the same command resumes exactly.

The run holds its workdir throughout (`jaxgan.train.workdir`): a second run started in
the same folder stops at once, naming this one.

The run's *record* (the newest value of every field it has logged) is the host's memory:
it is saved with each checkpoint and restored with it, so counters a summary carries from
one interval to the next (unreadable images skipped, fp16 overflows in a row, when a
target accuracy was reached) continue where they were.

Steps are jitted here too, in one place: `Program` binds a system's pure step to its
feed's gather and compiles them as one program with the state donated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from jaxgan import checkpoint, config as config_lib, metrics, ops
from jaxgan.data.feed import Batch
from jaxgan.train import workdir as run_folder


class Task(NamedTuple):
  """What the loop needs of a system.

  Attributes:
    what: the run, for messages ("a WGAN run").
    init_state: a fresh train state, on the devices.
    abstract_state: shapes, dtypes and shardings of the state (restore targets).
    batches: ``(start, state) -> iterator of Batch``: the inputs of steps ``start + 1``,
      ``start + 2``, ..., for a run that resumes from ``state`` after ``start`` steps.
    step: ``(state, inputs) -> (state, metrics)``; metrics are device scalars.
    summarize: ``(step, metrics, seconds, record) -> fields``: a log interval's record
      from its per-step metrics (stacked, on the host; ``skipped_images`` per step
      included), ``seconds`` of wall time, and the run's record so far.
  """
  what: str
  init_state: Callable[[], Any]
  abstract_state: Callable[[], Any]
  batches: Callable[[int, Any], Iterator[Batch]]
  step: Callable[[Any, Any], tuple[Any, dict]]
  summarize: Callable[[int, dict, float, dict], dict]


class Program:
  """A system's pure step and its feed's gather, jitted as one program, state donated.

  ``step(state, batch, **settings)`` is bound to its settings with ``functools.partial``
  beforehand; calling the program with ``(state, inputs)`` runs
  ``step(state, gather(arrays, inputs))`` on the devices, where ``arrays`` is the feed's
  device-resident data set (empty for streamed feeds, whose inputs are the batch). The
  jitted function is ``self.jitted(state, arrays, inputs)``: lower it for cost analyses.

  Args:
    step: ``(state, batch) -> (state, metrics)``.
    feed: the `jaxgan.data.feed` feed the inputs come from; None: the inputs are the
      batch.
    donate_state: donate the state's buffers (training); False for evaluation.
  """

  def __init__(self, step, feed=None, donate_state: bool = True):
    gather = feed.gather if feed is not None else (lambda arrays, batch: batch)
    self.arrays = feed.arrays if feed is not None else {}
    self.jitted = ops.jit(lambda state, arrays, inputs: step(state, gather(arrays, inputs)),
                          donate_argnums=(0,) if donate_state else ())

  def __call__(self, state, inputs):
    return self.jitted(state, self.arrays, inputs)


@dataclasses.dataclass
class Every:
  """A hook: ``action(state, step, record) -> new fields or None``, every ``steps`` steps
  and at the last.

  ``record`` is the run's record with this step's fields so far (the train summary when
  one was due, with its ``wall_time``).
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


def mean_record(stacked: dict[str, np.ndarray], *_) -> dict:
  """The default summary: every metric's mean over the interval, as Python floats."""
  return {k: float(np.mean(v)) for k, v in stacked.items()}


def default_log_line(step: int, record: dict) -> str:
  return f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items()
                                       if isinstance(v, float))


def default_summary(record: dict) -> str:
  return f"done: {default_log_line(record['step'], record)}"


def train(task: Task, config, workdir: str, *, num_steps: int, log_every: int,
          checkpoint_every: int, stop_after: int = -1, hooks: tuple[Every, ...] = (),
          log_line: Callable[[int, dict], str] = default_log_line,
          summary: Callable[[dict], str] = default_summary, desc: str = "train") -> dict:
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
    log_line: ``(step, fields) -> str``, the line logged for each record written.
    summary: ``record -> str``, the closing line of a finished run.
    desc: the progress bar's label.

  Returns:
    The run's record: the newest value of every field written (``step``, ``wall_time``,
    the task's summary, the hooks' fields); ``stopped_by`` names a signal that ended it
    early.

  Raises:
    NonFiniteError: a loss was NaN or infinite (no checkpoint of that state is written).
  """
  run_folder.check_writable(workdir)
  run_folder.hold(workdir)  # one run per workdir (held already after runs.start)
  try:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   config.get("keep_checkpoints", 3))
    try:
      return _train(task, config, workdir, ckpt, num_steps, log_every, checkpoint_every,
                    stop_after, hooks, log_line, summary, desc)
    finally:
      ckpt.close()
  finally:
    run_folder.release(workdir)


def _train(task, config, workdir, ckpt, num_steps, log_every, checkpoint_every, stop_after,
           hooks, log_line, summary, desc) -> dict:
  meta = {}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(task.abstract_state())
    logging.info("Resuming %s at step %d of %d from %s", task.what, meta["step"], num_steps,
                 workdir)
  else:
    state = task.init_state()
  start = int(meta.get("step", 0))
  record: dict = dict(meta.get("record", {}))
  stop = num_steps if stop_after < 0 else min(num_steps, stop_after)
  config_lib.write_config(workdir, config)
  clock = Stopwatch(meta.get("elapsed", 0.0))
  last_saved = ckpt.latest_step()

  def save(step):
    nonlocal last_saved
    if last_saved != step:
      ckpt.save(step, state, {"step": step, "elapsed": clock.elapsed(), "record": record})
      last_saved = step

  writer = metrics.MetricWriter(workdir)
  batches = None
  try:
    with stop_requests() as stop_signals:
      if start < stop:
        batches = task.batches(start, state)
        history, interval = [], Stopwatch()
        for step in progress(range(start + 1, stop + 1), stop - start, desc):
          batch = next(batches)
          step_clock = Stopwatch()
          state, step_metrics = task.step(state, batch.inputs)
          if step == start + 1:
            logging.info("first step traced and compiled in %.1f s", step_clock.elapsed())
          history.append({**step_metrics, "skipped_images": batch.skipped})
          end = step == stop or bool(stop_signals)
          checkpoint_due = step % checkpoint_every == 0 or end
          fields = {}
          if step % log_every == 0 or end:
            fields = task.summarize(step, stack_metrics(history), interval.elapsed(), record)
            fields["wall_time"] = clock.elapsed()
            check_finite(fields, step, workdir, last_saved)
            history, interval = [], Stopwatch()
          elif checkpoint_due:  # never checkpoint a state whose losses went non-finite
            check_finite(mean_record(stack_metrics(history)), step, workdir, last_saved)
          for hook in hooks:
            if step % hook.steps == 0 or step == num_steps:
              fields.update(hook.action(state, step, {**record, **fields}) or {})
          for key in [k for k, v in fields.items() if isinstance(v, Image)]:
            writer.write_image(step, key, fields.pop(key).pixels)
          if fields:
            fields = writer.write_scalars(step, fields)  # as JSON values, for the record too
            logging.info("%s", log_line(step, fields))
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
    if batches is not None and hasattr(batches, "close"):
      batches.close()  # stops a streamed feed's thread
    writer.close()
  record.setdefault("step", start)
  record["wall_time"] = clock.elapsed()
  if record.get("step") == num_steps and jax.process_index() == 0:
    print(summary(record), flush=True)
  return record
