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
