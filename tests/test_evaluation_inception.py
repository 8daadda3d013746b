"""Tests for the FID Inception: layout against pytorch-fid's, weight loading, layers, forward pass.

No real weights here: a synthetic state dict of random tensors in pytorch-fid's
layout (written out below from the PyTorch side, independently of the Flax
module) stands in for the converted ``pt_inception`` file.
"""

import importlib.util

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.evaluation import convert_inception, inception
from jaxgan.models import count_params


# ----------------------------------------------------------------------------- pytorch-fid layout

def pytorch_fid_layout():
  """{key: shape} of pytorch-fid's FIDInceptionV3 state dict, from its block definitions."""
  layout = {}

  def conv(name, cin, cout, k):
    kh, kw = (k, k) if isinstance(k, int) else k
    layout[f"{name}.conv.weight"] = (cout, cin, kh, kw)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      layout[f"{name}.bn.{leaf}"] = (cout,)

  conv("Conv2d_1a_3x3", 3, 32, 3)
  conv("Conv2d_2a_3x3", 32, 32, 3)
  conv("Conv2d_2b_3x3", 32, 64, 3)
  conv("Conv2d_3b_1x1", 64, 80, 1)
  conv("Conv2d_4a_3x3", 80, 192, 3)
  for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
    conv(f"{name}.branch1x1", cin, 64, 1)
    conv(f"{name}.branch5x5_1", cin, 48, 1)
    conv(f"{name}.branch5x5_2", 48, 64, 5)
    conv(f"{name}.branch3x3dbl_1", cin, 64, 1)
    conv(f"{name}.branch3x3dbl_2", 64, 96, 3)
    conv(f"{name}.branch3x3dbl_3", 96, 96, 3)
    conv(f"{name}.branch_pool", cin, pool, 1)
  conv("Mixed_6a.branch3x3", 288, 384, 3)
  conv("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
  conv("Mixed_6a.branch3x3dbl_2", 64, 96, 3)
  conv("Mixed_6a.branch3x3dbl_3", 96, 96, 3)
  for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
    conv(f"{name}.branch1x1", 768, 192, 1)
    conv(f"{name}.branch7x7_1", 768, c7, 1)
    conv(f"{name}.branch7x7_2", c7, c7, (1, 7))
    conv(f"{name}.branch7x7_3", c7, 192, (7, 1))
    conv(f"{name}.branch7x7dbl_1", 768, c7, 1)
    conv(f"{name}.branch7x7dbl_2", c7, c7, (7, 1))
    conv(f"{name}.branch7x7dbl_3", c7, c7, (1, 7))
    conv(f"{name}.branch7x7dbl_4", c7, c7, (7, 1))
    conv(f"{name}.branch7x7dbl_5", c7, 192, (1, 7))
    conv(f"{name}.branch_pool", 768, 192, 1)
  conv("Mixed_7a.branch3x3_1", 768, 192, 1)
  conv("Mixed_7a.branch3x3_2", 192, 320, 3)
  conv("Mixed_7a.branch7x7x3_1", 768, 192, 1)
  conv("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7))
  conv("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1))
  conv("Mixed_7a.branch7x7x3_4", 192, 192, 3)
  for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
    conv(f"{name}.branch1x1", cin, 320, 1)
    conv(f"{name}.branch3x3_1", cin, 384, 1)
    conv(f"{name}.branch3x3_2a", 384, 384, (1, 3))
    conv(f"{name}.branch3x3_2b", 384, 384, (3, 1))
    conv(f"{name}.branch3x3dbl_1", cin, 448, 1)
    conv(f"{name}.branch3x3dbl_2", 448, 384, 3)
    conv(f"{name}.branch3x3dbl_3a", 384, 384, (1, 3))
    conv(f"{name}.branch3x3dbl_3b", 384, 384, (3, 1))
    conv(f"{name}.branch_pool", cin, 192, 1)
  layout["fc.weight"] = (1008, 2048)
  layout["fc.bias"] = (1008,)
  return layout


def is_running_stat(key):
  return key.endswith(("running_mean", "running_var"))


def test_parameter_count_agrees_with_the_pytorch_fid_layout():
  layout = pytorch_fid_layout()
  assert inception.torch_layout() == layout  # same keys, same PyTorch shapes
  pytorch_count = sum(int(np.prod(s)) for k, s in layout.items() if not is_running_stat(k))
  stats_count = sum(int(np.prod(s)) for k, s in layout.items() if is_running_stat(k))
  shapes = jax.eval_shape(inception.FIDInceptionV3().init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert count_params(shapes["params"]) == pytorch_count == inception.NUM_PARAMS == 23_850_960
  assert count_params(shapes["batch_stats"]) == stats_count == inception.NUM_BATCH_STATS
  # torchvision's InceptionV3 without AuxLogits at 1000 classes, plus 8 more fc rows.
  assert pytorch_count == 23_834_568 + 8 * 2048 + 8


# ----------------------------------------------------------------------------- loading

@pytest.fixture(scope="module")
def state_dict():
  """Random tensors in pytorch-fid's layout, scaled so activations stay O(1) through 94 layers."""
  rng = np.random.default_rng(0)
  sd = {}
  for key, shape in pytorch_fid_layout().items():
    if key.endswith("conv.weight"):
      fan_in = np.prod(shape[1:])
      sd[key] = rng.standard_normal(shape, np.float32) * np.float32(np.sqrt(2 / fan_in))
    elif key.endswith(("running_var", "bn.weight")):
      sd[key] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif key == "fc.weight":
      sd[key] = rng.standard_normal(shape, np.float32) * np.float32(0.02)
    else:
      sd[key] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    if key.endswith("running_var"):  # PyTorch files carry this counter; the converter drops it
      sd[key.replace("running_var", "num_batches_tracked")] = np.array(0, np.int64)
  return sd


@pytest.fixture(scope="module")
def variables(state_dict, tmp_path_factory):
  path = tmp_path_factory.mktemp("weights") / "fid_inception.npz"
  convert_inception.save_npz(convert_inception.convert_state_dict(state_dict), path)
  with np.load(path) as data:
    assert set(data.files) == set(pytorch_fid_layout())  # counters gone, nothing else
  return inception.load_inception_params(path)


def test_loader_puts_every_tensor_in_its_place(state_dict, variables):
  params, stats = variables["params"], variables["batch_stats"]
  # A 1×7 conv: PyTorch (out, in, kh=1, kw=7) lands as Flax (kh=1, kw=7, in, out).
  w = state_dict["Mixed_6b.branch7x7_2.conv.weight"]
  kernel = params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
  assert kernel.shape == (1, 7, 128, 128)
  assert kernel[0, 5, 7, 11] == w[11, 7, 0, 5] and kernel[0, 2, 100, 3] == w[3, 100, 0, 2]
  w = state_dict["Conv2d_1a_3x3.conv.weight"]
  assert params["Conv2d_1a_3x3"]["conv"]["kernel"][2, 0, 1, 30] == w[30, 1, 2, 0]
  bn = "Mixed_7c.branch_pool.bn."
  np.testing.assert_array_equal(stats["Mixed_7c"]["branch_pool"]["bn"]["mean"],
                                state_dict[bn + "running_mean"])
  np.testing.assert_array_equal(stats["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                state_dict[bn + "running_var"])
  np.testing.assert_array_equal(params["Mixed_7c"]["branch_pool"]["bn"]["scale"],
                                state_dict[bn + "weight"])
  np.testing.assert_array_equal(params["Mixed_7c"]["branch_pool"]["bn"]["bias"],
                                state_dict[bn + "bias"])
  assert params["fc"]["kernel"][3, 5] == state_dict["fc.weight"][5, 3]
  np.testing.assert_array_equal(params["fc"]["bias"], state_dict["fc.bias"])
  flat = flax.traverse_util.flatten_dict(variables)
  assert {inception.torch_key(p) for p in flat} == set(pytorch_fid_layout())


def test_loader_names_missing_unused_and_misshapen_tensors(state_dict):
  bad = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  del bad["Mixed_5b.branch1x1.conv.weight"]
  bad["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  bad["fc.bias"] = np.zeros(1000, np.float32)
  with pytest.raises(ValueError) as e:
    inception.variables_from_state_dict(bad)
  message = str(e.value)
  assert "1 missing: Mixed_5b.branch1x1.conv.weight" in message
  assert "1 unused: AuxLogits.fc.weight" in message
  assert "fc.bias: (1000,), expected (1008,)" in message


def test_missing_weights_file_says_how_to_make_it(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    inception.load_inception_params(tmp_path / "fid_inception.npz")
  assert inception.WEIGHTS_FILE in str(e.value)
  assert "python -m jaxgan.evaluation.convert_inception --input" in str(e.value)


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch installed")
def test_conversion_command_without_torch_says_so(tmp_path):
  with pytest.raises(SystemExit, match="needs torch"):
    convert_inception.main(["--input", "x.pth", "--output", str(tmp_path / "out.npz")])


# ----------------------------------------------------------------------------- layers

def test_resize_is_pytorch_bilinear_without_antialiasing():
  # Hand values of F.interpolate(mode='bilinear', align_corners=False) along one axis.
  np.testing.assert_allclose(inception._bilinear_matrix(2, 4) @ [0.0, 1.0],
                             [0.0, 0.25, 0.75, 1.0], atol=1e-7)
  np.testing.assert_allclose(inception._bilinear_matrix(4, 2) @ [0.0, 1.0, 2.0, 3.0],
                             [0.5, 2.5], atol=1e-7)  # antialiasing would give 0.667, 2.333
  x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 24, 3))
  want = jax.image.resize(x, (1, 299, 299, 3), "linear", antialias=False)
  # jax places its samples in float32: positions up to 32 carry ~32·eps of error, and the
  # weights move with them (values in [0, 1]).
  np.testing.assert_allclose(inception.resize_bilinear(x), want,
                             atol=2 * 32 * np.finfo(np.float32).eps)
  assert inception.resize_bilinear(jnp.zeros((1, 299, 299, 3))).shape == (1, 299, 299, 3)


def test_pools_count_only_valid_pixels_and_pad_max_with_minus_infinity():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  avg = inception.avg_pool_3x3_valid_only(x)[0, :, :, 0]
  assert avg[0, 0] == (0 + 1 + 4 + 5) / 4  # corner: 4 valid pixels, not 9
  assert avg[1, 1] == (0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9
  biggest = inception.max_pool_3x3(-1.0 - x)[0, :, :, 0]
  assert biggest[0, 0] == -1.0  # zero padding would have won with 0
  assert inception.max_pool_3x3_stride2(jnp.zeros((1, 35, 35, 1))).shape == (1, 17, 17, 1)


def test_basic_conv_is_pytorch_conv_batchnorm_relu():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 5, 9, 3)).astype(np.float32)
  w = rng.standard_normal((4, 3, 1, 7)).astype(np.float32)  # PyTorch (out, in, kh, kw)
  gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
  mean, var = rng.standard_normal(4), rng.uniform(0.01, 0.1, 4)  # small var: eps matters
  layer = inception.BasicConv2d(4, (1, 7), padding=(0, 3))
  variables = {"params": {"conv": {"kernel": w.transpose(2, 3, 1, 0)},
                          "bn": {"scale": gamma, "bias": beta}},
               "batch_stats": {"bn": {"mean": mean, "var": var}}}
  got = layer.apply(variables, x)
  # Direct cross-correlation with PyTorch's padding=(0, 3): rows unpadded, columns by 3.
  xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (3, 3), (0, 0)))
  conv = sum(np.einsum("nhwi,oi->nhwo", xp[:, :, kx:kx + 9], w[:, :, 0, kx]) for kx in range(7))
  want = np.maximum((conv - mean) / np.sqrt(var + 1e-3) * gamma + beta, 0)
  # float32 sums of 21 products of O(1) terms at HIGHEST precision.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- forward pass

def test_extractor_shapes_order_and_grayscale(variables):
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
  images[2] = images[0]  # lands in the padded second batch: order and slicing must hold
  extract = inception.inception_extractor(variables=variables, batch_size=2)
  features, probs = extract(images)
  assert features.shape == (3, 2048) and probs.shape == (3, 1008)
  assert np.isfinite(features).all() and (features >= 0).all()  # means of ReLU outputs
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  # Same image in another batch slot: float32 results agree to rounding.
  np.testing.assert_allclose(features[2], features[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(features[1], features[0], rtol=1e-3)
  with pytest.raises(ValueError, match="uint8"):
    extract(images.astype(np.float32))
