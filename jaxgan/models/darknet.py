"""The lesson's Darknet and fast.ai's DAWNBench Wide ResNet, as Flax Linen modules.

Images are NHWC. ``dtype`` is the compute type (bf16/fp16 for mixed precision),
``param_dtype`` the storage type of parameters and BatchNorm statistics (fp32).
Logits always come back in fp32 so the loss is computed in fp32.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxgan.models import layers

# PyTorch's default Conv2d/Linear initialisation (kaiming_uniform with a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)). The lesson never re-initialises, so neither do we.
torch_default_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def torch_default_bias_init(fan_in: int):
  bound = 1 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: nn.initializers.uniform(2 * bound)(
      key, shape, dtype) - bound


class ConvLayer(nn.Module):
  """The lesson's ``conv_layer``: conv (no bias, padding ks//2) → BatchNorm → LeakyReLU(0.1)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  bn_momentum: float = 0.99  # PyTorch momentum 0.01: the running stats move slowly.
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    pad = self.kernel_size // 2
    x = layers.Conv(self.features, (self.kernel_size,) * 2, (self.stride,) * 2,
                padding=((pad, pad), (pad, pad)), use_bias=False,
                kernel_init=torch_default_kernel_init,
                dtype=self.dtype, param_dtype=self.param_dtype)(x)
    x = layers.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                         epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype)(x)
    return nn.leaky_relu(x, negative_slope=0.1)


class ResLayer(nn.Module):
  """``x + conv3x3(conv1x1(x))``: the 1×1 squeezes to ``ni * ratio`` channels, the 3×3 restores ni.

  ``ratio=0.5`` is the lesson's bottleneck (ni//2); ``ratio=2`` is the Wide ResNet
  alternative the lesson suggests trying (widen instead of squeeze).
  """
  ratio: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ni = x.shape[-1]
    conv = functools.partial(ConvLayer, dtype=self.dtype, param_dtype=self.param_dtype)
    y = conv(max(1, int(ni * self.ratio)), kernel_size=1)(x, train)
    y = conv(ni, kernel_size=3)(y, train)
    return x + y


class Darknet(nn.Module):
  """The lesson's Darknet: a conv stem, then per group a stride-2 conv that doubles the
  channels followed by ``nb`` ResLayers, then adaptive average pooling and a Dense head.

  ``Darknet()`` has 31,410,922 parameters (counted as PyTorch counts them) for 3-channel
  input, like ``Darknet([1, 2, 4, 6, 3], num_classes=10, nf=32)`` in the lesson.

  Attributes:
    num_blocks: ResLayers per group; the number of groups is its length.
    num_classes: outputs of the head.
    nf: channels of the stem; each group doubles them.
    bottleneck: ResLayer's squeeze ratio (0.5 = the lesson; >1 widens, as WRN found faster).
    dtype, param_dtype: compute and storage types.
  """
  num_blocks: Sequence[int] = (1, 2, 4, 6, 3)
  num_classes: int = 10
  nf: int = 32
  bottleneck: float = 0.5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(ConvLayer, dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    nf = self.nf
    x = conv(nf, kernel_size=3, stride=1)(x, train)
    for i, nb in enumerate(self.num_blocks):
      # Stride 1 for the second group only: CIFAR's 32×32 grid runs out of cells fast.
      x = conv(nf * 2, stride=2 - (i == 1))(x, train)
      for _ in range(nb):
        x = ResLayer(self.bottleneck, dtype=self.dtype, param_dtype=self.param_dtype)(x, train)
      nf *= 2
    x = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1) + Flatten: any input size works.
    self.sow("intermediates", "features", x)  # the penultimate features (GAN judges)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=torch_default_kernel_init,
                 bias_init=torch_default_bias_init(nf))(x)
    return x.astype(jnp.float32)


class WideBasicBlock(nn.Module):
  """fastai's pre-activation ``BasicBlock``: BN → ReLU → conv3×3(stride) → BN → ReLU →
  conv3×3, added to a shortcut of the *activated* input.

  As fastai writes it, ``x2 = relu(bn(x))`` feeds both paths: the shortcut is a 1×1 conv
  of ``x2`` where width or stride changes and ``x2`` itself otherwise, never the raw
  ``x``. The residual branch is multiplied by ``residual_scale`` before the add (fastai
  uses 0.2), which keeps early activations small in a deep, wide net.
  """
  features: int
  stride: int = 1
  residual_scale: float = 0.2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = functools.partial(layers.BatchNorm, use_running_average=not train, momentum=0.9,
                           epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype)
    conv = functools.partial(layers.Conv, use_bias=False, kernel_init=torch_default_kernel_init,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    activated = nn.relu(bn()(x))
    shortcut = activated
    if x.shape[-1] != self.features or self.stride != 1:
      shortcut = conv(self.features, (1, 1), (self.stride,) * 2, padding="VALID")(activated)
    y = conv(self.features, (3, 3), (self.stride,) * 2, padding=((1, 1), (1, 1)))(activated)
    y = nn.relu(bn()(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)))(y)
    return shortcut + y * self.residual_scale


class WideResNet(nn.Module):
  """fast.ai's WideResNet(num_groups, N, k, start_nf) used for its DAWNBench entry.

  A 3×3 stem to ``start_nf`` channels; ``num_groups`` groups of ``blocks_per_group``
  pre-activation blocks of width ``start_nf * 2**i * k`` (stride 1 first, then 2); then
  BN → ReLU → global average pool → Dense. ``residual_scale`` multiplies each block's
  residual branch (fastai: 0.2; 1.0 gives the plain WRN sum).
  """
  num_groups: int = 3
  blocks_per_group: int = 3
  k: int = 6
  start_nf: int = 16
  num_classes: int = 10
  residual_scale: float = 0.2
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = layers.Conv(self.start_nf, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=torch_default_kernel_init,
                dtype=self.dtype, param_dtype=self.param_dtype)(x)
    for i in range(self.num_groups):
      width = self.start_nf * 2**i * self.k
      for j in range(self.blocks_per_group):
        stride = 2 if (i > 0 and j == 0) else 1
        x = WideBasicBlock(width, stride, self.residual_scale, dtype=self.dtype,
                           param_dtype=self.param_dtype)(x, train)
    x = layers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=self.param_dtype)(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    self.sow("intermediates", "features", x)
    x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernel_init=torch_default_kernel_init,
                 bias_init=torch_default_bias_init(x.shape[-1]))(x)
    return x.astype(jnp.float32)


# fast.ai's DAWNBench network: 3 groups of 3 blocks, widening factor 6, 16-channel stem.
wrn_22 = functools.partial(WideResNet, num_groups=3, blocks_per_group=3, k=6, start_nf=16)
