"""Pieces every training loop shares: run timing, progress bars, start-up checks."""

import sys
import time

import jax
from tqdm import tqdm


def progress(iterable, total: int, desc: str):
  """A tqdm bar on process 0 only; other hosts iterate silently."""
  return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
              disable=jax.process_index() != 0, file=sys.stderr)


class Stopwatch:
  """Wall time that survives a resume: ``offset`` is the time spent before the restart."""

  def __init__(self, offset: float = 0.0):
    self.offset = offset
    self._start = time.perf_counter()

  def elapsed(self) -> float:
    return self.offset + time.perf_counter() - self._start


def check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"config.{name}={value!r} is not one of {sorted(choices)}: "
                     f"set --config.{name}=<one of them>.")


def check_positive(config, *names) -> None:
  for name in names:
    value = config
    for part in name.split("."):
      value = getattr(value, part)
    if value <= 0:
      raise ValueError(f"config.{name}={value} must be positive.")


class _LibraryNoiseFilter:
  """Drops INFO chatter from orbax, grain and jax internals; keeps their warnings."""
  NOISY = ("orbax", "/grain/", "/jax/_src/", "/absl/")

  def filter(self, record) -> bool:
    return record.levelno >= 30 or not any(n in record.pathname for n in self.NOISY)


def quiet_library_logs() -> None:
  """Keeps a run's log to the run: epochs, metrics, checkpoints (not every orbax step)."""
  import logging as pylogging
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _LibraryNoiseFilter) for f in handler.filters):
    handler.addFilter(_LibraryNoiseFilter())
  pylogging.getLogger("jax").setLevel(pylogging.WARNING)


def with_overrides(config, **fields):
  """Sets the given config fields, skipping those passed as None (e.g. benchmark flags)."""
  with config.unlocked():
    for name, value in fields.items():
      if value is not None and value != 0:
        setattr(config, name, value)
  return config
