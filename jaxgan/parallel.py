"""Data parallelism with one jitted program over a ("data",) mesh of every device.

The batch is sharded along its first axis (`jaxgan.data.feed` builds every batch and its
sharding) and the train state is replicated, so the gradient is the global-batch mean and
BatchNorm sees global-batch statistics with no extra code. The same program spans several
hosts after ``jax.distributed.initialize()``.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run when the launcher says so; a no-op otherwise.

  * ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``: any cluster, or several processes on one machine;
  * ``JAXGAN_DISTRIBUTED=1``: let JAX find them (SLURM, Open MPI, Kubernetes, TPU pods).

  CPU processes exchange gradients through gloo (TCP); GPUs and TPUs use their own links.
  """
  if jax.distributed.is_initialized():
    return
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address and not os.environ.get("JAXGAN_DISTRIBUTED"):
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if address and os.environ.get("JAX_NUM_PROCESSES"):
    jax.distributed.initialize(address, int(os.environ["JAX_NUM_PROCESSES"]),
                               int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    lower, upper = batch_size - batch_size % n, batch_size + n - batch_size % n
    raise ValueError(f"{what}={batch_size} does not divide by the {n} devices: set "
                     f"--config.{what}={lower or upper} or {upper}.")


def abstract_replicated(shapes, mesh: Mesh):
  """``jax.eval_shape`` output → ShapeDtypeStructs replicated over ``mesh`` (restore targets)."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


def replicate(tree, mesh: Mesh):
  """Puts a host pytree on every device (the state, small data sets)."""
  return jax.device_put(tree, replicated(mesh))
