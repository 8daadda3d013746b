import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.models import Darknet, WideResNet, wrn_22
from jaxgan.models import count_params
from jaxgan.models.darknet import WideBasicBlock


def init_shapes(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))


def conv_bn(ci, co, k):
  return ci * co * k * k + 2 * co  # conv without bias + BN scale and bias


def darknet_count(num_blocks, nf, num_classes=10, in_ch=3, ratio=0.5):
  total = conv_bn(in_ch, nf, 3)
  for nb in num_blocks:
    total += conv_bn(nf, 2 * nf, 3)
    nf *= 2
    mid = max(1, int(nf * ratio))
    total += nb * (conv_bn(nf, mid, 1) + conv_bn(mid, nf, 3))
  return total + nf * num_classes + num_classes


def test_parameter_count_equals_pytorch():
  assert count_params(init_shapes(Darknet(), (1, 32, 32, 3))["params"]) == 31_410_922
  assert count_params(init_shapes(Darknet(nf=16), (1, 32, 32, 3))["params"]) == 7_862_138
  assert darknet_count((1, 2, 4, 6, 3), 32) == 31_410_922  # the formula agrees with the lesson's count


def test_wide_knobs_change_the_count_as_the_formula_says():
  m = Darknet(num_blocks=(2, 2), nf=8, bottleneck=2.0, num_classes=7)
  got = count_params(init_shapes(m, (1, 32, 32, 3))["params"])
  assert got == darknet_count((2, 2), 8, num_classes=7, ratio=2.0)


def test_wrn_22_count():
  def bn(c):
    return 2 * c
  total, ni = 3 * 3 * 3 * 16, 16
  for i in range(3):
    w = 16 * 2**i * 6
    for j in range(3):
      stride = 2 if i > 0 and j == 0 else 1
      total += bn(ni) + ni * w * 9 + bn(w) + w * w * 9
      if ni != w or stride != 1:
        total += ni * w
      ni = w
  total += bn(ni) + ni * 10 + 10
  assert count_params(init_shapes(wrn_22(), (1, 32, 32, 3))["params"]) == total == 9_658_458


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_adaptive_pooling_takes_any_size(size, channels):
  model = Darknet(num_blocks=(1, 1, 1), nf=4)
  x = jnp.ones((2, size, size, channels))
  variables = model.init(jax.random.PRNGKey(0), x)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  # Strides: 1 (stem), 2, 1, 2: the final grid is size/4, pooled to one vector.
  feats = init_shapes(Darknet(num_blocks=(1, 1, 1), nf=4), (2, size, size, channels))
  assert feats["params"]["Dense_0"]["kernel"].shape == (32, 10)


def test_block_order_and_batchnorm_conventions():
  model = Darknet(num_blocks=(1,), nf=4)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert "bias" not in variables["params"]["ConvLayer_0"]["Conv_0"]  # conv has no bias
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  before = variables["batch_stats"]["ConvLayer_0"]["BatchNorm_0"]["mean"]
  after = updates["batch_stats"]["ConvLayer_0"]["BatchNorm_0"]["mean"]
  # PyTorch momentum 0.01: running = 0.99 running + 0.01 batch mean (from 0).
  conv_out = jax.lax.conv_general_dilated(
      x, variables["params"]["ConvLayer_0"]["Conv_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(after, 0.99 * before + 0.01 * conv_out.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  # LeakyReLU(0.1) after BN: negative outputs exist and are a tenth of the BN output.
  y = model.apply(variables, x, train=False)
  assert y.shape == (8, 10)


def test_bf16_compute_keeps_fp32_params():
  model = Darknet(num_blocks=(1,), nf=4, dtype=jnp.bfloat16)
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert model.apply(variables, x).dtype == jnp.float32


def test_wide_resnet_shapes():
  model = WideResNet(num_groups=2, blocks_per_group=1, k=1, start_nf=4)
  x = jnp.ones((2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(0), x)
  assert model.apply(variables, x).shape == (2, 10)


def _conv(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride,) * 2, ((pad, pad),) * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bn(x, params, stats):
  return (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * params["scale"] + params["bias"]


@pytest.mark.parametrize("features,stride", [(4, 1), (6, 2)])
def test_wide_block_scales_the_residual_branch_by_0_2(features, stride):
  block = WideBasicBlock(features, stride)
  assert block.residual_scale == 0.2  # fastai's BasicBlock: conv2(x) * 0.2, then add
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  variables = block.init(jax.random.PRNGKey(1), x, train=False)
  # Random BatchNorm statistics and affine terms, so every term of the sum matters.
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  leaves = [v + 0.3 * jnp.abs(jax.random.normal(k, v.shape)) for v, k in zip(leaves, keys)]
  variables = jax.tree.unflatten(tree, leaves)
  p, s = variables["params"], variables["batch_stats"]

  activated = jax.nn.relu(_bn(x, p["BatchNorm_0"], s["BatchNorm_0"]))
  if "Conv_2" in p:  # width or stride changes: 1×1 conv shortcut, created first
    shortcut = _conv(activated, p["Conv_0"]["kernel"], stride, 0)
    c1, c2 = p["Conv_1"]["kernel"], p["Conv_2"]["kernel"]
  else:  # fastai's noop shortcut: the activated input, not the raw one
    shortcut = activated
    c1, c2 = p["Conv_0"]["kernel"], p["Conv_1"]["kernel"]
  y = jax.nn.relu(_bn(_conv(activated, c1, stride, 1), p["BatchNorm_1"], s["BatchNorm_1"]))
  branch = _conv(y, c2, 1, 1)
  assert ("Conv_2" in p) == (features != 4 or stride != 1)

  got = block.apply(variables, x, train=False)
  np.testing.assert_allclose(got, shortcut + 0.2 * branch, rtol=1e-5, atol=1e-5)
  plain = WideBasicBlock(features, stride, residual_scale=1.0).apply(variables, x, train=False)
  np.testing.assert_allclose(plain, shortcut + branch, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got, plain, atol=1e-3)  # the scale is not a no-op


def test_wide_block_identity_shortcut_carries_the_activated_input_as_fastai_does():
  # Hand-set weights: BatchNorm the identity, both 3x3 convs zero, so the residual branch
  # is 0 and the block returns its shortcut. fastai's BasicBlock adds x2 = relu(bn(x)):
  # here relu(x). Adding the raw x instead would return x, negatives included.
  block = WideBasicBlock(4, 1)
  x = jnp.arange(-8.0, 8.0).reshape(1, 2, 2, 4)
  variables = block.init(jax.random.PRNGKey(0), x, train=False)
  assert set(variables["params"]) == {"BatchNorm_0", "BatchNorm_1", "Conv_0", "Conv_1"}
  zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  params = {**variables["params"], "Conv_0": zero(variables["params"]["Conv_0"]),
            "Conv_1": zero(variables["params"]["Conv_1"])}
  stats = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  stats = {name: {"mean": s["mean"], "var": s["var"] + 1 - 1e-5} for name, s in stats.items()}
  got = block.apply({"params": params, "batch_stats": stats}, x, train=False)
  np.testing.assert_allclose(got, jax.nn.relu(x), rtol=1e-6, atol=1e-6)
  assert np.any(np.asarray(got) != np.asarray(x))  # the raw input would be told apart
