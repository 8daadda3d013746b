r"""A system's real training step with and without jaxgan.ops' convolution routing, in turns.

  python -m benchmarks.step_timing [--cases darknet:cifar10,darknet:fashion_mnist]
      [--precisions fp32,bf16] [--formulations lax,routed] [--steps 6] [--budget_s 120]

Each case is ``system:variant``; the step is the one training runs (`benchmarks.benchmark`
builds it: data gather and augmentation included), compiled ahead of time once per
formulation: "lax" traces every conv as ``lax.conv_general_dilated`` (``ops.force``: the
code before routing), "routed" as the models do. The programs then take turns, one step
at a time, each keeping its fastest step and its median; the load average is printed with
each figure because the machine may be shared. ``--cpu_sizes`` shrinks the configs as
the benchmark does.
"""

import os
import statistics
import time

import jax
from absl import app, flags

from benchmarks import benchmark, common
from jaxgan import ops

flags.DEFINE_list("precisions", ["fp32"], "fp32 and/or bf16 compute (fp32 parameters).")
FLAGS = flags.FLAGS
CASES = ("darknet:cifar10", "darknet:fashion_mnist")
FORMULATIONS, STEPS, BUDGET_S = ("lax", "routed"), 6, 120.0


def main(argv):
  del argv
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}", flush=True)
  for case in FLAGS.cases or CASES:
    system, _, variant = case.partition(":")
    progs = {}
    for precision in FLAGS.precisions:
      for formulation in common.value("formulations", FORMULATIONS):
        with ops.force("lax" if formulation == "lax" else None):
          _, (step, carry, images, _, compile_s) = benchmark.build(
              system, variant or None, FLAGS.batch, precision,
              benchmark.CPU_SIZES[system] if FLAGS.cpu_sizes else None)
        progs[(precision, formulation)] = [step, carry, images, compile_s, []]
    start = time.perf_counter()
    for _ in range(common.value("steps", STEPS)):
      for prog in progs.values():
        t = time.perf_counter()
        prog[1] = jax.block_until_ready(prog[0](prog[1]))
        prog[4].append(time.perf_counter() - t)
      if time.perf_counter() - start > common.value("budget_s", BUDGET_S):
        break
    load = os.getloadavg()
    for (precision, formulation), (_, _, images, compile_s, times) in progs.items():
      best, median = min(times), statistics.median(times)
      print(f"{case:24s} {precision} {formulation:6s}: best {best * 1e3:7.1f} ms "
            f"({images / best:6.1f} img/s), median {median * 1e3:7.1f} ms "
            f"({images / median:6.1f} img/s), {len(times)} steps, compile {compile_s:.1f} s,"
            f" load {load[0]:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
