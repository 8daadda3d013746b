"""Flax's Conv and ConvTranspose on jaxgan.ops' routed convolution.

Drop-in replacements: same fields, parameter names, shapes and auto-names ("Conv_0",
"ConvTranspose_0"), so checkpoints and parameter counts do not change. On XLA:CPU the
convolutions it runs badly become patches + matmul (see jaxgan/ops.py).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp
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
