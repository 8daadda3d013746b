"""jaxgan.models.layers.BatchNorm: Flax's BatchNorm in every value, with a hand-derived
backward pass (``batch_norm_train``) in training mode on the CPU."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import layers

EPS32 = float(np.finfo(np.float32).eps)
BF16_SPACING = 2.0**-7  # relative gap between neighbouring bf16 numbers (8 significant bits)
SHAPE = (8, 5, 5, 16)  # n = 200 values per channel


def _scale_init(key, shape, dtype=jnp.float32):
  return 1.0 + 0.3 * jax.random.normal(key, shape, dtype)  # far from 1: scale matters


def _modules(fast_variance: bool, dtype, train: bool = True):
  kw = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5,
            use_fast_variance=fast_variance, dtype=dtype, scale_init=_scale_init,
            bias_init=nn.initializers.normal(0.5))
  return nn.BatchNorm(**kw), layers.BatchNorm(**kw)


def _inputs(dtype):
  kx, kc = jax.random.split(jax.random.key(0))
  # A large mean, as after a ReLU: where the two-pass variance matters.
  x = jax.random.normal(kx, SHAPE) * 3.0 + 5.0
  return x.astype(dtype), jax.random.normal(kc, SHAPE)


def _train_step(module, variables, x, ct):
  """Output, new running statistics and gradients (params, input) of <y, ct>."""
  def loss(params, x):
    y, updates = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                              mutable=["batch_stats"])
    return jnp.sum(y.astype(jnp.float32) * ct), (y, updates["batch_stats"])

  grads, (y, stats) = jax.grad(loss, argnums=(0, 1), has_aux=True)(variables["params"], x)
  return y, stats, grads


def _dx_parts(x, scale, ct):
  """scale/sigma (|ct| + mean|ct| + |x_hat| mean|ct x_hat|): the sizes of dx's three terms.

  dx = scale/sigma (ct - mean(ct) - x_hat mean(ct x_hat)). Autodiff and the closed form
  round the means' sums of n terms (each off by at most n eps mean|terms|) and the
  elementwise steps (a few eps of these parts). Autodiff of a bf16 input also rounds each
  term's contribution to bf16 before adding them up.
  """
  x = x.astype(jnp.float32)
  n = x.size // x.shape[-1]
  mean = x.mean((0, 1, 2))
  sigma = jnp.sqrt(((x - mean) ** 2).mean((0, 1, 2)) + 1e-5)
  x_hat = (x - mean) / sigma
  parts = jnp.abs(ct) + jnp.abs(ct).mean((0, 1, 2)) + jnp.abs(x_hat) * jnp.abs(
      ct * x_hat).mean((0, 1, 2))
  return jnp.abs(scale) / sigma * parts


@pytest.mark.parametrize("fast_variance", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_equals_flax_batch_norm(fast_variance, dtype):
  flax_bn, ours = _modules(fast_variance, dtype)
  x, ct = _inputs(dtype)
  variables = flax_bn.init(jax.random.key(1), x)
  # Same parameters and statistics (initialisation runs Flax's own code in both).
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), variables,
                                   ours.init(jax.random.key(1), x)))
  want_y, want_stats, (want_dp, want_dx) = jax.jit(
      lambda v: _train_step(flax_bn, v, x, ct))(variables)
  y, stats, (dp, dx) = jax.jit(lambda v: _train_step(ours, v, x, ct))(variables)
  # The forward pass is Flax's arithmetic, op for op.
  assert y.dtype == want_y.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(want_y, np.float32))
  jax.tree.map(np.testing.assert_array_equal, stats, want_stats)
  # Gradients: the same sums in another order (then rounded to bf16 for a bf16 input).
  parts = _dx_parts(x, variables["params"]["scale"], ct)
  n = x.size // x.shape[-1]
  bound = 4 * (n + 8) * EPS32 * parts
  if dtype == jnp.bfloat16:  # each of autodiff's three terms rounded, then both results
    bound = bound + BF16_SPACING * (parts + jnp.abs(want_dx.astype(jnp.float32)))
  err = jnp.abs(dx.astype(jnp.float32) - want_dx.astype(jnp.float32))
  assert dx.dtype == dtype and bool(jnp.all(err <= bound)), float(jnp.max(err / bound))
  x_hat_ct = jnp.abs(ct) * (jnp.abs(x.astype(jnp.float32) - x.astype(jnp.float32).mean(
      (0, 1, 2))) / jnp.sqrt(x.astype(jnp.float32).var((0, 1, 2)) + 1e-5))
  for name, terms in (("bias", jnp.abs(ct)), ("scale", x_hat_ct)):
    tol = 4 * (n + 8) * EPS32 * terms.sum((0, 1, 2))
    assert bool(jnp.all(jnp.abs(dp[name] - want_dp[name]) <= tol)), name


def test_evaluation_mode_is_flax():
  flax_bn, ours = _modules(False, jnp.float32, train=False)
  x, _ = _inputs(jnp.float32)
  variables = flax_bn.init(jax.random.key(1), x)
  variables = {"params": variables["params"],
               "batch_stats": {"mean": jnp.arange(16.0), "var": jnp.linspace(0.5, 2.0, 16)}}
  np.testing.assert_array_equal(
      ours.apply(variables, x), flax_bn.apply(variables, x))


def test_training_on_cpu_takes_the_hand_written_backward():
  _, ours = _modules(False, jnp.float32)
  x, _ = _inputs(jnp.float32)
  variables = ours.init(jax.random.key(1), x)
  jaxpr = jax.make_jaxpr(lambda v: ours.apply(v, x, mutable=["batch_stats"]))(variables)
  used = "custom_vjp_call" in str(jaxpr)
  assert used == (jax.default_backend() == "cpu")


@pytest.mark.parametrize("fast_variance", [False, True])
def test_statistics_outputs_have_exact_gradients(fast_variance):
  """Cotangents on the batch mean and variance (zero in training) are honoured too."""
  x, ct = _inputs(jnp.float32)
  scale, bias = jnp.linspace(0.5, 1.5, 16), jnp.linspace(-1.0, 1.0, 16)
  cts = (ct, jnp.linspace(-2.0, 2.0, 16), jnp.linspace(1.0, 3.0, 16))
  args = (1e-5, fast_variance, jnp.float32)
  plain = lambda x, s, b: layers._batch_norm_train_fwd(x, s, b, *args)[0]
  custom = lambda x, s, b: layers.batch_norm_train(x, s, b, *args)
  want = jax.vjp(plain, x, scale, bias)[1](cts)
  got = jax.vjp(custom, x, scale, bias)[1](cts)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=0, atol=float(1e3 * EPS32 * jnp.max(jnp.abs(w))))


@pytest.mark.parametrize("fast_variance", [False, True])
def test_second_derivatives_equal_autodiffs(fast_variance):
  x, _ = _inputs(jnp.float32)
  x = x[:2, :3, :3, :4]
  scale, bias = jnp.linspace(0.5, 1.5, 4), jnp.zeros(4)
  args = (1e-5, fast_variance, jnp.float32)

  def curvature(norm):
    loss = lambda x: jnp.sum(jnp.sin(norm(x, scale, bias)[0]))
    return jax.grad(lambda x: jnp.sum(jax.grad(loss)(x) ** 2))(x)

  want = curvature(lambda *a: layers._batch_norm_train_fwd(*a, *args)[0])
  got = curvature(lambda *a: layers.batch_norm_train(*a, *args))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(want))))


def test_bias_gradient_keeps_the_bias_dtype():
  x, ct = _inputs(jnp.float32)
  scale, bias = jnp.ones(16, jnp.bfloat16), jnp.zeros(16, jnp.float32)
  norm = lambda x, s, b: layers.batch_norm_train(x, s, b, 1e-5, False, jnp.float32)[0]
  _, dscale, dbias = jax.vjp(norm, x, scale, bias)[1](ct)
  assert dscale.dtype == jnp.bfloat16 and dbias.dtype == jnp.float32


def test_only_real_floats_of_at_most_32_bits_take_the_custom_path():
  # Flax keeps float32 statistics only for these; float64 (x64 mode) and complex inputs
  # run Flax's own code.
  assert layers._at_most_32_bit_floats(jnp.float32, jnp.bfloat16, jnp.float16, None)
  for dtype in (np.float64, np.complex64, np.int32):
    assert not layers._at_most_32_bit_floats(jnp.float32, dtype)
