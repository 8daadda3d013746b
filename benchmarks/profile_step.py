r"""Where one training step's time goes: a profile of the benchmark's step, summarised.

  python -m benchmarks.profile_step cyclegan --precision bf16 [--steps 3] [--top 25]
  python -m benchmarks.profile_step wgan --variant smoke --out /tmp/trace

Builds the same step as ``benchmarks.benchmark`` (config, sizes and flags alike), warms
it up, records ``--steps`` steps with ``jax.profiler`` (a Perfetto trace, kept in the
folder ``--out`` for a closer look) and prints, for each device (on a CPU: the host's
XLA ops), the time per step, the ops or kernels that took most of it,
and the same grouped by kind (the name without its numeric suffix: all ``fusion.N`` as
one). Read it next to the benchmark's table: a step far from the device's peak shows here
whether kernels, copies or gaps between them are to blame.
"""

import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax
from absl import app, flags

from benchmarks import benchmark, common

flags.DEFINE_integer("top", 25, "Rows per table.", lower_bound=1)
FLAGS = flags.FLAGS
STEPS = 3  # --steps when not given


def kind_of(name: str) -> str:
  """``fusion.12`` -> ``fusion``; ``loop_add_fusion_3`` -> ``loop_add_fusion``."""
  return re.sub(r"([._]\d+)+$", "", name)


def summarise(trace_file: str, steps: int, top: int) -> list[str]:
  """Per device (or XLA host thread): time per step, top events, top kinds."""
  with gzip.open(trace_file) as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  names = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  per_process = collections.defaultdict(lambda: (collections.Counter(), collections.Counter()))
  for e in events:
    if e.get("ph") != "X" or "dur" not in e:
      continue
    process = names.get(e["pid"], str(e["pid"]))
    on_device = re.search(r"/device:(GPU|TPU)", process) or "hlo_op" in e.get("args", {})
    if not on_device:
      continue
    totals, counts = per_process[process]
    totals[e["name"]] += e["dur"]
    counts[e["name"]] += 1
  lines = []
  for process, (totals, counts) in per_process.items():
    busy = sum(totals.values()) / steps / 1e3
    lines.append(f"== {process}: {busy:.2f} ms of events per step")
    for name, micros in totals.most_common(top):
      lines.append(f"{micros / steps / 1e3:9.3f} ms  x{counts[name] / steps:<6.4g} {name[:110]}")
    kinds, kind_counts = collections.Counter(), collections.Counter()
    for name, micros in totals.items():
      kinds[kind_of(name)] += micros
      kind_counts[kind_of(name)] += counts[name]
    lines.append("-- by kind")
    for kind, micros in kinds.most_common(top):
      lines.append(f"{micros / steps / 1e3:9.3f} ms  x{kind_counts[kind] / steps:<6.4g} {kind[:110]}")
  return lines


def main(argv):
  names = list(benchmark.SYSTEMS)
  if len(argv) != 2 or argv[1] not in names:
    raise app.UsageError(f"usage: python -m benchmarks.profile_step {{{','.join(names)}}}")
  name = argv[1]
  variant = FLAGS.variant or benchmark.SYSTEMS[name][1]
  config, (step, carry, *_) = benchmark.build(
      name, variant, FLAGS.batch, FLAGS.precision,
      benchmark.CPU_SIZES[name] if FLAGS.cpu_sizes else None, FLAGS.xla_defaults)
  trace_dir = FLAGS.out or tempfile.mkdtemp(prefix="jaxgan_trace_")
  steps = common.value("steps", STEPS)
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(steps):
      carry = step(carry)
    jax.block_until_ready(carry)
    wall = (time.perf_counter() - start) / steps
  (trace_file,) = sorted(glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz",
                                   recursive=True))[-1:]
  print(f"{name} {variant}, {config.precision}, {steps} steps on "
        f"{jax.devices()[0].device_kind}, {1e3 * wall:.2f} ms a step while traced; "
        f"trace: {trace_file}")
  print("\n".join(summarise(trace_file, steps, FLAGS.top)), flush=True)


if __name__ == "__main__":
  app.run(main)
