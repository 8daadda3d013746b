"""Mixed precision: fp32 / bf16 / fp16 compute with fp32 parameters, and fp16 loss scaling.

Parameters and BatchNorm statistics always stay fp32 (``param_dtype``); only the
activations and matmuls run in the compute type. bf16 has fp32's exponent range and needs no
loss scaling; fp16 does: ``LossScale`` multiplies the loss before differentiation, divides
the gradient afterwards, halves itself and skips the step when the gradient is not finite,
and doubles after ``growth_interval`` finite steps in a row.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

COMPUTE_DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class Policy:
  name: str
  compute_dtype: Any
  param_dtype: Any = jnp.float32

  @property
  def needs_loss_scaling(self) -> bool:
    return self.name == "fp16"


def get_policy(name: str) -> Policy:
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"precision={name!r} is not one of {sorted(COMPUTE_DTYPES)}: "
                     "set --config.precision=fp32, bf16 or fp16.")
  return Policy(name, COMPUTE_DTYPES[name])


@flax.struct.dataclass
class LossScale:
  """Dynamic loss scale state; lives in the train state so a resume keeps it."""
  scale: jax.Array
  good_steps: jax.Array
  growth_interval: int = flax.struct.field(pytree_node=False, default=2000)

  @classmethod
  def create(cls, initial_scale: float = 2.0**15, growth_interval: int = 2000):
    return cls(jnp.asarray(initial_scale, jnp.float32), jnp.zeros((), jnp.int32),
               growth_interval)

  def unscale(self, grads):
    """Undo the scaling; returns (fp32 grads, whether every entry is finite)."""
    grads = jax.tree.map(lambda g: g.astype(jnp.float32) / self.scale, grads)
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    return grads, finite

  def update(self, finite):
    grow = finite & (self.good_steps + 1 >= self.growth_interval)
    scale = jnp.where(finite, jnp.where(grow, self.scale * 2, self.scale), self.scale / 2)
    good = jnp.where(finite & ~grow, self.good_steps + 1, 0)
    return self.replace(scale=jnp.maximum(scale, 1.0), good_steps=good)


def select_tree(pred, on_true, on_false):
  """Elementwise ``pred ? on_true : on_false`` over two pytrees of the same structure."""
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)
