"""Config checks that every system runs once, before any data is read.

Each error names the field and a value that works, so a typo costs seconds, not a run.
"""


def field(config, name: str):
  """``config.a.b`` for ``name`` = "a.b"."""
  value = config
  for part in name.split("."):
    value = getattr(value, part)
  return value


def choice(config, name: str, choices) -> None:
  value = field(config, name)
  if value not in choices:
    raise ValueError(f"config.{name}={value!r} is not one of {sorted(choices, key=str)}: "
                     f"set --config.{name}=<one of them>.")


def positive(config, *names: str) -> None:
  for name in names:
    if field(config, name) <= 0:
      raise ValueError(f"config.{name}={field(config, name)} must be positive.")


def non_negative(config, *names: str) -> None:
  for name in names:
    if field(config, name) < 0:
      raise ValueError(f"config.{name}={field(config, name)} must not be negative.")
