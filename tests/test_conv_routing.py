"""jaxgan.ops: each formulation equals lax's convolution, values and gradients; the router
picks one only for what XLA:CPU runs badly; the routed Flax layers keep Flax's parameters."""

import contextlib
import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxgan import ops
from jaxgan.models import layers

DN = ("NHWC", "HWIO", "NHWC")
EPS = float(np.finfo(np.float32).eps)

# (input NHWC, kernel HWIO, strides, padding, lhs_dilation): what the models and the
# router's edge cases use. lhs_dilation is how Flax's ConvTranspose reaches lax.
CASES = {
    "3x3_same": ((2, 5, 6, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1)), None),
    "3x3_s2_asym": ((2, 5, 6, 3), (3, 3, 3, 4), (2, 1), ((1, 2), (0, 1)), None),
    "3x3_on_2x2": ((3, 2, 2, 3), (3, 3, 3, 5), (1, 1), ((1, 1), (1, 1)), None),
    "4x4_s2_c1": ((2, 8, 8, 1), (4, 4, 1, 4), (2, 2), ((1, 1), (1, 1)), None),
    "4x4_valid_head": ((2, 4, 4, 3), (4, 4, 3, 1), (1, 1), "VALID", None),
    # The window covers the padded input (one output pixel): patches are a reshape.
    "5x5_head_padded_s2": ((2, 3, 3, 3), (5, 5, 3, 2), (2, 2), ((1, 1), (1, 1)), None),
    "1x1": ((2, 3, 3, 6), (1, 1, 6, 5), (1, 1), "VALID", None),
    "1x1_s2": ((2, 5, 5, 3), (1, 1, 3, 2), (2, 2), ((0, 0), (0, 0)), None),
    "7x7_valid": ((1, 9, 8, 3), (7, 7, 3, 2), (1, 1), "VALID", None),
    "3x3_same_str": ((2, 7, 7, 3), (3, 3, 3, 2), (2, 2), "SAME", None),
    "negative_pad": ((2, 7, 7, 3), (3, 3, 3, 2), (1, 1), ((-1, 2), (0, -1)), None),
    "convT_k4s2p1": ((2, 4, 4, 3), (4, 4, 3, 2), (1, 1), ((2, 2), (2, 2)), (2, 2)),
    "convT_k3s2_outpad": ((2, 4, 4, 3), (3, 3, 3, 2), (1, 1), ((1, 2), (1, 2)), (2, 2)),
    "convT_s3_asym": ((2, 3, 3, 3), (4, 4, 3, 2), (1, 1), ((1, 0), (3, 2)), (3, 3)),
    "convT_1x1_s2": ((2, 3, 3, 3), (1, 1, 3, 2), (1, 1), ((0, 0), (0, 0)), (2, 2)),
    "convT_1x1_to_4x4": ((2, 1, 1, 6), (4, 4, 6, 3), (1, 1), ((3, 3), (3, 3)), None),
    # 16 input channels: compiled with XLA's defaults, canonical's kernel gradient runs as
    # ops.kernel_gradient_taps ('canonical_taps').
    "3x3_wide": ((2, 5, 6, 16), (3, 3, 16, 4), (1, 1), ((1, 1), (1, 1)), None),
    "4x4_s2_wide_asym": ((2, 7, 6, 16), (4, 4, 16, 3), (2, 1), ((1, 2), (-1, 1)), None),
}


def _canonical(x, w, strides, padding, ldil):
  pads = ops._explicit_padding(padding, x.shape[1:-1], w.shape[:2], strides, (1, 1))
  return ops.conv_canonical(x, w, (strides, pads, ldil or (1, 1), (1, 1), None))


FORMULATIONS = {
    "canonical": _canonical,
    "patches": lambda x, w, strides, padding, ldil: ops.conv_patches(x, w, strides, padding,
                                                                     ldil),
    "phases": lambda x, w, strides, padding, ldil: ops.conv_phases(x, w, padding, ldil),
    "subpixel": lambda x, w, strides, padding, ldil: ops.conv_subpixel(x, w, padding, ldil),
    "padded": lambda x, w, strides, padding, ldil: ops.conv_padded_channels(
        x, w, strides, padding, ldil),
}
# Phases need a dilated input (a transposed conv) at stride 1; the taps, wide inputs.
PAIRS = ([(name, f) for name in sorted(CASES) for f in FORMULATIONS
          if f in ("canonical", "patches", "padded") or CASES[name][4] is not None]
         + [(name, "canonical_taps") for name in sorted(CASES) if "wide" in name])


def _value_and_grads(conv, x, w, ct):
  y, vjp = jax.vjp(conv, x, w)
  return (y, *vjp(ct))


@pytest.mark.parametrize("name,formulation", PAIRS)
def test_formulation_equals_lax_values_and_gradients(name, formulation):
  xs, ws, strides, padding, ldil = CASES[name]
  kx, kw, kc = jax.random.split(jax.random.key(zlib.crc32(name.encode())), 3)
  x, w = jax.random.normal(kx, xs), jax.random.normal(kw, ws)
  ref = lambda x, w: lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=ldil,
                                              dimension_numbers=DN)
  new = lambda x, w: FORMULATIONS[formulation.removesuffix("_taps")](x, w, strides, padding,
                                                                     ldil)
  y_shape = jax.eval_shape(ref, x, w).shape
  ct = jax.random.normal(kc, y_shape)
  # jit: op by op, each distinct slice and pad would compile on its own.
  reference = jax.jit(functools.partial(_value_and_grads, ref))
  want = reference(x, w, ct)
  # The taps serve steps compiled without jaxgan's options (read when the gradient traces).
  with ops.xla_defaults() if formulation == "canonical_taps" else contextlib.nullcontext():
    got = jax.jit(functools.partial(_value_and_grads, new))(x, w, ct)
  # Every result is a sum of products, rounded by both sides: |error| <= 2 n eps sum|terms|,
  # n its length (output: taps*C_in; input grad: taps*C_out; kernel grad: N*pixels), the
  # sums of |terms| being the same maps applied to |x|, |w|, |ct|.
  abs_terms = reference(jnp.abs(x), jnp.abs(w), jnp.abs(ct))
  taps = ws[0] * ws[1]
  lengths = (taps * ws[2], taps * ws[3], y_shape[0] * y_shape[1] * y_shape[2])
  for g, want_, terms, n in zip(got, want, abs_terms, lengths):
    assert g.shape == want_.shape and g.dtype == want_.dtype
    tol = 2 * n * EPS * terms + np.finfo(np.float32).tiny
    assert bool(jnp.all(jnp.abs(g - want_) <= tol)), float(jnp.max(jnp.abs(g - want_) / tol))


@pytest.mark.parametrize("strides,padding,rdil", [
    ((1, 1), ((1, 1), (1, 1)), (1, 1)), ((2, 1), ((1, 2), (-1, 1)), (1, 1)),
    ((1, 1), ((2, 2), (2, 2)), (2, 2))])
def test_kernel_gradient_taps_equals_lax(strides, padding, rdil):
  kx, kw, kc = jax.random.split(jax.random.key(7), 3)
  x, w = jax.random.normal(kx, (2, 7, 6, 5)), jax.random.normal(kw, (3, 3, 5, 4))
  conv = lambda w: lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=rdil,
                                            dimension_numbers=DN)
  y, vjp = jax.vjp(conv, w)
  ct = jax.random.normal(kc, y.shape)
  want = vjp(ct)[0]
  got = ops.kernel_gradient_taps(x, ct, (3, 3), strides, padding, rdil)
  # Sums of N*pixels products on both sides (see the bound above).
  terms = jax.vjp(lambda w: lax.conv_general_dilated(jnp.abs(x), w, strides, padding,
                                                     rhs_dilation=rdil, dimension_numbers=DN),
                  w)[1](jnp.abs(ct))[0]
  assert got.shape == want.shape
  assert bool(jnp.all(jnp.abs(got - want) <= 2 * y.size / 4 * EPS * terms + 1e-30))


def test_kernel_gradient_is_taps_only_without_the_compiler_options():
  # With jaxgan's options XLA:CPU's own (Eigen) kernel gradient is the faster one; with
  # XLA's defaults (YNNPACK convs) the taps are: one dot per kernel tap.
  x, w = jnp.zeros((2, 8, 8, ops.TAPS_MIN_CHANNELS)), jnp.zeros((3, 3, ops.TAPS_MIN_CHANNELS, 4))
  geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1), (1, 1), None)

  def dots_in_kernel_gradient():
    grad = jax.grad(lambda w: jnp.sum(ops.conv_canonical(x, w, geometry)))
    # A new function each time: make_jaxpr would reuse an earlier trace.
    jaxpr = jax.make_jaxpr(lambda w: grad(w))(w)
    return sum(1 for _ in ops.jaxpr_equations(jaxpr.jaxpr, "dot_general"))

  with ops.xla_defaults():
    assert dots_in_kernel_gradient() == 9
  assert dots_in_kernel_gradient() == (0 if ops.compiler_options() else 9)
  if jax.default_backend() == "cpu":
    assert ops.compiler_options()


def _route(xs, ws, strides, padding, ldil=None, backend="cpu", **kw):
  return ops.route(xs, ws, strides, padding, ldil, None, DN, backend=backend, **kw)


def test_route_picks_patches_for_what_xla_cpu_runs_badly():
  same = ((1, 1), (1, 1))
  # Darknet's last group: a 3x3 window over a 2x2 map (XLA swaps input and kernel into a
  # layout with no Eigen kernel, forward and backward).
  assert _route((64, 2, 2, 512), (3, 3, 512, 1024), (1, 1), same) == "patches"
  # Wide convs to tiny maps (at most 16 pixels): 4x4, and stride 2 to 2x2. Patches only
  # where XLA gives convs to YNNPACK (its defaults); Eigen's convs, with jaxgan's compiler
  # options, run these whole steps faster as they are.
  tiny_maps = [((64, 4, 4, 256), (3, 3, 256, 512), (1, 1), same),
               ((64, 4, 4, 512), (3, 3, 512, 1024), (2, 2), same),
               ((64, 8, 8, 256), (4, 4, 256, 512), (2, 2), same)]
  with ops.xla_defaults():
    assert [_route(*conv) for conv in tiny_maps] == ["patches"] * 3
  if ops.compiler_options():
    assert [_route(*conv) for conv in tiny_maps] == ["canonical"] * 3
  # The critic's head: its 4x4 window covers the 4x4 input, so patches are one reshape.
  assert _route((64, 4, 4, 256), (4, 4, 256, 1), (1, 1), "VALID") == "patches"
  # ... and a strided one (a window of the whole input, which XLA does not swap).
  assert _route((64, 3, 3, 256), (3, 3, 256, 1), (2, 2), "VALID") == "patches"
  # A single-tap window is a plain matmul, which XLA:CPU runs faster than its 1x1 conv.
  assert _route((64, 8, 8, 256), (1, 1, 256, 128), (1, 1), "VALID") == "patches"


def test_route_splits_dilated_inputs_into_phases():
  # Transposed convs: one conv per phase, or all phases in one conv when the output is
  # narrow; lax would multiply the dilation's zeros, and swap its kernel gradient.
  up = ((1, 1), ((2, 2), (2, 2)), (2, 2))
  assert _route((64, 8, 8, 256), (4, 4, 256, 128), *up) == "phases"
  assert _route((64, 16, 16, 24), (4, 4, 24, 1), *up) == "subpixel"
  assert _route((1, 32, 32, 256), (3, 3, 256, 128), (1, 1), ((1, 2), (1, 2)), (2, 2)) == (
      "phases")
  # So is the input gradient of a stride-2 conv: the cotangent dilated by 2.
  assert _route((64, 8, 8, 256), (3, 3, 256, 128), (1, 1), ((1, 2), (1, 2)), (2, 2)) == (
      "phases")


def test_route_keeps_lax_convs_elsewhere():
  # On CPU, lax's own conv with channels-last gradient convs (see the scan test below).
  same = ((1, 1), (1, 1))
  assert _route((64, 32, 32, 3), (3, 3, 3, 32), (1, 1), same) == "canonical"
  assert _route((64, 16, 16, 64), (3, 3, 64, 128), (1, 1), same) == "canonical"
  assert _route((64, 8, 8, 128), (3, 3, 128, 256), (1, 1), same) == "canonical"
  # Tiny output maps stay convs when the contraction is short or the input is padding.
  assert _route((64, 8, 8, 48), (4, 4, 48, 96), (2, 2), same) == "canonical"
  assert _route((64, 1, 1, 100), (4, 4, 100, 512), (1, 1), ((3, 3), (3, 3))) == "canonical"
  assert _route((64, 32, 32, 1), (4, 4, 1, 24), (2, 2), same) == "canonical"
  # A huge swapped window stays a conv: its patches would cost more than the swap.
  assert _route((1, 8, 8, 4), (9, 9, 4, 4), (1, 1), ((4, 4), (4, 4))) == "canonical"
  bad = ((64, 2, 2, 512), (3, 3, 512, 1024), (1, 1), same)
  assert _route(*bad, backend="gpu") == "lax"
  assert _route((64, 16, 16, 64), (3, 3, 64, 128), (1, 1), same, backend="gpu") == "lax"
  assert _route(*bad, backend="tpu") == "lax"
  assert _route((1, 262, 262, 3), (7, 7, 3, 64), (1, 1), "VALID", backend="tpu") == "lax"
  assert _route(*bad, feature_group_count=2) == "lax"
  assert ops.route((64, 512, 2, 2), (1024, 512, 3, 3), (1, 1), same,
                   dimension_numbers=("NCHW", "OIHW", "NCHW"), backend="cpu") == "lax"


def test_route_pads_few_channels_to_eight_on_a_gpu():
  # CycleGAN's 7x7 convs from and to RGB, the DCGAN critic's first and the generator's
  # last conv: cuDNN's 16-bit tensor-core kernels want multiples of 8 channels.
  for backend in ("gpu", "cuda", "rocm"):
    assert _route((1, 262, 262, 3), (7, 7, 3, 64), (1, 1), "VALID", backend=backend) == (
        "padded")
  assert _route((1, 262, 262, 64), (7, 7, 64, 3), (1, 1), "VALID", backend="gpu") == "padded"
  up = ((1, 1), ((2, 2), (2, 2)), (2, 2))
  assert _route((64, 32, 32, 64), (4, 4, 64, 3), *up, backend="gpu") == "padded"
  assert _route((64, 28, 28, 1), (3, 3, 1, 32), (1, 1), "SAME", backend="gpu") == "padded"
  assert _route((64, 32, 32, 12), (3, 3, 12, 16), (1, 1), "SAME", backend="gpu") == "padded"
  assert _route((64, 32, 32, 6), (3, 3, 3, 24), (1, 1), "SAME", backend="gpu",
                feature_group_count=2) == "lax"
  assert ops.route((1, 3, 262, 262), (64, 3, 7, 7), (1, 1), "VALID",
                   dimension_numbers=("NCHW", "OIHW", "NCHW"), backend="gpu") == "lax"


def test_padded_conv_keeps_shapes_and_exact_sums():
  x = jnp.ones((2, 9, 9, 3))
  w = jnp.ones((7, 7, 3, 5))
  y = ops.conv_padded_channels(x, w, (1, 1), "VALID")
  assert y.shape == (2, 3, 3, 5)
  assert jax.grad(lambda w: jnp.sum(ops.conv_padded_channels(x, w, (1, 1), "VALID")))(
      w).shape == w.shape
  # Every sum is 7*7*3 ones: exact in fp32.
  assert bool(jnp.all(y == 147.0))


def test_force_overrides_the_rule_and_restores_it():
  args = ((64, 2, 2, 512), (3, 3, 512, 1024), (1, 1), ((1, 1), (1, 1)))
  with ops.force("lax"):
    assert _route(*args) == "lax"
  assert _route(*args) == "patches"
  with pytest.raises(ValueError):
    with ops.force("fft"):
      pass


@pytest.mark.parametrize("formulation", ["lax", "patches", "padded"])
def test_routed_conv_module_matches_flax_conv(formulation):
  x = jax.random.normal(jax.random.key(0), (2, 2, 2, 3))
  kw = dict(features=4, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
  variables = nn.Conv(**kw).init(jax.random.key(1), x)
  with ops.force(formulation):
    routed = layers.Conv(**kw)
    assert jax.tree.map(jnp.shape, routed.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, variables)
    np.testing.assert_allclose(routed.apply(variables, x), nn.Conv(**kw).apply(variables, x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formulation", ["lax", "patches", "padded"])
@pytest.mark.parametrize("kw", [
    dict(kernel_size=(4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True,
         use_bias=False),
    dict(kernel_size=(3, 3), strides=(2, 2), padding=((1, 2), (1, 2)), transpose_kernel=True),
    dict(kernel_size=(4, 4), strides=(1, 1), padding="VALID", transpose_kernel=True),
    dict(kernel_size=(3, 3), strides=(2, 2), padding="SAME"),
    dict(kernel_size=(4, 4), strides=(2, 2), padding="VALID", kernel_dilation=(1, 1)),
], ids=["dcgan", "cyclegan", "first_valid", "same", "valid"])
def test_routed_conv_transpose_matches_flax(formulation, kw):
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 3))
  ref = nn.ConvTranspose(features=2, **kw)
  variables = ref.init(jax.random.key(1), x)
  with ops.force(formulation):
    routed = layers.ConvTranspose(features=2, **kw)
    assert jax.tree.map(jnp.shape, routed.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, variables)
    np.testing.assert_allclose(routed.apply(variables, x), ref.apply(variables, x),
                               rtol=1e-5, atol=1e-5)


def test_routed_layers_keep_flax_auto_names():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.ConvTranspose(2, (3, 3), (2, 2))(layers.Conv(2, (3, 3))(x))

  params = Net().init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
  assert sorted(params) == ["ConvTranspose_0", "Conv_0"]


# Kernel gradient as a conv (3 channels; 16 with jaxgan's options) and as taps.
@pytest.mark.parametrize("channels,xla_defaults", [(3, False), (ops.TAPS_MIN_CHANNELS, False),
                                                   (ops.TAPS_MIN_CHANNELS, True)])
def test_canonical_second_derivative_equals_lax(channels, xla_defaults):
  # WGAN-GP differentiates a gradient norm: reverse over reverse through the conv.
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, channels))
  w = jax.random.normal(jax.random.key(1), (4, 4, channels, 5))
  pads = ((1, 1), (1, 1))
  ref = lambda x, w: lax.conv_general_dilated(x, w, (2, 2), pads, dimension_numbers=DN)
  new = lambda x, w: ops.conv_canonical(x, w, ((2, 2), pads, (1, 1), (1, 1), None))

  def penalty(conv, w):
    g = jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x)
    return jnp.sum(g ** 2)

  want = jax.jit(jax.grad(functools.partial(penalty, ref)))(w)
  with ops.xla_defaults() if xla_defaults else contextlib.nullcontext():
    got = jax.jit(jax.grad(functools.partial(penalty, new)))(w)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def _convs(closed_jaxpr):
  return ops.jaxpr_equations(closed_jaxpr.jaxpr, "conv_general_dilated")


def test_gradient_convs_inside_scan_are_channels_last():
  # XLA:CPU puts convs into Eigen's layout only outside loops; the routed conv emits its
  # gradient convs in that layout itself, so a scanned training step keeps Eigen's kernels.
  w = jnp.zeros((3, 3, 4, 8))

  def loss(w, x):
    y = ops.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)
    return jnp.sum(y ** 2)

  def steps(w, xs):
    return jax.lax.scan(lambda w, x: (w - jax.grad(loss)(w, x), None), w, xs)[0]

  jaxpr = jax.make_jaxpr(steps)(w, jnp.zeros((2, 5, 16, 16, 4)))
  specs = {(e.params["dimension_numbers"].lhs_spec, e.params["dimension_numbers"].rhs_spec,
            e.params["dimension_numbers"].out_spec) for e in _convs(jaxpr)}
  assert specs == {((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))}  # NHWC, HWIO, NHWC
  with ops.force("lax"):  # JAX's own gradient convs use other orders
    # A new function: make_jaxpr would reuse its trace of `steps` from above.
    jaxpr = jax.make_jaxpr(lambda w, xs: steps(w, xs))(w, jnp.zeros((2, 5, 16, 16, 4)))
  assert len({e.params["dimension_numbers"] for e in _convs(jaxpr)}) > 1


# ----------------------------------------------------------------------------- compiling

def _bn_step(x, w, scale):
  """A small conv -> BatchNorm -> LeakyReLU -> loss, with gradients: reductions, dots and
  elementwise fusions, the kinds the compiler options move between YNNPACK and XLA."""
  def loss(w, scale):
    y = ops.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DN)
    mean = y.mean((0, 1, 2))
    var = (y * y).mean((0, 1, 2)) - mean * mean
    y = (y - mean) * lax.rsqrt(var + 1e-5) * scale
    return jnp.mean(jnp.where(y > 0, y, 0.1 * y) ** 2)
  return jax.value_and_grad(loss, argnums=(0, 1))(w, scale)


def test_cpu_compiler_options_change_speed_not_results():
  assert ops.compiler_options() == (ops.CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu"
                                    else {})
  with ops.xla_defaults():
    assert ops.compiler_options() == {}
    defaults = ops.jit(_bn_step)
  tuned = ops.jit(_bn_step)
  rng = np.random.default_rng(0)
  args = (jnp.asarray(rng.normal(size=(8, 10, 10, 6)), jnp.float32),
          jnp.asarray(rng.normal(size=(3, 3, 6, 16)) * 0.2, jnp.float32),
          jnp.asarray(rng.uniform(0.5, 1.5, (16,)), jnp.float32))
  # Same arithmetic, summed in another order: fp32 rounding of sums over ~800 terms.
  for a, b in zip(jax.tree.leaves(defaults(*args)), jax.tree.leaves(tuned(*args))):
    np.testing.assert_allclose(a, b, rtol=1e3 * EPS, atol=1e3 * EPS * np.abs(a).max())


def test_an_xla_that_rejects_the_options_gets_none(monkeypatch):
  monkeypatch.setattr(ops, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": "1"})
  ops._cpu_options_accepted.cache_clear()
  try:
    assert ops.compiler_options() == {}
    assert float(ops.jit(lambda x: x + 1)(1.0)) == 2.0
  finally:
    monkeypatch.undo()
    ops._cpu_options_accepted.cache_clear()
