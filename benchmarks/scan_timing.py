r"""WGAN critic steps on XLA:CPU: the rolled lax.scan jaxgan runs against the same steps
unrolled, each with and without convolution routing.

  python -m benchmarks.scan_timing [--ndf 24,64] [--steps 5] [--rounds 3]

Builds the critic program of the ``fashion_mnist`` config (32x32, 1 channel, DCGAN critic
and generator) as training does (`jaxgan.train.wgan.make_programs`: one ``lax.scan`` over
``--steps`` critic steps), and beside it the same ``--steps`` calls of
`jaxgan.train.wgan.critic_step` written out one after another in one program ("unrolled":
what jaxgan's CPU configs ran before the routing). Each is traced with every conv as
``lax.conv_general_dilated`` ("lax", the code before routing) and as jaxgan.ops routes it
("routed"). The programs take turns and keep their fastest call. For each it also counts,
in the optimised HLO, the convolutions and how many of them sit in a layout other than
Eigen's (b01f_01io->b01f), inside the scan's while loop and outside it: the cause of the
loop's slowness.
"""

import os
import time

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from experiments.configs import wgan as wgan_configs
from jaxgan import config as config_lib, ops, parallel
from jaxgan.data import feed
from jaxgan.train import wgan

flags.DEFINE_list("ndf", ["24", "64"], "Critic/generator widths (the config's is 24).")
FLAGS = flags.FLAGS
STEPS, ROUNDS = 5, 3


def unrolled_critic_steps(state, blocks, *, settings):
  """The critic steps of `wgan.critic_steps` as a Python loop: one after another, no scan."""
  critic_key = jax.random.fold_in(state.rng, 1)
  critic_net, gen_batch_stats = state.critic, state.generator.batch_stats
  for i in range(blocks.shape[0]):
    key = jax.random.fold_in(critic_key, state.data_position + i)
    critic_net, gen_batch_stats, _ = wgan.critic_step(
        critic_net, state.generator.replace(batch_stats=gen_batch_stats), blocks[i], key,
        **settings)
  return state.replace(critic=critic_net,
                       generator=state.generator.replace(batch_stats=gen_batch_stats),
                       data_position=state.data_position + blocks.shape[0]), {}


def program(config, mesh, steps: int, rolled: bool, formulation: str):
  """(compiled critic-steps call, state, block, compile seconds) for one variant."""
  if rolled:
    jitted = wgan.make_programs(config, mesh).critic.jitted  # a fresh jit: a fresh trace
  else:
    generator, critic = wgan.build_models(config)
    settings = dict(generator=generator, critic=critic,
                    critic_tx=wgan.make_optimizer(config, config.lr_d), loss=config.loss,
                    clip_value=config.clip_value, gp_weight=config.gp_weight,
                    nz=config.model.nz, batch_sharding=feed.batch_sharding(mesh))
    jitted = ops.jit(lambda state, arrays, blocks: unrolled_critic_steps(
        state, blocks, settings=settings), donate_argnums=(0,))
  state = wgan.initial_state(config, mesh)
  isize = config.model.isize
  block = jax.device_put(
      np.random.default_rng(0).integers(0, 256, (steps, config.batch_size, isize, isize, 1),
                                        np.uint8), feed.batch_sharding(mesh, 1))
  with ops.force("lax" if formulation == "lax" else None):
    start = time.perf_counter()
    compiled = jitted.lower(state, {}, block).compile()
    seconds = time.perf_counter() - start
  return compiled, state, block, seconds


def main(argv):
  del argv
  steps, rounds = common.value("steps", STEPS), common.value("rounds", ROUNDS)
  mesh = parallel.make_mesh()
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
  for ndf in map(int, FLAGS.ndf):
    config = config_lib.override(wgan_configs.get_config("fashion_mnist"),
                                 {"model.ndf": ndf, "model.ngf": ndf})
    progs = {}
    for rolled in (True, False):
      for formulation in ("lax", "routed"):
        compiled, state, block, seconds = program(config, mesh, steps, rolled, formulation)
        state, _ = compiled(state, {}, block)  # warm-up; the state is donated, keep the new one
        jax.block_until_ready(state)
        progs[("scan" if rolled else "unrolled", formulation)] = [
            compiled, state, block, seconds, np.inf, ops.conv_census(compiled.as_text())]
    for _ in range(rounds):
      for prog in progs.values():
        t = time.perf_counter()
        prog[1], _ = prog[0](prog[1], {}, prog[2])
        jax.block_until_ready(prog[1])
        prog[4] = min(prog[4], time.perf_counter() - t)
    load = os.getloadavg()[0]
    for (how, formulation), (_, _, _, seconds, best, census) in progs.items():
      print(f"ndf {ndf:3d} {how:8s} {formulation:6s}: {steps} critic steps "
            f"{best * 1e3:8.1f} ms; convs in loop {census['loop'][0]} "
            f"({census['loop'][1]} non-Eigen), outside {census['outside'][0]} "
            f"({census['outside'][1]} non-Eigen); compile {seconds:.1f} s; load {load:.2f}",
            flush=True)


if __name__ == "__main__":
  app.run(main)
