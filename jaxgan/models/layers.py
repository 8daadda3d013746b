"""Flax's Conv, ConvTranspose and BatchNorm, faster on XLA:CPU.

Drop-in replacements: same fields, parameter names, shapes and auto-names ("Conv_0",
"ConvTranspose_0", "BatchNorm_0"), so checkpoints and parameter counts do not change. On
XLA:CPU the convolutions it runs badly become patches + matmul (see jaxgan/ops.py), and
BatchNorm trains with a closed-form backward pass (docs/cpu_convolutions.md).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from flax.linen import dtypes
from flax.linen.linear import canonicalize_padding

from jaxgan import ops

# flax 0.10-0.12 take the convolution as a field; the module is otherwise nn.Conv.
Conv = functools.partial(nn.Conv, conv_general_dilated=ops.conv_general_dilated)


class ConvTranspose(nn.ConvTranspose):
  """``nn.ConvTranspose`` through ``ops.conv_transpose`` ('CIRCULAR' padding unsupported).

  nn.ConvTranspose calls lax.conv_transpose directly and takes no convolution field,
  hence this copy of its parameter set-up.
  """

  @nn.compact
  def __call__(self, inputs):
    kernel_size = ((self.kernel_size,) if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    nsp = len(kernel_size)

    def broadcast(v) -> tuple[int, ...]:
      v = 1 if v is None else v
      return (v,) * nsp if isinstance(v, int) else tuple(v)

    batch_shape = inputs.shape[:inputs.ndim - nsp - 1]
    if len(batch_shape) != 1:
      inputs = jnp.reshape(inputs, (-1,) + inputs.shape[len(batch_shape):])
    in_features = inputs.shape[-1]
    kernel_shape = kernel_size + ((self.features, in_features) if self.transpose_kernel
                                  else (in_features, self.features))
    if self.mask is not None and self.mask.shape != kernel_shape:
      raise ValueError("Mask needs to have the same shape as weights. "
                       f"Shapes are: {self.mask.shape}, {kernel_shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
    if self.mask is not None:
      kernel *= self.mask
    padding = canonicalize_padding(self.padding, nsp)
    if padding == "CIRCULAR":
      raise NotImplementedError("CIRCULAR padding: use flax.linen.ConvTranspose")
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    promote = getattr(self, "promote_dtype", dtypes.promote_dtype)  # a field from flax 0.11
    inputs, kernel, bias = promote(inputs, kernel, bias, dtype=self.dtype)
    y = ops.conv_transpose(inputs, kernel, broadcast(self.strides), padding,
                           rhs_dilation=broadcast(self.kernel_dilation),
                           transpose_kernel=self.transpose_kernel, precision=self.precision,
                           preferred_element_type=getattr(self, "preferred_element_type", None))
    if bias is not None:
      y += jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    if len(batch_shape) != 1:
      y = jnp.reshape(y, batch_shape + y.shape[1:])
    return y


def _batch_stats(x32, axes, fast_variance: bool):
  """Flax's batch mean and (biased) variance, in the same arithmetic."""
  mean = jnp.mean(x32, axes)
  if fast_variance:  # E[x^2] - E[x]^2, clipped at 0 as Flax does
    return mean, jnp.maximum(0.0, jnp.mean(jnp.square(x32), axes) - jnp.square(mean))
  return mean, jnp.mean(jnp.square(x32 - mean), axes)  # two passes, as PyTorch


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x, scale, bias, epsilon: float, fast_variance: bool, dtype):
  """Training-mode BatchNorm over all axes but the last: ``(y, batch mean, batch var)``.

  The forward pass is Flax's ``BatchNorm`` (statistics in float32, y in ``dtype``). The
  backward pass is the textbook closed form, dx = scale / sigma * (dy - mean(dy) -
  x_hat * mean(dy * x_hat)): two sums and one elementwise pass, where autodiff of the
  forward traces each of its steps back (2x the memory passes on XLA:CPU).
  """
  return _batch_norm_train_fwd(x, scale, bias, epsilon, fast_variance, dtype)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon, fast_variance, dtype):
  axes = tuple(range(x.ndim - 1))
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, var = _batch_stats(x32, axes, fast_variance)
  inv = lax.rsqrt(var + epsilon)
  y = ((x32 - mean) * (inv * scale) + bias).astype(dtype)
  return (y, mean, var), (x, mean, inv, scale, bias)


def _batch_norm_train_bwd(epsilon, fast_variance, dtype, residuals, cotangents):
  del epsilon, fast_variance, dtype
  x, mean, inv, scale, bias = residuals
  dy, dmean, dvar = cotangents
  axes = tuple(range(x.ndim - 1))
  n = x.size // x.shape[-1]
  centred = x.astype(mean.dtype) - mean
  x_hat = centred * inv
  dy32 = dy.astype(mean.dtype)
  dbias = jnp.sum(dy32, axes)
  dscale = jnp.sum(dy32 * x_hat, axes)
  dx = (scale * inv / n) * (n * dy32 - dbias - x_hat * dscale)
  # The batch statistics are outputs too (for the running averages); their cotangents
  # are zero in training, but a caller may differentiate them.
  dx = dx + dmean / n + centred * (2.0 * dvar / n)
  return (dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype))


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def _at_most_32_bit_floats(*dtypes_) -> bool:
  """Real floats of at most 32 bits, where Flax's statistics are float32 as here."""
  return all(d is None or (jnp.issubdtype(d, jnp.floating) and jnp.finfo(d).bits <= 32)
             for d in dtypes_)


class BatchNorm(nn.BatchNorm):
  """``nn.BatchNorm`` (same fields, parameters, statistics and values), faster to train on CPU.

  In training mode over the last axis on the CPU backend, the normalisation is
  `batch_norm_train`, whose backward pass XLA:CPU runs in fewer passes over memory than
  autodiff's. Everything else (running averages, initialisation, ``mask``,
  ``axis_name``, float64 or complex inputs, other backends, whose speed was measured with
  Flax's) is Flax's own. Like any ``custom_vjp``, the CPU training path has no
  forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``); nothing in jaxgan uses it, and the
  routed convolutions (``ops.conv_canonical``) have the same limit.
  """

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    running = nn.merge_param("use_running_average", self.use_running_average,
                             use_running_average)
    if (running or mask is not None or self.axis_name is not None
        or self.axis not in (-1, x.ndim - 1) or not (self.use_scale and self.use_bias)
        or not self.force_float32_reductions or jax.default_backend() != "cpu"
        or self.is_initializing() or not _at_most_32_bit_floats(x.dtype, self.dtype)):
      return nn.BatchNorm.__call__(self, x, use_running_average, mask=mask)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
    # Flax's names and order (initialisation itself always runs Flax's own code above).
    scale = self.param("scale", self.scale_init, features, self.param_dtype)
    bias = self.param("bias", self.bias_init, features, self.param_dtype)
    dtype = dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    y, mean, var = batch_norm_train(x, scale.astype(jnp.float32), bias.astype(jnp.float32),
                                    self.epsilon, self.use_fast_variance, dtype)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y
