"""What every entry point shares: the --config and --workdir flags, quiet library logs, and
user errors shown as one line instead of a traceback.

The flags are defined here, once per process, so any number of entry points can be
imported together (the tests do) and --config / --workdir mean the same in all of them.
"""

import logging as pylogging
import signal
import sys

from absl import app, flags
from absl import logging
from ml_collections import config_flags

from jaxgan import checkpoint, config as config_lib
from jaxgan.train import loop, workdir

config_flags.DEFINE_config_file(
    "config", None, "Config file and variant, e.g. experiments/configs/wgan.py:fashion_mnist;"
    " override fields with --config.FIELD=VALUE.", lock_config=True)
flags.DEFINE_string("workdir", None, "The run's folder: config.json, metrics, samples, "
                    "checkpoints. The same command in the same folder resumes.")
# Flags that several tools read with the same meaning (each tool's default where None).
flags.DEFINE_integer("step", None, "Checkpoint step to use (default: the newest).")
flags.DEFINE_integer("seed", 0, "Seed of the noise that draws samples.")
flags.DEFINE_integer("num", None, "How many images (sample: 64; evaluate: 2000).")
flags.DEFINE_boolean("raw_weights", False, "sample, evaluate, translate: use the weights "
                     "training updated, not their average (for runs with ema_decay > 0).")
flags.DEFINE_string("out", None, "File to write (sample: samples.png; evaluate: "
                    "WORKDIR/evaluation.json).")
FLAGS = flags.FLAGS

# What a user can fix from the message alone; anything else is a bug and keeps its traceback.
USER_ERRORS = (FileNotFoundError, PermissionError, ValueError, loop.NonFiniteError,
               checkpoint.CheckpointError, workdir.WorkdirInUse)


class _LibraryNoiseFilter:
  """Drops INFO chatter from orbax, grain and jax internals; keeps their warnings."""
  NOISY = ("orbax", "/grain/", "/jax/_src/", "/absl/")

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
  """Keeps a run's log to the run: epochs, metrics, checkpoints (not every orbax step)."""
  logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _LibraryNoiseFilter) for f in handler.filters):
    handler.addFilter(_LibraryNoiseFilter())
  pylogging.getLogger("jax").setLevel(pylogging.WARNING)


def require(*names: str, example: str) -> None:
  missing = [f"--{n}" for n in names if getattr(FLAGS, n) is None]
  if missing:
    raise app.UsageError(f"{' and '.join(missing)} required, e.g. {example}")


def config_overrides(argv) -> list[str]:
  """The fields a command line overrides: ``--config.data.path=X`` → ``data.path``."""
  return [arg[len("--config."):].split("=")[0] for arg in argv if arg.startswith("--config.")]


def run(main, system: str | None = None) -> None:
  """``app.run(main)``; a user error ends with its one-line message and exit status 1.

  ``system``: the entry point's system; a field it renamed, given on the command line,
  is such an error, naming the new field. A run stopped by SIGTERM or Ctrl-C
  (checkpointed, resumable) exits with 128 + the signal's number, as a killed process
  would, so schedulers see it did not finish.
  """
  if system is not None:
    try:
      config_lib.check_renamed(system, config_overrides(sys.argv))
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)

  def guarded(argv):
    quiet_library_logs()
    try:
      record = main(argv)
    except USER_ERRORS as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(1)
    if isinstance(record, dict) and record.get("stopped_by"):
      sys.exit(128 + signal.Signals[record["stopped_by"]].value)
  app.run(guarded)
