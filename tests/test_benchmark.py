"""The benchmark entry point still runs every system's real step (a guard, not a timing)."""

import pytest

from experiments import benchmark


@pytest.mark.parametrize("name", ["darknet", "wgan", "cyclegan"])
def test_benchmark_runs_each_system_on_its_smoke_config(name, capsys):
  result = benchmark.run(name, variant="smoke", steps=1)
  assert result["benchmark"] == name and result["images_per_sec"] > 0
  assert result["compile_s"] > 0 and result["tflops_per_sec"] > 0  # XLA counted the FLOPs
  benchmark.print_table([result])
  header, row, devices = capsys.readouterr().out.strip().splitlines()
  assert header.split()[0] == "benchmark" and row.split()[:2] == [name, "smoke"]
  assert devices.startswith("devices: 1 x")
