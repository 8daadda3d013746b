"""The benchmark entry point still runs every system's real step (a guard, not a timing)."""

import pytest

from benchmarks import benchmark


@pytest.mark.parametrize("name", ["darknet", "wgan", "cyclegan"])
def test_benchmark_runs_each_system_on_its_smoke_config(name, capsys):
  result = benchmark.run(name, variant="smoke", steps=1)
  assert result["benchmark"] == name and result["images_per_sec"] > 0
  assert result["compile_s"] > 0 and result["tflops_per_sec"] > 0  # XLA counted the FLOPs
  benchmark.print_table([result])
  header, row, devices = capsys.readouterr().out.strip().splitlines()
  assert header.split()[0] == "benchmark" and row.split()[:2] == [name, "smoke"]
  assert devices.startswith("devices: 1 x")


def test_without_a_variant_the_system_default_runs_and_is_named(monkeypatch):
  configs, _, setup = benchmark.SYSTEMS["darknet"]
  # The real default (cifar10) is too big for a test: make "smoke" the default instead.
  monkeypatch.setitem(benchmark.SYSTEMS, "darknet", (configs, "smoke", setup))
  result = benchmark.run("darknet", steps=1)
  assert result["variant"] == "smoke" and result["images_per_sec"] > 0


def test_wgan_flops_count_every_critic_step_of_the_scan():
  # XLA's cost analysis counts a scan's body once: read off the iteration's programs, the
  # FLOPs would not grow with the critic steps per iteration. The benchmark's do, by one
  # critic step's worth per step.
  flops = {}
  for critic_iters in (1, 3):
    config = benchmark.with_overrides(benchmark.wgan_configs.get_config("smoke"),
                                      critic_iters=critic_iters)
    _, _, images, flops[critic_iters], _ = benchmark.wgan_setup(config)
    assert images == critic_iters * config.batch_size
  critic_step = (flops[3] - flops[1]) / 2
  generator_step = flops[1] - critic_step
  assert critic_step > 0 and generator_step > 0
