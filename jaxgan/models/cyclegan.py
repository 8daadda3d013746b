"""CycleGAN networks: the ResNet generator and the 70×70 PatchGAN discriminator.

Both follow the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix) layer for
layer, in NHWC. Parameter counts match PyTorch's: 11,378,179 for the default generator and
2,764,737 for the default discriminator.

PyTorch → Flax details that matter for matching values (docs/lesson.md, "PyTorch → Flax"):

* ``ReflectionPad2d(p)`` + conv is :func:`reflect_pad` followed by a ``'VALID'`` conv.
* ``InstanceNorm2d()`` has no affine parameters and eps 1e-5 (Flax's default is 1e-6).
* ``ConvTranspose2d(k3, s2, p1, output_padding=1)`` is a Flax ``ConvTranspose`` with
  ``transpose_kernel=True`` and padding ``((1, 2), (1, 2))``; ``'SAME'`` gives the same shape
  but shifted values. :func:`torch_conv_transpose_padding` gives the general rule.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxgan.models import layers
import jax.numpy as jnp

Dtype = Any

# The reference initialises conv weights from N(0, 0.02) and biases to 0.
_kernel_init = nn.initializers.normal(stddev=0.02)
_bias_init = nn.initializers.zeros


def reflect_pad(x: jnp.ndarray, p: int) -> jnp.ndarray:
  """Reflection-pads the two spatial axes of an NHWC tensor, like ``ReflectionPad2d(p)``.

  Args:
    x: array of shape (N, H, W, C).
    p: number of pixels added on every side; needs ``p < H`` and ``p < W``.

  Returns:
    Array of shape (N, H + 2p, W + 2p, C). The border pixel itself is not repeated
    (numpy's ``'reflect'``, which is what PyTorch does; ``'symmetric'`` would differ).
  """
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")


def torch_conv_transpose_padding(
    kernel: int, padding: int, output_padding: int = 0
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Flax ``ConvTranspose`` padding equal to PyTorch's ``ConvTranspose2d`` arguments.

  Valid with ``transpose_kernel=True``: the transposed conv is a conv of the dilated input
  with the flipped kernel, whose implicit padding is ``k - 1 - p`` on each side, and
  ``output_padding`` adds rows/columns at the bottom/right only.

  Args:
    kernel: PyTorch ``kernel_size``.
    padding: PyTorch ``padding``.
    output_padding: PyTorch ``output_padding``.

  Returns:
    ``((lo, hi), (lo, hi))`` for the two spatial axes.
  """
  lo = kernel - 1 - padding
  pair = (lo, lo + output_padding)
  return (pair, pair)


def _instance_norm(dtype: Dtype) -> nn.Module:
  # No affine and eps 1e-5, as PyTorch's InstanceNorm2d(). The two-pass variance keeps the
  # statistics accurate when an activation's mean is large relative to its spread.
  return nn.InstanceNorm(
      use_scale=False,
      use_bias=False,
      epsilon=1e-5,
      use_fast_variance=False,
      dtype=dtype,
  )


class ResnetBlock(nn.Module):
  """Residual block: [pad, conv 3×3, IN, ReLU, (dropout), pad, conv 3×3, IN] + skip.

  Attributes:
    dropout: dropout rate between the two convs; 0 leaves it out.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    features = x.shape[-1]
    conv = lambda: layers.Conv(
        features,
        (3, 3),
        padding="VALID",
        kernel_init=_kernel_init,
        bias_init=_bias_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    y = conv()(reflect_pad(x, 1))
    y = nn.relu(_instance_norm(self.dtype)(y))
    if self.dropout > 0:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = conv()(reflect_pad(y, 1))
    y = _instance_norm(self.dtype)(y)
    return x + y


class ResnetGenerator(nn.Module):
  """CycleGAN's ResNet generator (Johnson et al. style), as in the reference code.

  c7s1-ngf, two stride-2 downsampling convs, ``n_blocks`` residual blocks at 1/4 resolution,
  two stride-2 transposed convs, c7s1-nc, tanh. The paper uses 9 blocks for 256² images and
  6 blocks for 128² (``ResnetGenerator(n_blocks=6)``, 7,837,699 parameters); the block count
  does not constrain the input size.

  Attributes:
    ngf: channels after the first conv (doubled by each downsampling).
    n_blocks: number of residual blocks.
    nc: output channels. Input channels are taken from the input.
    dropout: dropout rate inside residual blocks (reference: 0.5 unless ``--no_dropout``,
      and CycleGAN trains with ``--no_dropout``, hence 0 here).
    dtype: computation dtype (e.g. ``jnp.bfloat16``); the output is always float32.
    param_dtype: parameter dtype.
  """

  ngf: int = 64
  n_blocks: int = 9
  nc: int = 3
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Translates a batch of images.

    Args:
      x: NHWC images, H and W multiples of 4, any channel count.
      train: enables dropout (needs a ``'dropout'`` rng when ``dropout > 0``).

    Returns:
      float32 array (N, H, W, nc) in [-1, 1].

    Raises:
      ValueError: if H or W is not a multiple of 4.
    """
    h, w = x.shape[1], x.shape[2]
    if h % 4 or w % 4:
      # Two stride-2 downsamplings followed by two ×2 upsamplings only return to the input
      # size when both sides divide by 4; otherwise the output would silently change size.
      raise ValueError(
          f"ResnetGenerator needs height and width divisible by 4, got {h}x{w}; "
          "pad or crop the input to a multiple of 4."
      )
    conv_kw = dict(
        kernel_init=_kernel_init,
        bias_init=_bias_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    norm_relu = lambda y: nn.relu(_instance_norm(self.dtype)(y))

    y = layers.Conv(self.ngf, (7, 7), padding="VALID", **conv_kw)(reflect_pad(x, 3))
    y = norm_relu(y)

    # Downsampling uses zero padding in the reference, unlike the reflection elsewhere.
    features = self.ngf
    for _ in range(2):
      features *= 2
      y = layers.Conv(features, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), **conv_kw)(y)
      y = norm_relu(y)

    for _ in range(self.n_blocks):
      y = ResnetBlock(self.dropout, dtype=self.dtype, param_dtype=self.param_dtype)(
          y, train=train
      )

    # PyTorch ConvTranspose2d(k3, s2, p1, output_padding=1): exactly doubles H and W.
    up_padding = torch_conv_transpose_padding(3, 1, 1)
    for _ in range(2):
      features //= 2
      y = layers.ConvTranspose(
          features,
          (3, 3),
          strides=(2, 2),
          padding=up_padding,
          transpose_kernel=True,
          **conv_kw,
      )(y)
      y = norm_relu(y)

    y = layers.Conv(self.nc, (7, 7), padding="VALID", **conv_kw)(reflect_pad(y, 3))
    return jnp.tanh(y).astype(jnp.float32)


class PatchDiscriminator(nn.Module):
  """The 70×70 PatchGAN discriminator (``NLayerDiscriminator`` in the reference).

  Each output pixel scores one 70×70 patch of the input (for ``n_layers=3``); a 256² input
  gives a 30×30 map. Convs carry a bias because the norm is InstanceNorm without affine.

  Attributes:
    ndf: channels of the first conv; doubled per layer, capped at 8·ndf.
    n_layers: number of stride-2 convs.
    dtype: computation dtype; the output is always float32.
    param_dtype: parameter dtype.
  """

  ndf: int = 64
  n_layers: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Scores patches of a batch of images.

    Args:
      x: NHWC images.
      train: unused (no dropout or batch statistics); kept so both networks share a call
        signature.

    Returns:
      float32 raw scores (no sigmoid; LSGAN uses MSE), shape (N, H', W', 1).
    """
    del train
    conv = lambda features, stride: layers.Conv(
        features,
        (4, 4),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        kernel_init=_kernel_init,
        bias_init=_bias_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
    )
    lrelu = lambda y: nn.leaky_relu(y, negative_slope=0.2)

    # As in DCGAN and pix2pix, the layer that sees raw pixels is not normalised.
    y = lrelu(conv(self.ndf, 2)(x))
    for n in range(1, self.n_layers):
      y = conv(self.ndf * min(2**n, 8), 2)(y)
      y = lrelu(_instance_norm(self.dtype)(y))
    y = conv(self.ndf * min(2**self.n_layers, 8), 1)(y)
    y = lrelu(_instance_norm(self.dtype)(y))
    y = conv(1, 1)(y)
    return y.astype(jnp.float32)
