"""A run's folder: starting a run in it, and reading a trained run back from it.

`start` is the set-up every system's ``train_and_evaluate`` does first, written once:
join a multi-process run, check the config, check and hold the workdir (one run at a
time, `jaxgan.train.workdir`), build the mesh and check that the batches divide over it,
all before any data is read. `restore` is how every tool that
reads a run (``experiments.sample``, ``translate``, ``evaluate``, the classifier judge,
``darknet --mode eval``) gets it: its config, its train state and its step.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from jax.sharding import Mesh

from jaxgan import checkpoint, config as config_lib, parallel
from jaxgan.train import workdir as run_folder


def start(config, workdir: str, *, validate: Callable[[Any], None],
          batch_sizes: dict[str, int]) -> Mesh:
  """Set-up before any data is read; returns the ("data",) mesh of every device.

  Args:
    config: the run's config.
    workdir: the run's folder (must be writable).
    validate: the system's config check.
    batch_sizes: ``{config field: global batch size}`` of each batch the run splits over
      the devices.
  """
  parallel.maybe_initialize_distributed()  # first: it must precede any other JAX call
  validate(config)
  run_folder.check_writable(workdir)  # before hours of data loading, not after
  run_folder.hold(workdir)  # one run per workdir; the training loop gives it back
  mesh = parallel.make_mesh()
  for name, size in batch_sizes.items():
    parallel.check_batch_divisible(size, mesh, name)
  return mesh


class Run(NamedTuple):
  """A trained run read back from its folder."""
  workdir: str
  system: str  # "darknet", "wgan" or "cyclegan"
  config: Any  # its config.json (or the config given)
  state: Any  # the train state of the checkpoint, replicated over `mesh`
  step: int  # the checkpoint's step
  mesh: Mesh


def restore(workdir: str, system: str | None = None, *, step: int | None = None,
            config=None) -> Run:
  """The newest checkpoint (or ``step``'s) of the run in ``workdir``.

  Args:
    workdir: the run's folder.
    system: the run must be of this system; a folder of another is a clear error.
    step: a checkpoint step (default: the newest that restores).
    config: the run's config, if not its config.json.

  Raises:
    FileNotFoundError: no run, or no checkpoint, in ``workdir``.
    ValueError: the run is of another system.
  """
  config = config_lib.read_config(workdir, system) if config is None else config
  found = config_lib.run_system(config)
  module = importlib.import_module(f"jaxgan.train.{found}")
  module.validate_config(config)
  mesh = parallel.make_mesh()
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    state, meta = ckpt.restore(module.abstract_state(config, mesh), step)
  finally:
    ckpt.close()
  return Run(workdir, found, config, state, int(meta["step"]), mesh)
