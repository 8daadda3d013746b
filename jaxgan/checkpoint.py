"""Orbax checkpoints: periodic save, keep the newest N, resume from the latest good one.

One checkpoint holds the whole train state pytree (networks, optimizer states, counters,
RNG, loss scale, GAN image pools) plus a small JSON record (epoch, data position, wall
time) so a run restarted in the same workdir continues exactly where it stopped.

A checkpoint damaged after it was written (a truncated or deleted file: a full disk, a
killed copy) does not end the run: resuming walks back to the newest checkpoint that
restores and moves the damaged ones aside.
"""

import logging as std_logging
import os
import sys

from absl import logging
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No checkpoint that was tried could be restored."""


def _one_line(error: BaseException, limit: int = 300) -> str:
  """The innermost cause of ``error``, as one short line.

  Orbax wraps the useful part (e.g. OCDBT's ``OUT_OF_RANGE ... byte range``) in a generic
  exception whose text is a page of TensorStore spec.
  """
  seen = {id(error)}
  while True:
    inner = error.__cause__ or error.__context__
    if inner is None or id(inner) in seen:
      break
    seen.add(id(inner))
    error = inner
  text = f"{type(error).__name__}: {' '.join(str(error).split())}"
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _from_abandoned_read(exc_value, exc_traceback) -> bool:
  """Whether an exception comes from a read that a failed orbax restore abandoned."""
  if isinstance(exc_value, RuntimeError) and "Event loop is closed" in str(exc_value):
    return True
  tb = exc_traceback
  while tb is not None:
    if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


class _AbandonedReadFilter(std_logging.Filter):

  def filter(self, record):
    return not (record.exc_info and _from_abandoned_read(*record.exc_info[1:]))


def _hold_back_abandoned_reads() -> None:
  """Stops the reads a failed restore abandoned from printing their tracebacks.

  When one read of a damaged checkpoint fails, orbax gives up on the others; each is
  finalised later, some after the restore has returned, and Python or asyncio prints its
  traceback ("Exception ignored in: <coroutine ...>", "Event loop is closed"): pages that
  bury the one line we log instead. Called before each restore; it wraps the current hook
  once and drops only exceptions raised in orbax's code or by the closed event loop.
  """
  current = sys.unraisablehook
  if not getattr(current, "holds_back_abandoned_reads", False):

    def hook(unraisable):
      if not _from_abandoned_read(unraisable.exc_value, unraisable.exc_traceback):
        current(unraisable)

    hook.holds_back_abandoned_reads = True
    sys.unraisablehook = hook
  asyncio_log = std_logging.getLogger("asyncio")
  if not any(isinstance(f, _AbandonedReadFilter) for f in asyncio_log.filters):
    asyncio_log.addFilter(_AbandonedReadFilter())


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` for one train state and its metadata."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "meta"))

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    """Saves asynchronously; training goes on while the files are written."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, target_state, step: int | None = None):
    """Restores ``(state, meta)`` with target's shapes, dtypes and shardings.

    With ``step=None``, the newest checkpoint that restores: damaged newer ones are
    skipped with a warning and moved to ``<directory>.damaged/``.

    Raises:
      FileNotFoundError: there is no checkpoint (at ``step``) in the directory.
      CheckpointError: no checkpoint tried (or the one at ``step``) restores.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored = self._restore_good(step, lambda _: ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def _restore_good(self, step, make_args):
    """Restores ``make_args(step)`` at ``step``, or walks back from the newest."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}: train first "
                              "(the same --workdir), or point --workdir at a trained run.")
    if step is not None:
      if step not in steps:
        raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}; "
                                f"steps there: {sorted(steps)}.")
      steps = [step]
    _hold_back_abandoned_reads()  # before the first try: some report during the restore
    failures = []
    for s in steps:
      try:
        restored = self._manager.restore(s, args=make_args(s))
      except Exception as e:  # pylint: disable=broad-exception-caught
        # Any failure counts: orbax raises bare Exception, ValueError, KeyError,
        # FileNotFoundError... depending on which file is damaged and how.
        failures.append((s, _one_line(e)))
        if step is None:
          logging.warning("Checkpoint step %d in %s does not restore (%s): %s", s,
                          self.directory, "trying an older one" if s != steps[-1] else
                          "no older one left", failures[-1][1])
        continue
      if failures:
        self._move_aside([f for f, _ in failures])
        logging.warning("Resumed from checkpoint step %d instead of %s.", s,
                        ", ".join(str(f) for f, _ in failures))
      return restored
    tried = "\n".join(f"  step {s}: {why}" for s, why in failures)
    raise CheckpointError(
        f"no checkpoint in {self.directory} restores; tried\n{tried}\n"
        "Remove the damaged step folders there (older good ones are then used), or start "
        "a fresh --workdir. (If every reason is a shape or structure mismatch, the config "
        "differs from the run that wrote them.)")

  def _step_dir(self, step: int):
    # The manager's own naming (default options: the bare step number).
    return ocp.path.step.build_step_path(self._manager.directory,
                                         ocp.path.step.standard_name_format(), step)

  def _move_aside(self, steps) -> None:
    """Moves damaged step folders out of the manager's sight, keeping them for a look.

    Left in place they would still count as the latest step: orbax would skip saving the
    same step again and count them against max_to_keep, deleting good ones first.
    """
    quarantine = self.directory + ".damaged"
    if jax.process_index() == 0:
      os.makedirs(quarantine, exist_ok=True)
      for s in steps:
        source = os.fspath(self._step_dir(s))
        target, n = os.path.join(quarantine, str(s)), 1
        while os.path.exists(target):  # the same step number damaged again
          target, n = os.path.join(quarantine, f"{s}.{n}"), n + 1
        os.replace(source, target)
        logging.warning("Moved damaged checkpoint step %d to %s.", s, target)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("jaxgan_checkpoint_move_aside")
    self._manager.reload()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
