"""The networks that judge generated images, by name: ``classifier:WORKDIR`` or
``inception:PATH``.

* ``classifier:WORKDIR``: any jaxgan Darknet run (``python -m experiments.darknet``). Its
  features are the pooled activations before the last Dense layer, its probabilities the
  softmax of the head, in eval mode (BatchNorm on running statistics). This is the judge
  that works offline: the Fashion-MNIST Darknet judges the Fashion-MNIST GANs.
  How images reach it: uint8 (N, H, W, C) as the GANs write them (``images.to_uint8`` of
  their [-1, 1] output). Each side is brought to the judge's own training size by a
  centre crop when larger, or black padding when smaller; jaxgan pads Fashion-MNIST's
  28x28 with black to 32 (WGAN) or 36 (CycleGAN, then crops 32), so the crop gives back
  exactly the 28x28 frame the classifier was trained on. Then the judge's normalisation
  (its data set's mean and std). Channels must match (1 for Fashion-MNIST).
* ``inception:PATH``: FID's InceptionV3 with weights from PATH
  (`jaxgan.evaluation.inception`), so LSUN and horse2zebra numbers compare with papers.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import ops
from jaxgan.data import augment, classification
from jaxgan.evaluation import inception
from jaxgan.images import fit_to
from jaxgan.evaluation.report import Extractor


@dataclasses.dataclass
class Judge:
  """An extractor with what a report needs to say about it."""
  name: str
  extract: Extractor
  class_names: tuple[str, ...] | None = None  # the classifier's classes, if it has any


def classifier_judge(workdir: str, batch_size: int = 500) -> Judge:
  """A trained jaxgan Darknet run as the judge (see the module docstring)."""
  from jaxgan.train import darknet, runs  # pylint: disable=g-import-not-at-top  (heavy)
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise FileNotFoundError(
        f"judge classifier:{workdir} is not a trained Darknet run (no config.json): train "
        f"one first, e.g. python -m experiments.darknet --config "
        f"experiments/configs/darknet.py:fashion_mnist --workdir {workdir}")
  run = runs.restore(workdir, "darknet")
  model = darknet.build_model(run.config)
  data_set = classification.data_set(run.config.data)
  facts = classification.FACTS[data_set]
  variables = {"params": run.state.params, "batch_stats": run.state.batch_stats}

  @ops.jit  # as the Darknet trained: its routed convolutions assume ops' compiler options
  def features_and_probs(x):
    x = augment.normalize(x, facts.mean, facts.std, jnp.float32)
    logits, inter = model.apply(variables, x, train=False, mutable=["intermediates"])
    return inter["intermediates"]["features"][0], jax.nn.softmax(logits)

  def extract(images):
    images = np.asarray(images)
    if images.shape[-1] != facts.image_shape[-1]:
      raise ValueError(f"the judge classifier:{workdir} reads {facts.image_shape[-1]}-"
                       f"channel images, got {images.shape[-1]}.")
    images = fit_to(images, facts.image_shape[:2])
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      n = len(chunk)
      if n < batch_size:  # one compiled shape: pad the last batch
        chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]),
                                                chunk.dtype)])
      f, p = jax.device_get(features_and_probs(chunk))
      feats.append(f[:n])
      probs.append(p[:n])
    return np.concatenate(feats).astype(np.float64), np.concatenate(probs).astype(np.float64)

  names = classification.FASHION_MNIST_CLASSES if data_set == "fashion_mnist" else None
  return Judge(f"classifier:{workdir}", extract, names)


def load_judge(spec: str, batch_size: int = 500) -> Judge:
  """``classifier:WORKDIR`` or ``inception:PATH`` → a `Judge`."""
  kind, _, where = spec.partition(":")
  if kind == "classifier" and where:
    return classifier_judge(where, batch_size)
  if kind == "inception" and where:
    return Judge(spec, inception.inception_extractor(where, batch_size=min(batch_size, 100)))
  raise ValueError(f"judge {spec!r}: use classifier:WORKDIR (a jaxgan Darknet run) or "
                   "inception:PATH (FID Inception weights, see jaxgan.evaluation.inception).")
