"""The PyTorch side of the benchmark: same networks as jaxgan's, steps that train.

torch is optional (never in requirements.txt), so without it these tests skip.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

# pylint: disable=wrong-import-position  (after the skip: the module imports torch)
from benchmarks import benchmark, torch_reference as ref
from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import models
from jaxgan.models import cyclegan as jax_cyclegan


def jax_count(model, *shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  return models.count_params(variables["params"])


@pytest.mark.parametrize("torch_net, jax_net, shape, expected", [
    (ref.Darknet(), models.Darknet(), (1, 32, 32, 3), 31_410_922),
    (ref.DCGAN_G(), models.DCGANGenerator(), (1, 100), 3_613_696),
    (ref.DCGAN_D(), models.DCGANCritic(), (1, 64, 64, 3), 2_802_560),
    (ref.ResnetGenerator(), jax_cyclegan.ResnetGenerator(), (1, 256, 256, 3), 11_378_179),
    (ref.NLayerDiscriminator(), jax_cyclegan.PatchDiscriminator(), (1, 256, 256, 3),
     2_764_737),
], ids=["darknet", "dcgan_g", "dcgan_d", "resnet_generator", "patchgan"])
def test_parameter_counts_equal_jaxgans(torch_net, jax_net, shape, expected):
  assert ref.count_params(torch_net) == expected
  assert jax_count(jax_net, *shape) == expected


def test_output_shapes_are_the_references():
  with torch.no_grad():
    assert ref.DCGAN_G()(torch.zeros(2, 100)).shape == (2, 3, 64, 64)
    assert ref.DCGAN_D()(torch.zeros(2, 3, 64, 64)).shape == (2,)
    assert ref.NLayerDiscriminator()(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert ref.ResnetGenerator(ngf=8, n_blocks=1)(torch.zeros(1, 3, 32, 32)).shape == (
        1, 3, 32, 32)


@pytest.mark.parametrize("mode", ["symmetric", "reflect", "constant"])
def test_padding_is_numpys(mode):
  images = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), np.uint8)
  got = ref._Images.pad(torch.from_numpy(images), 3, mode).numpy()  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, np.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)), mode))


def test_crops_are_windows_of_each_image():
  data = ref._Images(torch.arange(2 * 8 * 8).view(2, 8, 8, 1), "cpu", 0, True)  # pylint: disable=protected-access
  crops = data.crop(data.images, 5)
  for image, crop in zip(data.images, crops):
    y, x = divmod(int(crop[0, 0, 0]) % 64, 8)
    torch.testing.assert_close(crop, image[y:y + 5, x:x + 5])


def test_pool_returns_new_fakes_until_full_then_mixes_in_old_ones():
  pool = ref.ImagePool(2, seed=0)
  first = pool.query(torch.zeros(2, 1, 1, 1))
  assert torch.equal(first, torch.zeros(2, 1, 1, 1)) and len(pool.images) == 2
  returned = torch.cat([pool.query(torch.full((1, 1, 1, 1), float(i))) for i in range(1, 41)])
  old = returned.flatten() != torch.arange(1, 41, dtype=torch.float32)
  assert 5 < int(old.sum()) < 35  # about half come from the pool


@pytest.mark.parametrize("name, configs, images", [
    ("darknet", darknet_configs, 16), ("wgan", wgan_configs, 2 * 8),
    ("cyclegan", cyclegan_configs, 2)], ids=["darknet", "wgan", "cyclegan"])
def test_each_step_trains_on_the_smoke_config(name, configs, images):
  config = configs.get_config("smoke")
  step, images_per_step = ref.STEPS[name](config)
  assert images_per_step == images
  losses = [step() for _ in range(2)]
  assert set(losses[0]) == {"darknet": {"loss"}, "wgan": {"Loss_D", "Loss_G"},
                            "cyclegan": {"D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B",
                                         "cycle_B", "idt_B"}}[name]
  assert all(np.isfinite(float(v)) for l in losses for v in l.values())


def test_wgan_step_clamps_the_critic_before_each_critic_step():
  config = wgan_configs.get_config("smoke")
  with config.unlocked():
    config.critic_iters = 1
  step, _ = ref.wgan_torch_step(config)
  critic = step.modules["critic"]
  clip = config.clip_value
  assert max(float(p.detach().abs().max()) for p in critic.parameters()) > clip  # init: N(·, 0.02)
  step()
  # Clamped to ±c, then one RMSprop step, whose first update is at most 10·lr per weight.
  bound = clip + 10 * config.lr_d + 1e-7
  assert max(float(p.detach().abs().max()) for p in critic.parameters()) <= bound


def test_benchmark_adds_pytorch_rows_with_the_ratio(capsys):
  result = benchmark.run("darknet", variant="smoke", steps=1, with_torch=True, rounds=3)
  (row,) = result["torch"]
  assert row["impl"] == "pytorch-eager" and row["images_per_sec"] > 0
  assert row["vs_torch"] == pytest.approx(result["images_per_sec"] / row["images_per_sec"])
  assert result["impl"] == "jaxgan" and result["images_per_sec"] > 0  # the old keys stay
  # Three rounds in turns; the reported figures are the median rounds, so the ratio of
  # medians lies within the per-round ratios' range.
  assert result["rounds"] == 3 and len(row["vs_torch_rounds"]) == 3
  assert min(row["vs_torch_rounds"]) <= row["vs_torch"] * (1 + 1e-9)
  assert max(row["vs_torch_rounds"]) >= row["vs_torch"] * (1 - 1e-9)
  benchmark.print_table([result])
  lines = capsys.readouterr().out.strip().splitlines()
  header, jax_row, torch_row, devices, spread, versions = lines
  assert header.split()[:3] == ["benchmark", "variant", "impl"]
  assert jax_row.split()[:3] == ["darknet", "smoke", "jaxgan"]
  assert torch_row.split()[:3] == ["darknet", "smoke", "pytorch-eager"]
  assert devices.startswith("devices: 1 x") and versions.startswith("pytorch: ")
  assert spread.startswith("medians of 3 alternating rounds") and "darknet pytorch-eager" in spread


def test_cpu_sizes_reach_the_nested_fields():
  config = benchmark.with_overrides(cyclegan_configs.get_config("horse2zebra"),
                                    benchmark.CPU_SIZES["cyclegan"], batch_size=None)
  assert (config.data.load_size, config.data.crop_size, config.batch_size,
          config.precision) == (143, 128, 1, "fp32")
