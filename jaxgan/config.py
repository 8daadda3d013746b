"""Run configs: fields by dotted name, checks that name the fix, and the copy kept with a run.

A config is an ``ml_collections.ConfigDict`` from ``experiments/configs/<system>.py``.
Every check here runs before any data is read and raises one ``ValueError`` that names
the field and a value that works, so a typo costs seconds, not a run. A run writes its
config to ``WORKDIR/config.json``; the tools that read a run (``sample``, ``translate``,
``evaluate``, the classifier judge) read it back from there.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

# A field only that system's configs have, to tell one run's folder from another's.
SYSTEM_MARKERS = {"darknet": "max_lr", "wgan": "critic_iters", "cyclegan": "lambda_a"}
SYSTEM_NAMES = {"darknet": "a Darknet run", "wgan": "a WGAN run", "cyclegan": "a CycleGAN run"}

# Fields renamed so that the three systems spell one concept one way: old name -> new.
# An old name on the command line is an error that names the new one; a run folder
# written before the rename is read with its fields moved (`upgrade`).
RENAMED = {
    "darknet": {"dataset": "data.source (tfds or fashion_mnist) with data.name (cifar10)",
                "data_dir": "data.data_dir", "max_train_examples": "data.max_images",
                "max_test_examples": "data.max_test_images"},
    "cyclegan": {"n_samples": "num_samples", "b1": "adam_b1", "b2": "adam_b2"},
}


# Fields added after runs were already written, with the value that reproduces how those
# runs behaved: a run folder without one is read with it (`upgrade`).
ADDED = {
    "wgan": {"ema_decay": 0.0, "model.spectral_norm": False, "data.margin": 0,
             "data.heldout_fraction": 0.0, "data.split_seed": 42, "data.prepared": "",
             "data.placement": "auto", "data.num_threads": 0},
    "cyclegan": {"ema_decay": 0.0, "data.num_workers": 0, "data.num_threads": 0,
                 "data.prefetch": 2},
}


def get(config, name: str):
  """``config.a.b`` for ``name`` = "a.b"."""
  value = config
  for part in name.split("."):
    value = getattr(value, part)
  return value


def override(config, fields: dict | None = None, /, **named):
  """Sets fields of a (locked) config in place and returns it.

  ``fields`` may name nested fields with dots (``{"data.load_size": 143}``); keyword
  arguments are top-level names. Setting a field the config lacks raises, as the command
  line does.
  """
  with config.unlocked():
    for name, value in [*(fields or {}).items(), *named.items()]:
      *path, last = name.split(".")
      target = config
      for part in path:
        target = getattr(target, part)
      if last not in target:
        raise AttributeError(f"config has no field {name!r}")
      setattr(target, last, value)
  return config


# ----------------------------------------------------------------------------- checks

def choice(config, name: str, choices) -> None:
  value = get(config, name)
  if value not in choices:
    raise ValueError(f"config.{name}={value!r} is not one of {sorted(choices, key=str)}: "
                     f"set --config.{name}=<one of them>.")


def positive(config, *names: str) -> None:
  for name in names:
    if get(config, name) <= 0:
      raise ValueError(f"config.{name}={get(config, name)} must be positive: set "
                       f"--config.{name} to a value above 0.")


def non_negative(config, *names: str) -> None:
  for name in names:
    if get(config, name) < 0:
      raise ValueError(f"config.{name}={get(config, name)} must not be negative: set "
                       f"--config.{name} to 0 or more.")


def check_renamed(system: str, overrides) -> None:
  """Raises if a command-line override (``--config.NAME=...``) uses a renamed field."""
  renamed = RENAMED.get(system, {})
  for name in overrides:
    if name in renamed:
      raise ValueError(f"config.{name} was renamed: use --config.{renamed[name]}.")


# ----------------------------------------------------------------------------- a run's copy

def run_system(config) -> str | None:
  """"darknet", "wgan" or "cyclegan": which system a run's config belongs to."""
  return next((name for name, key in SYSTEM_MARKERS.items() if key in config), None)


def upgrade(raw: dict, system: str | None) -> dict:
  """A run's config as written before the renames of `RENAMED` (its fields moved) or the
  additions of `ADDED` (each filled with its old behaviour)."""
  raw = json.loads(json.dumps(raw))  # a deep copy
  if system == "darknet" and "dataset" in raw:
    data = raw.setdefault("data", {})
    name = raw.pop("dataset")
    data["source"] = "fashion_mnist" if name == "fashion_mnist" else "tfds"
    data["name"] = "cifar10" if name == "fashion_mnist" else name
    data["data_dir"] = raw.pop("data_dir", "")
    data["max_images"] = raw.pop("max_train_examples", 0)
    data["max_test_images"] = raw.pop("max_test_examples", 0)
  if system == "cyclegan":
    for old, new in (("n_samples", "num_samples"), ("b1", "adam_b1"), ("b2", "adam_b2")):
      if old in raw:
        raw[new] = raw.pop(old)
  for name, value in ADDED.get(system, {}).items():
    *path, last = name.split(".")
    node = raw
    for part in path:
      node = node.setdefault(part, {})
    node.setdefault(last, value)
  return raw


def read_config(workdir: str, system: str | None = None) -> ml_collections.ConfigDict:
  """The config a run in ``workdir`` was started with (its config.json).

  ``system``: the run must be of that system ("darknet", "wgan", "cyclegan"); a folder of
  another one is a clear error, not a KeyError later.
  """
  what = SYSTEM_NAMES.get(system, "a training run")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be the folder of {what} "
                            "(the --workdir it was trained with).")
  with open(path) as f:
    raw = json.load(f)
  found = run_system(raw)
  if system is not None and found != system:
    raise ValueError(f"{workdir} holds {SYSTEM_NAMES.get(found, 'something else')}, not "
                     f"{what}: point --workdir at {what}'s folder.")
  return ml_collections.ConfigDict(upgrade(raw, found))


def write_config(workdir: str, config) -> None:
  """Writes ``WORKDIR/config.json`` (process 0 only)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
