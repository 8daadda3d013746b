"""Run outputs: metrics as JSON lines and TensorBoard events, images as PNG and TensorBoard.

Only process 0 writes. TensorBoard goes through tensorboardX, which does not import
TensorFlow.
"""

import json
import os
import time

import jax
import numpy as np


def _to_python(value):
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
  """Appends ``{"step": s, "time": t, **scalars}`` to ``metrics.jsonl`` and TensorBoard."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # Lazy: only the writing process needs it.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write_scalars(self, step: int, scalars: dict) -> dict:
    scalars = {k: _to_python(v) for k, v in scalars.items()}
    if self.enabled:
      self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
      self._jsonl.flush()
      for k, v in scalars.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(k, v, int(step))
      self._tb.flush()
    return scalars

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """``image``: (H, W, C) uint8."""
    if self.enabled:
      self._tb.add_image(tag, np.asarray(image), int(step), dataformats="HWC")
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """The JSON-line records of a run, oldest first."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# A field only that system's configs have, to tell one run's folder from another's.
SYSTEM_MARKERS = {"darknet": "max_lr", "wgan": "critic_iters", "cyclegan": "lambda_a"}
SYSTEM_NAMES = {"darknet": "a Darknet run", "wgan": "a WGAN run", "cyclegan": "a CycleGAN run"}


def run_system(config) -> str | None:
  """"darknet", "wgan" or "cyclegan": which system a run's config belongs to."""
  return next((name for name, key in SYSTEM_MARKERS.items() if key in config), None)


def read_config(workdir: str, system: str | None = None):
  """The config a run in ``workdir`` was started with (its config.json).

  ``system``: the run must be of that system ("darknet", "wgan", "cyclegan"); a folder of
  another one is a clear error, not a KeyError later.
  """
  import ml_collections
  what = SYSTEM_NAMES.get(system, "a training run")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: --workdir must be the folder of {what} "
                            "(the --workdir it was trained with).")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  found = run_system(config)
  if system is not None and found != system:
    raise ValueError(f"{workdir} holds {SYSTEM_NAMES.get(found, 'something else')}, not "
                     f"{what}: point --workdir at {what}'s folder.")
  return config


def write_config(workdir: str, config) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))
