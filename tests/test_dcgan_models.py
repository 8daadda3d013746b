"""Tests for jaxgan.models.dcgan: shapes, PyTorch parameter counts, init, layer maths."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import count_params, dcgan
from jaxgan.models.dcgan import DCGANCritic, DCGANGenerator, _UpConv

# rbg keys: on CPU, XLA compiles threefry sampling ~10x slower, and a real init compiles
# one sampler per kernel shape. Only test_init_statistics runs a real init; the other
# tests trace init abstractly and fill parameters with numpy (see fake_init).
KEY = jax.random.key(0, impl="rbg")


def n_params(variables) -> int:
  """Counts parameters as PyTorch does: the params collection only."""
  return count_params(variables["params"])


def abstract_init(model, x, **kwargs):
  return jax.eval_shape(functools.partial(model.init, **kwargs), KEY, x)


def apply(model, variables, x, **kwargs):
  """model.apply, jitted: on CPU one compile beats eager mode's compile per op."""
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, x)


def fake_init(model, x, seed=0):
  """Variables shaped as model.init's, drawn like the WGAN init, without compiling it."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      a = 0.02 * rng.standard_normal(leaf.shape)
    elif name == "scale":
      a = 1 + 0.02 * rng.standard_normal(leaf.shape)
    elif name == "var":
      a = np.ones(leaf.shape)
    else:  # bias, running mean
      a = np.zeros(leaf.shape)
    return jnp.asarray(a, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract_init(model, x, train=False))


def torch_conv_transpose(x, w, stride, pad):
  """Direct numpy ConvTranspose2d from PyTorch's definition (NHWC x, torch w (Cin, Cout, k, k))."""
  n, h, wd, _ = x.shape
  _, cout, k, _ = w.shape
  full = np.zeros((n, (h - 1) * stride + k, (wd - 1) * stride + k, cout))
  for i in range(h):
    for j in range(wd):
      # Each input pixel scatters x[i, j] * w into a k x k patch at (i*s, j*s).
      full[:, i * stride:i * stride + k, j * stride:j * stride + k, :] += np.einsum(
          "nc,coab->nabo", x[:, i, j, :], w)
  out = full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad, :]
  assert out.shape[1] == (h - 1) * stride - 2 * pad + k
  return out


def conv3x3_same(x, k):
  """Direct numpy 3x3 cross-correlation, zero padding 1 (NHWC x, HWIO k)."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  return sum(np.einsum("nhwc,co->nhwo", xp[:, a:a + h, b:b + w, :], k[a, b])
             for a in range(3) for b in range(3))


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("n_extra, expected", [(1, 3_613_696), (0, 3_576_704)])
def test_generator_param_count_matches_pytorch(n_extra, expected):
  g = DCGANGenerator(isize=64, nz=100, nc=3, ngf=64, n_extra_layers=n_extra)
  v = abstract_init(g, jnp.zeros((2, 100)))
  assert n_params(v) == expected
  # Running stats exist but are not parameters: 2 per BN channel.
  bn_channels = 512 + 256 + 128 + 64 + 64 * n_extra
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(v["batch_stats"])) == 2 * bn_channels


@pytest.mark.parametrize("n_extra, expected", [(1, 2_802_560), (0, 2_765_568)])
def test_critic_param_count_matches_pytorch(n_extra, expected):
  d = DCGANCritic(isize=64, nc=3, ndf=64, n_extra_layers=n_extra)
  assert n_params(abstract_init(d, jnp.zeros((2, 64, 64, 3)))) == expected


def test_critic_norm_variants_param_counts_and_no_batch_stats():
  x = jnp.zeros((2, 64, 64, 3))
  v_none = abstract_init(DCGANCritic(norm="none"), x)
  v_layer = abstract_init(DCGANCritic(norm="layer"), x)
  assert "batch_stats" not in v_none and "batch_stats" not in v_layer
  bn_params = 2 * (64 + 128 + 256 + 512)
  assert n_params(v_none) == 2_802_560 - bn_params
  # LayerNorm([C, H, W]) has a per-element scale and bias.
  ln_params = 2 * (32 * 32 * 64 + 16 * 16 * 128 + 8 * 8 * 256 + 4 * 4 * 512)
  assert n_params(v_layer) == 2_802_560 - bn_params + ln_params


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("make", [DCGANGenerator, DCGANCritic])
@pytest.mark.parametrize("isize, near", [(48, "32 or 64"), (80, "64 or 128"), (96, "64 or 128"),
                                         (50, "32 or 64"), (8, "16")])
def test_isize_not_16_times_a_power_of_two_is_rejected_at_construction(make, isize, near):
  # Construction raises, so nothing reaches the generator's width loop, which used to
  # spin forever on multiples of 16 such as 48 or 80.
  with pytest.raises(ValueError, match=rf"isize must be 16 times a power of two \(16, 32, 64, "
                                       rf"128, 256, ...\); got {isize}: use {near},"):
    make(isize=isize)


@pytest.mark.parametrize("isize", [16, 32, 64, 128, 256, 512])
def test_powers_of_two_sizes_are_accepted(isize):
  DCGANGenerator(isize=isize)
  DCGANCritic(isize=isize)
  dcgan.check_isize(isize)
  assert dcgan.nearest_isizes(isize) == (isize,)


def test_generator_width_loop_ends_even_past_the_check(monkeypatch):
  # Defence in depth: with the check bypassed, tracing ends (at the next valid size)
  # instead of hanging the test run.
  monkeypatch.setattr(dcgan, "check_isize", lambda *args: None)
  g = DCGANGenerator(isize=48, nz=8, ngf=4)
  v = abstract_init(g, jnp.zeros((2, 8)))
  y = jax.eval_shape(functools.partial(g.apply, mutable=["batch_stats"]), v, jnp.zeros((2, 8)))
  assert y[0].shape == (2, 64, 64, 3)


def test_bad_options_rejected():
  with pytest.raises(ValueError, match="upsample"):
    DCGANGenerator(upsample="bicubic")
  with pytest.raises(ValueError, match="norm"):
    DCGANCritic(norm="instance")
  g = DCGANGenerator(isize=16, nz=8, ngf=4)
  with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
    g.init(KEY, jnp.zeros((2, 7)))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("isize", [16, 32, 64])
@pytest.mark.parametrize("nc", [1, 3])
def test_generator_shapes(isize, nc):
  g = DCGANGenerator(isize=isize, nz=8, nc=nc, ngf=4, n_extra_layers=1)
  z = jnp.zeros((2, 8))
  v = abstract_init(g, z)
  for zz in (z, z.reshape(2, 1, 1, 8)):
    for train in (False, True):
      y = jax.eval_shape(functools.partial(g.apply, train=train, mutable=["batch_stats"]),
                         v, zz)[0]
      assert y.shape == (2, isize, isize, nc) and y.dtype == jnp.float32
  # The widest layer is ngf * isize / 8 channels, the last hidden one ngf.
  assert v["params"]["initial"]["up"]["conv"]["kernel"].shape == (4, 4, 4 * isize // 8, 8)
  assert v["params"]["final"]["conv"]["kernel"].shape == (4, 4, nc, 4)


@pytest.mark.parametrize("isize", [16, 32, 64])
@pytest.mark.parametrize("nc", [1, 3])
def test_critic_shapes(isize, nc):
  d = DCGANCritic(isize=isize, nc=nc, ndf=4, n_extra_layers=1)
  x = jnp.zeros((3, isize, isize, nc))
  v = abstract_init(d, x)
  for train in (False, True):
    y = jax.eval_shape(functools.partial(d.apply, train=train, mutable=["batch_stats"]), v, x)[0]
    assert y.shape == (3,) and y.dtype == jnp.float32
  # Pyramid stops at a 4x4 grid: log2(isize/8) stride-2 blocks, channels x2 each.
  n_pyr = int(np.log2(isize // 8))
  assert sorted(k for k in v["params"] if k.startswith("pyramid")) == [
      f"pyramid_{i}" for i in range(n_pyr)]
  assert v["params"]["final"]["kernel"].shape == (4, 4, 4 * 2**n_pyr, 1)


def test_generator_forward_range_and_z_layouts():
  g = DCGANGenerator(isize=16, nz=8, nc=3, ngf=8)
  z = 5.0 * jax.random.normal(KEY, (4, 8))
  v = fake_init(g, z)
  y, _ = apply(g, v, z, mutable=["batch_stats"])
  y4, _ = apply(g, v, z.reshape(4, 1, 1, 8), mutable=["batch_stats"])
  y = np.asarray(y)
  assert y.shape == (4, 16, 16, 3) and y.dtype == np.float32
  np.testing.assert_array_equal(y, np.asarray(y4))
  assert np.all(np.abs(y) <= 1.0)
  assert y.std() > 1e-3  # not a constant image
  # Make tanh saturate: scaling the final kernel pushes pixels to +-1, never beyond.
  params = jax.tree.map(lambda a: a, v["params"])
  params["final"]["conv"]["kernel"] = params["final"]["conv"]["kernel"] * 1e4
  y_big, _ = apply(g, {**v, "params": params}, z, mutable=["batch_stats"])
  assert np.all(np.abs(np.asarray(y_big)) <= 1.0)
  assert np.mean(np.abs(np.asarray(y_big)) > 0.99) > 0.5


# ---------------------------------------------------------------- init and BatchNorm


def test_init_statistics():
  g = DCGANGenerator(isize=32, nz=100, nc=3, ngf=64)
  d = DCGANCritic(isize=32, nc=3, ndf=64)
  # One compiled program for both real inits (the only real init in this file).
  vg, vd = jax.jit(lambda k: (g.init(k, jnp.zeros((2, 100)), train=False),
                              d.init(k, jnp.zeros((2, 32, 32, 3)), train=False)))(KEY)
  flat = {}
  for name, v in (("g", vg), ("d", vd)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(v["params"]):
      flat[(name,) + tuple(p.key for p in path)] = np.asarray(leaf)
  kernels = np.concatenate([a.ravel() for k, a in flat.items() if k[-1] == "kernel"])
  scales = np.concatenate([a.ravel() for k, a in flat.items() if k[-1] == "scale"])
  biases = np.concatenate([a.ravel() for k, a in flat.items() if k[-1] == "bias"])
  assert kernels.size > 1_000_000 and scales.size > 500
  assert abs(kernels.mean()) < 1e-4
  assert abs(kernels.std() - 0.02) < 2e-4
  # Every layer, not just the pooled total, is N(0, 0.02).
  for k, a in flat.items():
    if k[-1] == "kernel" and a.size >= 1000:
      assert abs(a.std() - 0.02) < 0.002, k
  assert abs(scales.mean() - 1.0) < 0.005
  assert abs(scales.std() - 0.02) < 0.004
  np.testing.assert_array_equal(biases, 0.0)
  # Only kernels, BN scales and BN biases: no conv biases anywhere.
  assert {k[-1] for k in flat} == {"kernel", "scale", "bias"}
  assert all(k[-2] == "bn" for k in flat if k[-1] == "bias")
  # Running statistics start at PyTorch's: mean 0, var 1.
  for path, leaf in jax.tree_util.tree_leaves_with_path(vd["batch_stats"]):
    np.testing.assert_array_equal(leaf, 0.0 if path[-1].key == "mean" else 1.0)


def test_batchnorm_matches_pytorch_momentum_and_order():
  """ConvBlock is conv -> LeakyReLU(0.2) -> BN; running stats move 10% (PyTorch 0.1)."""
  d = DCGANCritic(isize=16, nc=3, ndf=4, n_extra_layers=1)
  x = jax.random.normal(KEY, (8, 16, 16, 3))
  v = fake_init(d, x)
  _, state = apply(d, v, x, mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  conv_out = np.asarray(state["intermediates"]["extra_0"]["conv"]["__call__"][0], np.float64)
  act = np.where(conv_out > 0, conv_out, 0.2 * conv_out)
  bs = state["batch_stats"]["extra_0"]["bn"]
  np.testing.assert_allclose(bs["mean"], 0.1 * act.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(bs["var"], 0.9 + 0.1 * act.var(axis=(0, 1, 2)), rtol=1e-4)
  # The BN output itself: eps 1e-5, batch statistics.
  bn_out = np.asarray(state["intermediates"]["extra_0"]["bn"]["__call__"][0])
  p = v["params"]["extra_0"]["bn"]
  ref = (act - act.mean((0, 1, 2))) / np.sqrt(act.var((0, 1, 2)) + 1e-5) * p["scale"] + p["bias"]
  np.testing.assert_allclose(bn_out, ref, rtol=1e-4, atol=1e-5)
  # Eval mode normalises with the running statistics instead.
  y_eval = apply(d, {**v, "batch_stats": state["batch_stats"]}, x, train=False)
  y_train, _ = apply(d, v, x, mutable=["batch_stats"])
  assert np.abs(np.asarray(y_eval) - np.asarray(y_train)).max() > 1e-3


# ---------------------------------------------------------------- layer maths


@pytest.mark.parametrize("k, s, p, h", [(4, 2, 1, 3), (4, 1, 0, 1), (3, 1, 1, 4)])
def test_transposed_conv_equals_pytorch_definition(k, s, p, h):
  rng = np.random.default_rng(0)
  cin, cout = 3, 5
  x = rng.standard_normal((2, h, h, cin)).astype(np.float32)
  w = rng.standard_normal((cin, cout, k, k)).astype(np.float32)  # PyTorch layout
  layer = _UpConv(cout, k, s, p)
  assert abstract_init(layer, jnp.asarray(x))["params"]["conv"]["kernel"].shape == (k, k, cout, cin)
  y = apply(layer, {"params": {"conv": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0))}}},
            jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(y), torch_conv_transpose(x, w, s, p), rtol=1e-5, atol=1e-5)


def test_upsample_conv_is_resize_then_3x3_conv():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
  layer = _UpConv(5, 4, 2, 1, upsample="nearest")
  assert abstract_init(layer, jnp.asarray(x))["params"]["conv"]["kernel"].shape == (3, 3, 4, 5)
  y = np.asarray(apply(layer, {"params": {"conv": {"kernel": jnp.asarray(kernel)}}},
                       jnp.asarray(x)))
  ref = conv3x3_same(x.repeat(2, axis=1).repeat(2, axis=2), kernel)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_upsample_variants():
  z = jax.random.normal(KEY, (2, 8))
  outs, called = {}, {}
  for mode in (None, "nearest", "bilinear"):
    g = DCGANGenerator(isize=32, nz=8, nc=3, ngf=4, n_extra_layers=1, upsample=mode)
    # Same seed, so nearest and bilinear share parameters: any difference is the resize.
    v = fake_init(g, z)
    seen = []

    def record(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.path:
        seen.append((type(context.module).__name__, context.module.path[0]))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      y, _ = apply(g, v, z, mutable=["batch_stats"])
    outs[mode], called[mode] = np.asarray(y), seen
    assert outs[mode].shape == (2, 32, 32, 3)
    assert np.all(np.abs(outs[mode]) <= 1.0)
    if mode is not None:
      # Every resize conv is 3x3.
      assert v["params"]["pyramid_0"]["up"]["conv"]["kernel"].shape == (3, 3, 16, 8)
      assert v["params"]["pyramid_1"]["up"]["conv"]["kernel"].shape == (3, 3, 8, 4)
      assert v["params"]["final"]["conv"]["kernel"].shape == (3, 3, 4, 3)

  def of_type(mode, t):
    return sorted(name for typ, name in called[mode] if typ == t)

  # Transposed convs: initial, 2 pyramid, 1 extra and final without upsampling; with it,
  # only the 1x1 -> 4x4 block and the stride-1 extra block remain transposed.
  assert of_type(None, "ConvTranspose") == ["extra_0", "final", "initial", "pyramid_0", "pyramid_1"]
  assert of_type(None, "Conv") == []
  for mode in ("nearest", "bilinear"):
    assert of_type(mode, "ConvTranspose") == ["extra_0", "initial"]
    assert of_type(mode, "Conv") == ["final", "pyramid_0", "pyramid_1"]

  for a, b in [(None, "nearest"), (None, "bilinear"), ("nearest", "bilinear")]:
    assert np.abs(outs[a] - outs[b]).max() > 1e-3, (a, b)


# ---------------------------------------------------------------- critic variants


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_critic_without_batchnorm_scores_examples_independently(norm):
  d = DCGANCritic(isize=16, nc=3, ndf=4, norm=norm)
  x = jax.random.normal(KEY, (3, 16, 16, 3))
  v = abstract_init(d, x)
  assert set(v) == {"params"}
  v = fake_init(d, x)
  # No mutable state needed in train mode.
  y = apply(d, v, x, train=True)
  assert y.shape == (3,)
  # WGAN-GP's per-example gradient penalty needs score 0 to ignore examples 1 and 2.
  grad = np.asarray(jax.jit(jax.grad(lambda xx: d.apply(v, xx)[0]))(x))
  assert np.abs(grad[1:]).max() == 0.0 and np.abs(grad[0]).max() > 0.0
  # Batch composition does not change a score.
  np.testing.assert_allclose(np.asarray(apply(d, v, x[:1])), np.asarray(y[:1]), rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_critic_bfloat16(norm):
  x = jax.random.normal(KEY, (4, 32, 32, 3))
  d32 = DCGANCritic(isize=32, nc=3, ndf=8, norm=norm)
  d16 = DCGANCritic(isize=32, nc=3, ndf=8, norm=norm, dtype=jnp.bfloat16)
  abstract = abstract_init(d16, x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(abstract))
  v = fake_init(d16, x)
  y16, upd = apply(d16, v, x, mutable=["batch_stats"])
  y32, _ = apply(d32, v, x, mutable=["batch_stats"])
  assert y16.dtype == jnp.float32 and y16.shape == (4,)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(upd))
  assert np.all(np.isfinite(np.asarray(y16)))
  # bf16 keeps ~3 significant digits; the scores must still agree to that order.
  y16, y32 = np.asarray(y16), np.asarray(y32)
  assert np.abs(y32).max() > 0
  np.testing.assert_allclose(y16, y32, atol=0.05 * np.abs(y32).max())
  # Genuinely computed in bf16, not silently in float32.
  assert not np.array_equal(y16, y32)


def test_generator_bfloat16_outputs_float32():
  g16 = DCGANGenerator(isize=16, nz=8, nc=3, ngf=4, dtype=jnp.bfloat16)
  g32 = DCGANGenerator(isize=16, nz=8, nc=3, ngf=4)
  z = jax.random.normal(KEY, (2, 8))
  v = fake_init(g16, z)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(v))
  y, _ = apply(g16, v, z, mutable=["batch_stats"])
  y32, _ = apply(g32, v, z, mutable=["batch_stats"])
  assert y.dtype == jnp.float32 and y.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(y), np.asarray(y32), atol=0.05 * float(jnp.abs(y32).max()))
