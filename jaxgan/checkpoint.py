"""Orbax checkpoints: periodic save, keep the newest N, resume from the latest.

One checkpoint holds the whole train state pytree (networks, optimizer states, counters,
RNG, loss scale, GAN image pools) plus a small JSON record (epoch, data position, wall
time) so a run restarted in the same workdir continues exactly where it stopped.
"""

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No checkpoint in a run's folder could be restored."""


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
    """Restores ``(state, meta)`` at ``step`` (default: latest) with target's shardings.

    Raises:
      FileNotFoundError: there is no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}: train first "
                              "(the same --workdir), or point --workdir at a trained run.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target_state)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored["state"], restored["meta"]

  def restore_meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    return self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
