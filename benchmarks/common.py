"""The flags every benchmark script shares, defined once per process (the tests import
several scripts together), with the same meaning in each:

  --steps     timed steps (or calls) per round
  --rounds    rounds taken in turns, each program timed once a round
  --variant   the config variant (default: each system's main one)
  --budget_s  seconds a script may spend timing before it stops starting more
  --cases     which of the script's cases to run (default: all)
  --out       where results go (a file, or a folder for gpu_check)

and the knobs of the step itself: --batch, --precision, --cpu_sizes, --xla_defaults,
--formulations. ``--out`` is the flag ``experiments.common`` defines for the entry points.
"""

from absl import flags

from experiments import common  # noqa: F401  (defines --out)

flags.DEFINE_integer("steps", None, "Timed steps (or calls) per round (default: the "
                     "script's).", lower_bound=1)
flags.DEFINE_integer("rounds", None, "Rounds taken in turns (default: the script's).",
                     lower_bound=1)
flags.DEFINE_string("variant", None, "Config variant (default: the system's main one).")
flags.DEFINE_float("budget_s", None, "Seconds to spend timing (default: the script's).")
flags.DEFINE_list("cases", None, "Only these cases (default: all the script has).")
flags.DEFINE_integer("batch", None, "Global batch size (default: the config's).")
flags.DEFINE_enum("precision", None, ["fp32", "bf16", "fp16"], "Compute precision.")
flags.DEFINE_boolean("cpu_sizes", False, "The lesson's sizes for a CPU, fp32 "
                     "(benchmarks.benchmark.CPU_SIZES).")
flags.DEFINE_boolean("xla_defaults", False, "Compile jaxgan's steps without its CPU compiler "
                     "options (jaxgan.ops.compiler_options), to see what they change.")
flags.DEFINE_list("formulations", None, "Convolution formulations to compare (default: "
                  "the script's).")
FLAGS = flags.FLAGS


def value(flag: str, default):
  """A shared flag's value, or this script's default where it was not given."""
  given = getattr(FLAGS, flag)
  return default if given is None else given
