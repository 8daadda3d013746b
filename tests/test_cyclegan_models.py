"""Tests for the CycleGAN networks (docs/lesson.md, "CycleGAN" and "PyTorch → Flax").

Full-width networks are only traced (``jax.eval_shape``); real forward passes use ngf=8 so
the file runs in seconds on a CPU.
"""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import count_params
from jaxgan.models.cyclegan import (
    PatchDiscriminator,
    ResnetGenerator,
    reflect_pad,
    torch_conv_transpose_padding,
)

# Threefry RNG takes tens of seconds to compile on a busy CPU (one unrolled hash per
# parameter); the rbg implementation compiles in about a second and draws the same normals
# in distribution, which is all these tests need.
KEY = jax.random.key(0, impl="rbg")


@functools.cache
def jitted(model):
  """One compiled ``apply`` per module configuration (modules are hashable dataclasses)."""
  return jax.jit(model.apply, static_argnames="train")


def shapes(model, h, w, c=3, n=1):
  """(variables, output) as ShapeDtypeStructs, without computing anything."""
  x = jax.ShapeDtypeStruct((n, h, w, c), jnp.float32)
  variables = jax.eval_shape(model.init, KEY, x)
  return variables, jax.eval_shape(model.apply, variables, x)


def generator_formula(ngf, n_blocks, nc_in=3, nc=3):
  """PyTorch's count for the reference ResnetGenerator: weights + biases of every conv."""
  conv = lambda cin, cout, k: cin * cout * k * k + cout
  return (conv(nc_in, ngf, 7) + conv(ngf, 2 * ngf, 3) + conv(2 * ngf, 4 * ngf, 3)
          + n_blocks * 2 * conv(4 * ngf, 4 * ngf, 3)
          + conv(4 * ngf, 2 * ngf, 3) + conv(2 * ngf, ngf, 3) + conv(ngf, nc, 7))


def torch_conv_transpose(x, w, b, stride, padding, output_padding):
  """PyTorch ConvTranspose2d by its definition, NHWC in and out.

  x: (N, H, W, Cin); w: PyTorch layout (Cin, Cout, k, k). out[i*s - p + k] += x[i] * w[k],
  output size (H - 1)*s - 2p + k + output_padding.
  """
  n, h, wd, _ = x.shape
  k = w.shape[2]
  ho = (h - 1) * stride - 2 * padding + k + output_padding
  wo = (wd - 1) * stride - 2 * padding + k + output_padding
  # Accumulate without the -p shift into a buffer big enough, then crop.
  full = np.zeros((n, max((h - 1) * stride + k, padding + ho),
                   max((wd - 1) * stride + k, padding + wo), w.shape[1]))
  for i in range(h):
    for j in range(wd):
      for ki in range(k):
        for kj in range(k):
          full[:, i * stride + ki, j * stride + kj, :] += x[:, i, j, :] @ w[:, :, ki, kj]
  return full[:, padding:padding + ho, padding:padding + wo, :] + b


_TRACED = (nn.Conv, nn.ConvTranspose, nn.InstanceNorm)


def make_tracer(model, params):
  """Compiled fn(x) -> list of (module, its params, input, output) for the layers in _TRACED."""
  modules = []  # filled while tracing: layer configs are static

  def run(params, x):
    records = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, _TRACED) and context.method_name == "__call__":
        modules.append(context.module)
        records.append((context.module.variables.get("params", {}), args[0], out))
      return out

    with nn.intercept_methods(interceptor):
      model.apply(params, x)
    return records

  compiled = jax.jit(run)

  def trace(x):
    records = compiled(params, x)
    return [(m, p, np.asarray(i), np.asarray(o))
            for m, (p, i, o) in zip(modules[-len(records):], records)]

  return trace


@pytest.fixture(scope="module")
def small_gen():
  """A narrow 2-block generator, its params, a 2-image batch at 36x44 and a layer tracer."""
  model = ResnetGenerator(ngf=8, n_blocks=2)
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 36, 44, 3)), jnp.float32)
  params = jax.jit(model.init)(KEY, x)
  return model, params, x, make_tracer(model, params)


@pytest.fixture(scope="module")
def small_disc(small_gen):
  """A narrow PatchGAN and its params, for the same batch."""
  disc = PatchDiscriminator(ndf=8)
  return disc, jax.jit(disc.init)(KEY, small_gen[2])


def of_type(records, module_type):
  # isinstance: the models use jaxgan.models.layers' subclasses of Flax's conv layers.
  return [r for r in records if isinstance(r[0], module_type)]


# ---------------------------------------------------------------- shapes and counts


@pytest.mark.parametrize("h,w", [(256, 256), (128, 128), (64, 64), (36, 44)])
def test_generator_keeps_size(h, w):
  _, out = shapes(ResnetGenerator(), h, w)
  assert out.shape == (1, h, w, 3)
  assert out.dtype == jnp.float32


def test_generator_channels_in_and_out():
  variables, out = shapes(ResnetGenerator(nc=2), 64, 64, c=1)
  assert out.shape == (1, 64, 64, 2)
  assert count_params(variables["params"]) == generator_formula(64, 9, nc_in=1, nc=2)


def test_generator_param_counts():
  variables, _ = shapes(ResnetGenerator(), 256, 256)
  assert set(variables) == {"params"}  # InstanceNorm keeps no state
  assert count_params(variables["params"]) == 11_378_179 == generator_formula(64, 9)
  variables, _ = shapes(ResnetGenerator(n_blocks=6), 128, 128)
  assert count_params(variables["params"]) == generator_formula(64, 6) == 7_837_699


def test_discriminator_param_count():
  variables, _ = shapes(PatchDiscriminator(), 256, 256)
  assert set(variables) == {"params"}
  assert count_params(variables["params"]) == 2_764_737


@pytest.mark.parametrize("size,out", [(256, 30), (128, 14), (64, 6)])
def test_discriminator_map_size(size, out):
  # Three stride-2 convs halve the size, each k4 s1 p1 conv removes one pixel.
  assert size // 8 - 2 == out
  _, y = shapes(PatchDiscriminator(), size, size)
  assert y.shape == (1, out, out, 1)
  assert y.dtype == jnp.float32


@pytest.mark.parametrize("h,w", [(30, 30), (32, 30), (34, 32)])
def test_generator_rejects_sizes_not_multiple_of_4(h, w):
  with pytest.raises(ValueError, match="multiple of 4"):
    shapes(ResnetGenerator(ngf=8, n_blocks=1), h, w)


# ---------------------------------------------------------------- init


def test_init_normal_002_and_zero_bias():
  # Full width, one block, 8x8 image: 2.2M weights for a tight std estimate, little compute.
  params = jax.jit(ResnetGenerator(n_blocks=1).init)(KEY, jnp.zeros((1, 8, 8, 3)))["params"]
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = np.concatenate([np.ravel(v) for p, v in leaves if p[-1].key == "kernel"])
  biases = [v for p, v in leaves if p[-1].key == "bias"]
  assert kernels.size + sum(b.size for b in biases) == generator_formula(64, 1)
  assert len(biases) == 1 + 2 + 2 * 1 + 2 + 1  # every conv has a bias
  assert abs(kernels.std() - 0.02) < 1e-4
  assert abs(kernels.mean()) < 1e-4
  assert all(not np.any(b) for b in biases)
  assert all(v.dtype == jnp.float32 for _, v in leaves)


# ---------------------------------------------------------------- layer equivalences


def test_reflect_pad_matches_pytorch_reflection():
  x = jnp.tile(jnp.arange(1.0, 5.0).reshape(1, 1, 4, 1), (1, 3, 1, 1))  # rows of 1 2 3 4
  y = reflect_pad(x, 2)
  assert y.shape == (1, 7, 8, 1)
  # ReflectionPad2d(2) of [1 2 3 4] -> [3 2 1 2 3 4 3 2] (the edge is not repeated).
  np.testing.assert_array_equal(y[0, 0, :, 0], [3, 2, 1, 2, 3, 4, 3, 2])


def test_conv_transpose_padding_rule():
  assert torch_conv_transpose_padding(3, 1, 1) == ((1, 2), (1, 2))
  assert torch_conv_transpose_padding(4, 1) == ((2, 2), (2, 2))  # DCGAN k4 s2 p1 (docs/lesson.md)
  assert torch_conv_transpose_padding(4, 0) == ((3, 3), (3, 3))


def test_conv_transpose_equals_pytorch_and_same_does_not():
  # Hand-built: 1 image, 3x4 grid, 2 -> 3 channels, mixed integer values so any shift, flip
  # or axis swap shows up.
  x = (np.arange(24, dtype=np.float64).reshape(1, 3, 4, 2) % 7) - 3
  w = (np.arange(54, dtype=np.float64).reshape(2, 3, 3, 3) % 5) - 2  # (Cin, Cout, k, k)
  b = np.array([0.5, -1.0, 2.0])
  expected = torch_conv_transpose(x, w, b, stride=2, padding=1, output_padding=1)
  assert expected.shape == (1, 6, 8, 3)  # (H-1)*2 - 2 + 3 + 1 = 2H
  assert expected[0, 0, 0, 0] == x[0, 0, 0] @ w[:, 0, 1, 1] + b[0]  # out[0] only sees k=p

  params = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0), jnp.float32),
                       "bias": jnp.asarray(b, jnp.float32)}}
  layer = lambda pad: nn.ConvTranspose(3, (3, 3), (2, 2), padding=pad, transpose_kernel=True)
  xj = jnp.asarray(x, jnp.float32)
  np.testing.assert_allclose(layer(((1, 2), (1, 2))).apply(params, xj), expected, atol=1e-5)

  same = layer("SAME").apply(params, xj)
  assert same.shape == expected.shape
  assert np.abs(np.asarray(same) - expected).max() > 1.0


def test_generator_upsampling_layers_equal_pytorch(small_gen):
  *_, x, trace = small_gen
  records = of_type(trace(x), nn.ConvTranspose)
  assert [r[3].shape for r in records] == [(2, 18, 22, 16), (2, 36, 44, 8)]
  for _, p, inp, out in records:
    w = np.asarray(p["kernel"], np.float64).transpose(3, 2, 0, 1)  # back to PyTorch layout
    ref = torch_conv_transpose(inp.astype(np.float64), w, np.asarray(p["bias"]), 2, 1, 1)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- instance norm


def test_instance_norm_statistics(small_gen):
  *_, x, trace = small_gen
  records = of_type(trace(x), nn.InstanceNorm)
  assert len(records) == 3 + 2 * 2 + 2  # stem + 2 down, 2 per block, 2 up
  for module, _, inp, out in records:
    assert (module.epsilon, module.use_scale, module.use_bias) == (1e-5, False, False)
    mean = out.mean(axis=(1, 2))
    assert mean.shape == (2, inp.shape[-1])  # one statistic per example and channel
    np.testing.assert_allclose(mean, 0, atol=1e-5)
    in_var = inp.astype(np.float64).var(axis=(1, 2))
    np.testing.assert_allclose(out.var(axis=(1, 2)), in_var / (in_var + 1e-5), rtol=1e-3)
    np.testing.assert_allclose(out.var(axis=(1, 2)), 1, atol=2e-2)


def test_instance_norm_eps_is_pytorchs(small_gen):
  # Scaled-down images make the first norm's input variance ~1e-8, so eps dominates:
  # PyTorch's 1e-5 and Flax's default 1e-6 give outputs ~3x apart.
  *_, x, trace = small_gen
  _, _, inp, out = of_type(trace(x * 1e-3), nn.InstanceNorm)[0]
  inp = inp.astype(np.float64)
  assert inp.var((1, 2)).max() < 1e-6
  centred = inp - inp.mean((1, 2), keepdims=True)
  var = inp.var((1, 2), keepdims=True)
  np.testing.assert_allclose(out, centred / np.sqrt(var + 1e-5), atol=1e-4)
  assert np.abs(out - centred / np.sqrt(var + 1e-6)).max() > 1e-2


def test_batch_examples_are_independent(small_gen, small_disc):
  model, params, x, _ = small_gen
  y = jitted(model)(params, x)
  x2 = x.at[1].set(-3.0 * x[1] + 0.5)
  y2 = jitted(model)(params, x2)
  np.testing.assert_allclose(y2[0], y[0], atol=1e-6)
  assert np.abs(np.asarray(y2[1] - y[1])).max() > 1e-2

  disc, dparams = small_disc
  d, d2 = jitted(disc)(dparams, x), jitted(disc)(dparams, x2)
  np.testing.assert_allclose(d2[0], d[0], atol=1e-6)
  assert np.abs(np.asarray(d2[1] - d[1])).max() > 1e-3


# ---------------------------------------------------------------- forward values


def test_small_generator_forward(small_gen):
  model, params, x, trace = small_gen
  y = jitted(model)(params, x)
  assert y.shape == (2, 36, 44, 3) and y.dtype == jnp.float32
  assert float(jnp.abs(y).max()) <= 1.0
  assert float(y.std()) > 1e-3  # not collapsed to a constant
  records = trace(x)
  assert [r[3].shape[-1] for r in of_type(records, nn.Conv)] == [8, 16, 32] + [32] * 4 + [3]
  # The output is tanh of the last conv, and the residual stream keeps 1/4 resolution.
  np.testing.assert_allclose(y, np.tanh(of_type(records, nn.Conv)[-1][3]), atol=1e-6)
  assert of_type(records, nn.Conv)[3][3].shape == (2, 9, 11, 32)


def test_dropout_only_in_train_with_rng(small_gen):
  model, params, x, _ = small_gen
  plain = jitted(model)(params, x)
  drop = ResnetGenerator(ngf=8, n_blocks=2, dropout=0.5)  # dropout adds no params
  np.testing.assert_array_equal(
      jitted(drop)(params, x, train=False, rngs={"dropout": KEY}), plain)
  t1 = jitted(drop)(params, x, train=True, rngs={"dropout": jax.random.key(1, impl="rbg")})
  t2 = jitted(drop)(params, x, train=True, rngs={"dropout": jax.random.key(2, impl="rbg")})
  assert np.abs(np.asarray(t1 - plain)).max() > 1e-2
  assert np.abs(np.asarray(t1 - t2)).max() > 1e-2
  # Without dropout, train mode changes nothing and needs no rng.
  np.testing.assert_array_equal(jitted(model)(params, x, train=True), plain)
  with pytest.raises(flax.errors.InvalidRngError):
    drop.apply(params, x, train=True)  # dropout > 0 in train mode needs a 'dropout' rng


# ---------------------------------------------------------------- mixed precision


def test_bf16_compute_fp32_params_and_output(small_gen, small_disc):
  model, params, x, _ = small_gen
  y32 = jitted(model)(params, x)
  y16 = jitted(ResnetGenerator(ngf=8, n_blocks=2, dtype=jnp.bfloat16))(params, x)
  assert y16.dtype == jnp.float32 and y16.shape == y32.shape
  err = float(jnp.abs(y16 - y32).max())
  assert 0 < err < 0.1  # really computed in bf16, and still close

  disc, dparams = small_disc
  d16 = jitted(PatchDiscriminator(ndf=8, dtype=jnp.bfloat16))(dparams, x)
  assert d16.dtype == jnp.float32 and d16.shape == (2, 2, 3, 1)
  assert float(jnp.abs(d16 - jitted(disc)(dparams, x)).max()) < 0.1

  # Parameters are stored in param_dtype, whatever the compute dtype.
  for m in (ResnetGenerator(dtype=jnp.bfloat16), PatchDiscriminator(dtype=jnp.bfloat16)):
    assert {v.dtype for v in jax.tree.leaves(shapes(m, 64, 64)[0])} == {jnp.dtype("float32")}
  for m in (ResnetGenerator(param_dtype=jnp.bfloat16),
            PatchDiscriminator(param_dtype=jnp.bfloat16)):
    variables, out = shapes(m, 64, 64)
    assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype("bfloat16")}
    assert out.dtype == jnp.float32
