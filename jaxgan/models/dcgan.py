"""DCGAN generator and critic for the lesson's WGAN, in Flax Linen (images are NHWC).

These follow the lesson's ``DCGAN_G`` / ``DCGAN_D`` (themselves borrowed from
martinarjovsky/WassersteinGAN) layer for layer, so parameter counts equal PyTorch's:
generator 3,613,696 and critic 2,802,560 at isize 64, nz 100, nc 3, width 64, one extra
layer. Two additions the lesson motivates but does not code:

* ``DCGANGenerator(upsample='nearest' | 'bilinear')`` replaces every stride-2 transposed
  conv by resize x2 + stride-1 3x3 conv, the remedy for checkerboard artifacts.
* ``DCGANCritic(norm='layer' | 'none')`` drops BatchNorm, which WGAN-GP needs: its
  gradient penalty is per example, and batch statistics couple the examples.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxgan.models import layers

Dtype = Any

_UPSAMPLE_MODES = (None, "nearest", "bilinear")
_NORMS = ("batch", "layer", "none")

# The WGAN reference initialises every conv weight from N(0, 0.02) and BatchNorm's scale
# from N(1, 0.02); biases (only BatchNorm has any) start at zero.
conv_init = nn.initializers.normal(stddev=0.02)


def bn_scale_init(key: jax.Array, shape, dtype: Dtype = jnp.float32) -> jax.Array:
  """BatchNorm scale initialiser: N(1, 0.02), as in the WGAN reference code."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def nearest_isizes(isize: int) -> tuple[int, ...]:
  """The valid sizes (16·2^k) next to ``isize``: one below and one above, or just 16."""
  lower = 16
  while lower * 2 <= isize:
    lower *= 2
  return (16,) if isize < 16 else (lower,) if lower == isize else (lower, 2 * lower)


def check_isize(isize: int, name: str = "isize", flag: str | None = None) -> None:
  """Raises a ValueError naming the nearest valid sizes unless ``isize`` is 16·2^k.

  ``flag``: the command-line field that sets it (``--config.model.isize``), for the fix.
  """
  # Both nets step the grid between 4x4 and isize/2 by factors of two, plus one more
  # stride-2 step, so only 16·2^k works: the generator's width loop would never reach
  # 48 or 80, and the critic would end on a 3x3 or 5x5 grid.
  try:
    n = operator.index(isize)
  except TypeError:
    n = None
  if n is None or n < 16 or n & (n - 1):
    near = " or ".join(map(str, nearest_isizes(n))) if n is not None else "an int such as 64"
    fix = f"set {flag}={near}" if flag else f"use {near}, and resize the images to that size"
    raise ValueError(
        f"{name} must be 16 times a power of two (16, 32, 64, 128, 256, ...); got {isize!r}: "
        f"{fix}.")


def _batch_norm(train: bool, dtype: Dtype, param_dtype: Dtype, name: str,
                momentum: float = 0.9) -> layers.BatchNorm:
  # PyTorch's BatchNorm2d default momentum 0.1 is Flax's momentum 0.9 (Flax weighs the
  # old running value). Two-pass variance, as PyTorch computes it: post-ReLU activations
  # have a large mean, where E[x^2] - E[x]^2 loses precision.
  return layers.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5,
                          use_fast_variance=False, scale_init=bn_scale_init, dtype=dtype,
                          param_dtype=param_dtype, name=name)


class _UpConv(nn.Module):
  """Bias-free grid-enlarging conv: PyTorch's ConvTranspose2d(k, s, p), or resize.

  When ``upsample`` is set and ``stride`` is 2 the transposed conv is replaced by resize
  x2 followed by a 3x3 stride-1 conv (padding 1); otherwise it is the transposed conv.
  """
  features: int
  kernel_size: int
  stride: int
  padding: int  # PyTorch's ``padding`` argument
  upsample: str | None = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.upsample is not None and self.stride == 2:
      n, h, w, c = x.shape
      x = jax.image.resize(x, (n, 2 * h, 2 * w, c), method=self.upsample)
      return layers.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                     kernel_init=conv_init, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="conv")(x)
    # With transpose_kernel=True, Flax padding (k-1-p, k-1-p) reproduces PyTorch's
    # ConvTranspose2d(k, s, p) exactly, values and shape (docs/lesson.md, "PyTorch → Flax").
    k, q = self.kernel_size, self.kernel_size - 1 - self.padding
    return layers.ConvTranspose(self.features, (k, k), strides=(self.stride, self.stride),
                            padding=((q, q), (q, q)), use_bias=False, transpose_kernel=True,
                            kernel_init=conv_init, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="conv")(x)


class DeconvBlock(nn.Module):
  """The lesson's DeconvBlock: up-conv (no bias) -> ReLU -> BatchNorm.

  Attributes:
    features: Output channels.
    kernel_size: Square kernel size.
    stride: 1 or 2.
    padding: PyTorch-style padding of the transposed conv.
    upsample: None, 'nearest' or 'bilinear'; see ``_UpConv``.
    bn_momentum: Flax momentum of the running statistics (0.9: PyTorch's 0.1).
    dtype: Computation dtype.
    param_dtype: Parameter dtype.
  """
  features: int
  kernel_size: int
  stride: int
  padding: int
  upsample: str | None = None
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    x = _UpConv(self.features, self.kernel_size, self.stride, self.padding, self.upsample,
                dtype=self.dtype, param_dtype=self.param_dtype, name="up")(x)
    x = nn.relu(x)
    return _batch_norm(train, self.dtype, self.param_dtype, "bn", self.bn_momentum)(x)


class DCGANGenerator(nn.Module):
  """DCGAN generator (the lesson's ``DCGAN_G``): noise -> image in [-1, 1].

  Attributes:
    isize: Output height and width; 16·2^k (16, 32, 64, 128, ...).
    nz: Noise dimension.
    nc: Output channels.
    ngf: Width of the last hidden layer; earlier layers double it.
    n_extra_layers: Extra 3x3 stride-1 DeconvBlocks at resolution isize/2.
    upsample: None for transposed convs (the lesson), or 'nearest' / 'bilinear' to
      replace each stride-2 transposed conv by resize x2 + 3x3 conv. The first
      1x1 -> 4x4 block stays a transposed conv: there is nothing to resize there.
    bn_momentum: Flax momentum of the BatchNorm running statistics (0.9, PyTorch's
      0.1); 0 makes one train-mode call store that batch's statistics (an averaged
      generator's statistics are measured so).
    dtype: Computation dtype; the output is float32 regardless.
    param_dtype: Parameter dtype.
  """
  isize: int = 64
  nz: int = 100
  nc: int = 3
  ngf: int = 64
  n_extra_layers: int = 1
  upsample: str | None = None
  bn_momentum: float = 0.9
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    # Fail at construction, not at the first traced call deep inside a jit.
    check_isize(self.isize)
    if self.upsample not in _UPSAMPLE_MODES:
      raise ValueError(f"upsample must be one of {_UPSAMPLE_MODES} (got {self.upsample!r})")
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, train: bool = True) -> jax.Array:
    """Generates images.

    Args:
      z: Noise, shape (N, nz) or (N, 1, 1, nz).
      train: Use batch statistics and update the running ones (needs
        ``mutable=['batch_stats']``); False uses the running statistics.

    Returns:
      Images of shape (N, isize, isize, nc), float32, in [-1, 1].
    """
    if (z.shape[-1] != self.nz or z.ndim not in (2, 4) or
        (z.ndim == 4 and z.shape[1:3] != (1, 1))):
      raise ValueError(
          f"z must have shape (N, {self.nz}) or (N, 1, 1, {self.nz}); got {z.shape}")
    x = z.reshape(z.shape[0], 1, 1, self.nz).astype(self.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    # Width of the 4x4 layer: ngf/2 doubled once per doubling from 4 to isize, so the
    # layer at isize/2 (the last hidden one) is ngf wide. Same loop as DCGAN_G, but
    # with < instead of !=, so a size that slipped past check_isize cannot spin forever.
    cngf, tisize = self.ngf // 2, 4
    while tisize < self.isize:
      cngf *= 2
      tisize *= 2

    # 1x1 -> 4x4: a 4x4 'VALID' transposed conv (PyTorch k4 s1 p0).
    kw["bn_momentum"] = self.bn_momentum
    x = DeconvBlock(cngf, 4, 1, 0, name="initial", **kw)(x, train)
    csize, i = 4, 0
    while csize < self.isize // 2:
      cngf //= 2
      x = DeconvBlock(cngf, 4, 2, 1, self.upsample, name=f"pyramid_{i}", **kw)(x, train)
      csize *= 2
      i += 1
    for j in range(self.n_extra_layers):
      x = DeconvBlock(cngf, 3, 1, 1, name=f"extra_{j}", **kw)(x, train)
    x = _UpConv(self.nc, 4, 2, 1, self.upsample, name="final", dtype=self.dtype,
                param_dtype=self.param_dtype)(x)
    # tanh in float32: a bf16 tanh near +-1 quantises the brightest/darkest pixels.
    return jnp.tanh(x.astype(jnp.float32))


def spectral(layer: nn.Module, on: bool, update_stats: bool):
  """``layer`` as a function of its input, its kernel spectrally normalised when ``on``.

  Spectral normalisation (Miyato et al. 2018) divides the kernel, reshaped to a matrix
  (taps × input channels, output channels), by its largest singular value, estimated by
  one power iteration per call from a vector kept in the ``batch_stats`` collection (so
  it lives in the train state and is checkpointed); ``update_stats`` stores the new
  vector. The parameters are the layer's own: the count does not change.
  """
  if not on:
    return layer
  return lambda x: nn.SpectralNorm(layer, n_steps=1)(x, update_stats=update_stats)


class ConvBlock(nn.Module):
  """The lesson's ConvBlock: Conv (no bias, pad ks//2//stride) -> LeakyReLU(0.2) -> norm.

  Attributes:
    features: Output channels.
    kernel_size: Square kernel size.
    stride: Conv stride.
    norm: 'batch' (the lesson), 'layer' (LayerNorm over H, W, C per example, with
      a per-element affine like PyTorch's LayerNorm([C, H, W])) or 'none'.
    spectral_norm: divide the conv's kernel by its largest singular value (`spectral`).
    dtype: Computation dtype.
    param_dtype: Parameter dtype.
  """
  features: int
  kernel_size: int
  stride: int
  norm: str = "batch"
  spectral_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               update_stats: bool | None = None) -> jax.Array:
    k, p = self.kernel_size, self.kernel_size // 2 // self.stride
    conv = layers.Conv(self.features, (k, k), strides=(self.stride, self.stride),
                       padding=((p, p), (p, p)), use_bias=False, kernel_init=conv_init,
                       dtype=self.dtype, param_dtype=self.param_dtype, name="conv")
    x = spectral(conv, self.spectral_norm, train if update_stats is None else update_stats)(x)
    x = nn.leaky_relu(x, 0.2)
    if self.norm == "batch":
      x = _batch_norm(train, self.dtype, self.param_dtype, "bn")(x)
    elif self.norm == "layer":
      x = nn.LayerNorm(epsilon=1e-5, reduction_axes=(-3, -2, -1), feature_axes=(-3, -2, -1),
                       dtype=self.dtype, param_dtype=self.param_dtype, name="ln")(x)
    return x


class DCGANCritic(nn.Module):
  """DCGAN critic (the lesson's ``DCGAN_D``): image -> one score per example.

  Attributes:
    isize: Input height and width; 16·2^k (16, 32, 64, 128, ...).
    nc: Input channels.
    ndf: Width of the first layer; each stride-2 block doubles it.
    n_extra_layers: Extra 3x3 stride-1 ConvBlocks at resolution isize/2.
    norm: 'batch' (the lesson; for weight clipping), or 'layer' / 'none' for
      WGAN-GP, whose per-example gradient penalty BatchNorm would invalidate.
    spectral_norm: spectrally normalise every conv (`spectral`; Miyato et al. 2018).
    dtype: Computation dtype; the output is float32 regardless.
    param_dtype: Parameter dtype.
  """
  isize: int = 64
  nc: int = 3
  ndf: int = 64
  n_extra_layers: int = 1
  norm: str = "batch"
  spectral_norm: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    check_isize(self.isize)
    if self.norm not in _NORMS:
      raise ValueError(f"norm must be one of {_NORMS} (got {self.norm!r})")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True,
               update_stats: bool | None = None) -> jax.Array:
    """Scores images.

    Args:
      x: Images, shape (N, isize, isize, nc).
      train: Use batch statistics and update the running ones (needs
        ``mutable=['batch_stats']`` when norm='batch').
      update_stats: store the spectral norms' power-iteration vectors (default:
        ``train``).

    Returns:
      Scores of shape (N,), float32.
    """
    if x.shape[1:] != (self.isize, self.isize, self.nc):
      raise ValueError(f"x must have shape (N, {self.isize}, {self.isize}, {self.nc}); "
                       f"got {x.shape}")
    x = x.astype(self.dtype)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    update = train if update_stats is None else update_stats
    kw["spectral_norm"] = self.spectral_norm
    # No norm on the first block, as in DCGAN: normalising raw pixels there hurts.
    x = ConvBlock(self.ndf, 4, 2, norm="none", name="initial", **kw)(x, train, update)
    for j in range(self.n_extra_layers):
      x = ConvBlock(self.ndf, 3, 1, norm=self.norm, name=f"extra_{j}", **kw)(x, train, update)
    csize, cndf, i = self.isize // 2, self.ndf, 0
    while csize > 4:
      cndf *= 2
      x = ConvBlock(cndf, 4, 2, norm=self.norm, name=f"pyramid_{i}", **kw)(x, train, update)
      csize //= 2
      i += 1
    final = layers.Conv(1, (4, 4), padding="VALID", use_bias=False, kernel_init=conv_init,
                        name="final", dtype=self.dtype, param_dtype=self.param_dtype)
    x = spectral(final, self.spectral_norm, update)(x)
    # The lesson's forward averages the final map over the batch too (.mean(0)); we
    # keep one score per example so losses and the gradient penalty can be per
    # example. Mean in float32 so a bf16 critic still returns float32 scores.
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
