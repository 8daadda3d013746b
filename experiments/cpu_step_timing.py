r"""Darknet training-step speed with and without jaxgan.ops' conv routing (issue 10).

  python -m experiments.cpu_step_timing [--nets cifar,fmnist] [--precisions fp32,bf16]

One step = forward + backward + SGD-momentum update with weight decay, BatchNorm in
training mode, jitted and compiled ahead of time. "lax" traces every conv as
``lax.conv_general_dilated`` (the code before routing), "routed" as the models now do. The
programs take turns, one step at a time, each keeping its fastest step and its median; the
load average is printed with each figure because the machine is shared.
"""

import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from jaxgan import models, ops

flags.DEFINE_list("nets", ["cifar", "fmnist28", "fmnist32"], "Which of NETS to time.")
flags.DEFINE_list("precisions", ["fp32"], "fp32 and/or bf16 compute (fp32 parameters).")
flags.DEFINE_list("formulations", ["lax", "routed"], "lax: no routing; routed: the rule.")
flags.DEFINE_integer("steps", 6, "Timed steps per program (after one warm-up step).")
flags.DEFINE_float("max_seconds", 120.0, "Stop a net's rounds after this long.")
FLAGS = flags.FLAGS

# name: (Darknet arguments, batch, input side, channels)
NETS = {
    "cifar": (dict(num_blocks=(1, 2, 4, 6, 3), nf=32), 64, 32, 3),
    "fmnist28": (dict(num_blocks=(1, 1, 1), nf=8), 128, 28, 1),
    "fmnist32": (dict(num_blocks=(1, 1, 1), nf=8), 128, 32, 1),
}


def compiled_step(net: str, precision: str, formulation: str):
  """An AOT-compiled train step and its arguments."""
  kwargs, batch, size, channels = NETS[net]
  dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
  model = models.Darknet(**kwargs, dtype=dtype)
  x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  variables = model.init(jax.random.key(2), x[:1])
  tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
  opt_state = tx.init(variables["params"])

  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  args = (variables["params"], variables["batch_stats"], opt_state, x, y)
  with ops.force("lax" if formulation == "lax" else None):
    t = time.perf_counter()
    compiled = jax.jit(step).lower(*args).compile()
    compile_s = time.perf_counter() - t
  return compiled, args, batch, compile_s


def main(argv):
  del argv
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
  for net in FLAGS.nets:
    progs = {}
    for precision in FLAGS.precisions:
      for formulation in FLAGS.formulations:
        compiled, args, batch, compile_s = compiled_step(net, precision, formulation)
        jax.block_until_ready(compiled(*args))  # warm-up
        progs[(precision, formulation)] = (compiled, args, batch, compile_s, [])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      for compiled, args, _, _, times in progs.values():
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
      if time.perf_counter() - start > FLAGS.max_seconds:
        break
    load = os.getloadavg()
    for (precision, formulation), (_, _, batch, compile_s, times) in progs.items():
      best, median = min(times), statistics.median(times)
      print(f"{net:9s} {precision} {formulation:6s}: best {best * 1e3:7.1f} ms "
            f"({batch / best:6.1f} img/s), median {median * 1e3:7.1f} ms "
            f"({batch / median:6.1f} img/s), {len(times)} steps, compile {compile_s:.1f} s, "
            f"load {load[0]:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
