"""The FID InceptionV3 (TF-FID's network, as pytorch-fid ports it) in Flax Linen, NHWC.

FID numbers are only comparable between papers when they come from this exact
network: TensorFlow's 2015-12-05 Inception graph. pytorch-fid reproduces it as
torchvision's InceptionV3 with four blocks changed, and so does this module:

* ``Mixed_5b/5c/5d`` (A), ``Mixed_6b..6e`` (C), ``Mixed_7b`` (E, first): the pool
  branch averages 3×3 windows over the valid pixels only (PyTorch
  ``count_include_pad=False``), as TF's average pool does at the border.
* ``Mixed_7c`` (E, second): the pool branch is a 3×3 *max* pool.
* BatchNorm eps 1e-3, convolutions without bias, a 1008-way ``fc`` head (TF's
  1000 ImageNet classes plus 8 unused ones).

Input: (N, H, W, 3) float in [-1, 1] (pytorch-fid's ``2x − 1`` of [0, 1] data),
resized bilinearly to 299×299 the way ``F.interpolate(..., mode='bilinear',
align_corners=False)`` does (half-pixel centres, no antialiasing). Output:
``(pool3 features (N, 2048), logits (N, 1008))``.

Parameters, counted as PyTorch counts them (conv weights, BatchNorm weight and
bias, fc weight and bias): 23,850,960 (`NUM_PARAMS`); BatchNorm running means
and variances add 34,432 (`NUM_BATCH_STATS`). That is torchvision's InceptionV3
without its auxiliary head (23,834,568 at 1000 classes) plus 8 × 2048 + 8 for the
8 extra classes. The tests recompute both from the pytorch-fid state-dict layout.

Weights: `load_inception_params` reads a ``.npz`` made once from pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` by ``python -m
jaxgan.evaluation.convert_inception`` (see `load_inception_params` for the
format). `inception_extractor` wraps it all into the generic extractor of
`jaxgan.evaluation.report`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import ops

NUM_PARAMS = 23_850_960
NUM_BATCH_STATS = 34_432
NUM_FEATURES = 2048
NUM_LOGITS = 1008
INPUT_SIZE = 299

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILE)
CONVERT_COMMAND = ("python -m jaxgan.evaluation.convert_inception "
                   f"--input {WEIGHTS_FILE} --output fid_inception.npz")

# FID moves with the network's rounding; TF32 convolutions on recent GPUs would shift it.
_PRECISION = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- resize and pools

def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) weights of PyTorch's bilinear resize along one axis, align_corners=False."""
  src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
  src = np.maximum(src, 0.0)  # PyTorch clamps below; the top is clamped through i1.
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  frac = src - i0
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), i0), 1.0 - frac)
  np.add.at(m, (np.arange(out_size), i1), frac)
  return m.astype(np.float32)


def resize_bilinear(x: jax.Array, height: int = INPUT_SIZE,
                    width: int = INPUT_SIZE) -> jax.Array:
  """NHWC bilinear resize equal to PyTorch's ``align_corners=False``, without antialiasing.

  Two small matrix products rather than ``jax.image.resize``, so the weights are
  PyTorch's by construction whichever way the size changes.
  """
  if x.shape[1:3] == (height, width):
    return x
  rows = jnp.asarray(_bilinear_matrix(x.shape[1], height))
  cols = jnp.asarray(_bilinear_matrix(x.shape[2], width))
  x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=_PRECISION)
  return jnp.einsum("pw,nowc->nopc", cols, x, precision=_PRECISION)


def avg_pool_3x3_valid_only(x):
  """3×3 stride-1 average over the in-image pixels only (``count_include_pad=False``)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x):
  return nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)))


def max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


# ----------------------------------------------------------------------------- blocks
# Submodule names are pytorch-fid's, so the state-dict key of every tensor is its Flax path.

class BasicConv2d(nn.Module):
  """Conv (no bias) → BatchNorm (eps 1e-3, running statistics) → ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)  # (rows, columns), as PyTorch's padding=(ph, pw)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, (self.strides,) * 2,
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=_PRECISION,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _conv(features, kernel_size, name, strides=1, padding=(0, 0)):
  if isinstance(kernel_size, int):
    kernel_size = (kernel_size, kernel_size)
  if isinstance(padding, int):
    padding = (padding, padding)
  return BasicConv2d(features, kernel_size, strides, padding, name=name)


class InceptionA(nn.Module):
  """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1 (FID's valid-only average)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = _conv(64, 1, "branch1x1")(x)
    b5 = _conv(48, 1, "branch5x5_1")(x)
    b5 = _conv(64, 5, "branch5x5_2", padding=2)(b5)
    b3 = _conv(64, 1, "branch3x3dbl_1")(x)
    b3 = _conv(96, 3, "branch3x3dbl_2", padding=1)(b3)
    b3 = _conv(96, 3, "branch3x3dbl_3", padding=1)(b3)
    bp = _conv(self.pool_features, 1, "branch_pool")(avg_pool_3x3_valid_only(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """35→17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = _conv(384, 3, "branch3x3", strides=2)(x)
    bd = _conv(64, 1, "branch3x3dbl_1")(x)
    bd = _conv(96, 3, "branch3x3dbl_2", padding=1)(bd)
    bd = _conv(96, 3, "branch3x3dbl_3", strides=2)(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """17×17 block with factorised 7×7 convolutions (1×7 and 7×1)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = _conv(192, 1, "branch1x1")(x)
    b7 = _conv(c7, 1, "branch7x7_1")(x)
    b7 = _conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))(b7)
    b7 = _conv(192, (7, 1), "branch7x7_3", padding=(3, 0))(b7)
    bd = _conv(c7, 1, "branch7x7dbl_1")(x)
    bd = _conv(c7, (7, 1), "branch7x7dbl_2", padding=(3, 0))(bd)
    bd = _conv(c7, (1, 7), "branch7x7dbl_3", padding=(0, 3))(bd)
    bd = _conv(c7, (7, 1), "branch7x7dbl_4", padding=(3, 0))(bd)
    bd = _conv(192, (1, 7), "branch7x7dbl_5", padding=(0, 3))(bd)
    bp = _conv(192, 1, "branch_pool")(avg_pool_3x3_valid_only(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """17→8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool/2."""

  @nn.compact
  def __call__(self, x):
    b3 = _conv(192, 1, "branch3x3_1")(x)
    b3 = _conv(320, 3, "branch3x3_2", strides=2)(b3)
    b7 = _conv(192, 1, "branch7x7x3_1")(x)
    b7 = _conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))(b7)
    b7 = _conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))(b7)
    b7 = _conv(192, 3, "branch7x7x3_4", strides=2)(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """8×8 block with split 1×3 / 3×1 heads; ``pool`` is 'avg' in Mixed_7b, 'max' in Mixed_7c."""
  pool: str

  @nn.compact
  def __call__(self, x):
    b1 = _conv(320, 1, "branch1x1")(x)
    b3 = _conv(384, 1, "branch3x3_1")(x)
    b3 = jnp.concatenate([_conv(384, (1, 3), "branch3x3_2a", padding=(0, 1))(b3),
                          _conv(384, (3, 1), "branch3x3_2b", padding=(1, 0))(b3)], axis=-1)
    bd = _conv(448, 1, "branch3x3dbl_1")(x)
    bd = _conv(384, 3, "branch3x3dbl_2", padding=1)(bd)
    bd = jnp.concatenate([_conv(384, (1, 3), "branch3x3dbl_3a", padding=(0, 1))(bd),
                          _conv(384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))(bd)], axis=-1)
    pooled = avg_pool_3x3_valid_only(x) if self.pool == "avg" else max_pool_3x3(x)
    bp = _conv(192, 1, "branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """The FID network; ``__call__`` maps [-1, 1] images to (pool3 features, 1008 logits)."""
  resize: bool = True

  @nn.compact
  def __call__(self, x):
    if self.resize:
      x = resize_bilinear(x)
    x = _conv(32, 3, "Conv2d_1a_3x3", strides=2)(x)
    x = _conv(32, 3, "Conv2d_2a_3x3")(x)
    x = _conv(64, 3, "Conv2d_2b_3x3", padding=1)(x)
    x = max_pool_3x3_stride2(x)
    x = _conv(80, 1, "Conv2d_3b_1x1")(x)
    x = _conv(192, 3, "Conv2d_4a_3x3")(x)
    x = max_pool_3x3_stride2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    features = x.mean(axis=(1, 2))  # pool3; dropout is the identity at inference
    logits = nn.Dense(NUM_LOGITS, precision=_PRECISION, name="fc")(features)
    return features, logits


# ----------------------------------------------------------------------------- weights

# (Flax collection, layer, leaf) → the state-dict suffix that holds it.
_TORCH_SUFFIX = {
    ("params", "conv", "kernel"): "conv.weight",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
    ("params", "fc", "kernel"): "fc.weight",
    ("params", "fc", "bias"): "fc.bias",
}


@functools.lru_cache(maxsize=1)
def variable_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flat {(collection, *path): shape} of the network's variables (no compute)."""
  tree = jax.eval_shape(FIDInceptionV3(resize=False).init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(tree).items()}


def torch_key(path: tuple[str, ...]) -> str:
  """The pytorch-fid state-dict key of a flat Flax variable path."""
  collection, *modules, layer, leaf = path
  return ".".join([*modules, _TORCH_SUFFIX[(collection, layer, leaf)]])


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # conv OIHW → HWIO
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:  # Linear (out, in) → (in, out)
    return value.T
  return value


def _to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def torch_layout() -> dict[str, tuple[int, ...]]:
  """{state-dict key: PyTorch shape} that a weights file must hold, no more and no less."""
  return {torch_key(path): _to_torch_shape(shape) for path, shape in variable_shapes().items()}


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """Maps pytorch-fid state-dict arrays (PyTorch layouts) onto the Flax variables.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays.

  Raises:
    ValueError: naming every missing key, unused key and wrong shape at once.
  """
  flat, missing, wrong = {}, [], []
  for path, shape in variable_shapes().items():
    key = torch_key(path)
    if key not in state_dict:
      missing.append(key)
      continue
    value = np.asarray(state_dict[key])
    if value.shape != _to_torch_shape(shape):
      wrong.append(f"{key}: {value.shape}, expected {_to_torch_shape(shape)}")
      continue
    flat[path] = np.ascontiguousarray(_to_flax_layout(value), dtype=np.float32)
  unused = sorted(set(state_dict) - set(torch_layout()))
  if missing or unused or wrong:
    parts = [f"{len(missing)} missing: {', '.join(missing)}" if missing else "",
             f"{len(unused)} unused: {', '.join(unused)}" if unused else "",
             f"{len(wrong)} wrong shape: {'; '.join(wrong)}" if wrong else ""]
    raise ValueError("Weights do not match the FID Inception layout; "
                     + "; ".join(p for p in parts if p) + ".")
  return flax.traverse_util.unflatten_dict(flat)


def load_inception_params(path: str | os.PathLike) -> dict:
  """Reads FID Inception weights from a ``.npz`` into Flax variables.

  File format: one float32 array per tensor of pytorch-fid's ``FIDInceptionV3``
  state dict, named by its key and in PyTorch's layout, e.g.
  ``Conv2d_1a_3x3.conv.weight`` (32, 3, 3, 3) OIHW, ``Conv2d_1a_3x3.bn.weight``,
  ``.bn.bias``, ``.bn.running_mean``, ``.bn.running_var`` (32,), ...,
  ``fc.weight`` (1008, 2048), ``fc.bias`` (1008,). BatchNorm's
  ``num_batches_tracked`` counters are left out (they hold no weights). Every
  array must be used and every variable filled. `torch_layout` lists them all.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for `FIDInceptionV3.apply`.

  Raises:
    FileNotFoundError: no file at ``path``; the message says how to make one.
    ValueError: the file's arrays do not match the layout.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"No FID Inception weights at {path!r}. Make them once: on a machine with internet, "
        f"download pytorch-fid's {WEIGHTS_FILE} ({WEIGHTS_URL}), then run (needs torch) "
        f"`{CONVERT_COMMAND}` and pass the .npz path.")
  with np.load(path, allow_pickle=False) as data:
    return variables_from_state_dict({key: data[key] for key in data.files})


# ----------------------------------------------------------------------------- extractor

def inception_extractor(path: str | os.PathLike | None = None, batch_size: int = 50, *,
                        variables: dict | None = None
                        ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """An extractor (see `jaxgan.evaluation.report`) running the FID Inception.

  Args:
    path: a ``.npz`` for `load_inception_params`.
    batch_size: images per device call; the last batch is padded, so the forward
      pass compiles once per image size.
    variables: Flax variables to use instead of ``path`` (tests, custom weights).

  Returns:
    ``extract(images)``: uint8 (N, H, W, C) with C = 3 or 1 (grayscale, repeated to
    RGB), or (N, H, W) → (pool3 features (N, 2048) float32, softmax over the 1008
    logits (N, 1008) float32).
  """
  if variables is None:
    if path is None:
      raise ValueError("Pass the weights' path (or variables).")
    variables = load_inception_params(path)
  variables = jax.device_put(variables)
  model = FIDInceptionV3()

  # ops' compiler options: 8 images took 0.91 s instead of 1.62 s on the project's 2-core
  # Xeon (XLA:CPU; no options elsewhere).
  @ops.jit
  def forward(variables, images):
    x = images.astype(jnp.float32) * (2.0 / 255.0) - 1.0
    features, logits = model.apply(variables, x)
    return features, jax.nn.softmax(logits, axis=-1)

  def extract(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
      raise ValueError(f"Expected uint8 images, got {images.dtype}; see jaxgan.images.to_uint8.")
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"Expected (N, H, W, 1 or 3) images, got {images.shape}.")
    if images.shape[-1] == 1:
      images = np.repeat(images, 3, axis=-1)
    features, probs = [], []
    for start in range(0, len(images), batch_size):
      batch = images[start:start + batch_size]
      n = len(batch)
      if n < batch_size:  # pad with copies of the last image: one compiled shape
        batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
      f, p = forward(variables, batch)
      features.append(np.asarray(f)[:n])
      probs.append(np.asarray(p)[:n])
    if not features:
      return (np.zeros((0, NUM_FEATURES), np.float32), np.zeros((0, NUM_LOGITS), np.float32))
    return np.concatenate(features), np.concatenate(probs)

  return extract
