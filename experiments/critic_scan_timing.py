r"""WGAN critic steps on XLA:CPU: rolled lax.scan vs unrolled, with and without conv routing.

  python -m experiments.critic_scan_timing [--ndf 24,64] [--steps 5]

Builds the real ``jaxgan.train.wgan.WGAN`` from the ``fashion_mnist`` config (32x32, 1
channel, DCGAN critic and generator), and times one call of ``--steps`` critic steps (the
iteration's first program) as the rolled ``lax.scan`` jaxgan runs and unrolled
(``critic_steps(..., unroll=True)``, what jaxgan's CPU configs did before the routing), each traced with every conv as ``lax.conv_general_dilated``
("lax", the code before routing) and as jaxgan.ops routes it ("routed"). The programs take
turns and keep their fastest call. For each it also counts, in the optimised HLO, the
convolutions and how many of them sit in a layout other than Eigen's (b01f_01io->b01f),
inside the scan's while loop and outside it: the cause of the loop's slowness.
"""

import functools
import os
import time
from unittest import mock

import jax
import numpy as np
from absl import app, flags

from experiments.configs import wgan as wgan_configs
from jaxgan import ops, parallel
from jaxgan.train import wgan

flags.DEFINE_list("ndf", ["24", "64"], "Critic/generator widths (the config's is 24).")
flags.DEFINE_integer("steps", 5, "Critic steps per call.")
flags.DEFINE_integer("rounds", 3, "Timed calls per program.")
FLAGS = flags.FLAGS

def program(ndf: int, steps: int, rolled: bool, formulation: str):
  """(compiled critic-steps call, state, block, compile seconds) for one variant."""
  config = wgan_configs.get_config("fashion_mnist")
  with config.unlocked():
    config.model.ndf = config.model.ngf = ndf
  steps_fn = wgan.critic_steps if rolled else functools.partial(wgan.critic_steps, unroll=True)
  with mock.patch.object(wgan, "critic_steps", steps_fn):
    net = wgan.WGAN(config, parallel.make_mesh())  # fresh jit objects: a fresh trace
  state = net.init_state()
  block = jax.device_put(
      np.random.default_rng(0).integers(0, 256, net.block_shape(steps), np.uint8),
      net.block_sharding)
  with ops.force("lax" if formulation == "lax" else None):
    start = time.perf_counter()
    lowered, _ = net.lower(state, block)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
  return compiled, state, block, seconds


def main(argv):
  del argv
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
  for ndf in map(int, FLAGS.ndf):
    progs = {}
    for rolled in (True, False):
      for formulation in ("lax", "routed"):
        compiled, state, block, seconds = program(ndf, FLAGS.steps, rolled, formulation)
        state, _ = compiled(state, {}, block)  # warm-up; the state is donated, keep the new one
        jax.block_until_ready(state)
        progs[("scan" if rolled else "unrolled", formulation)] = [
            compiled, state, block, seconds, np.inf, ops.conv_census(compiled.as_text())]
    for _ in range(FLAGS.rounds):
      for prog in progs.values():
        t = time.perf_counter()
        prog[1], _ = prog[0](prog[1], {}, prog[2])
        jax.block_until_ready(prog[1])
        prog[4] = min(prog[4], time.perf_counter() - t)
    load = os.getloadavg()[0]
    for (how, formulation), (_, _, _, seconds, best, census) in progs.items():
      print(f"ndf {ndf:3d} {how:8s} {formulation:6s}: {FLAGS.steps} critic steps "
            f"{best * 1e3:8.1f} ms; convs in loop {census['loop'][0]} "
            f"({census['loop'][1]} non-Eigen), outside {census['outside'][0]} "
            f"({census['outside'][1]} non-Eigen); compile {seconds:.1f} s; load {load:.2f}",
            flush=True)


if __name__ == "__main__":
  app.run(main)
