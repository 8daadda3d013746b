"""The GPU check's driver: budget, failures, records and the targets it reads off.

Its timings only mean something on a GPU; here it runs the smoke configs, and a stand-in
for ``benchmark.run`` where a test needs a failure or a known figure.
"""

import json

import pytest
from absl import flags

from benchmarks import benchmark, gpu_check


def run_cli(args):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["gpu_check", *args])
  try:
    gpu_check.main(["gpu_check"])
  finally:
    flags.FLAGS.unparse_flags()


def fake_result(system, variant, batch, precision, steps, **_):
  return {"benchmark": system, "variant": variant, "impl": "jaxgan", "precision": precision,
          "global_batch": batch or 16, "images_per_sec": 100.0, "step_ms": 160.0,
          "compile_s": 1.0, "tflops_per_sec": None, "share_of_peak": None,
          "peak_memory_gib": None, "devices": "1 x cpu", "steps": steps}


def test_a_real_smoke_case_is_recorded(tmp_path, capsys):
  run_cli(["--smoke", "--notorch", "--out", str(tmp_path), "--cases",
           "darknet_b512_bf16"])
  (record,) = [json.loads(line) for line in (tmp_path / "results.jsonl").open()]
  assert record["case"] == "darknet_b512_bf16" and record["variant"] == "smoke"
  assert record["images_per_sec"] > 0 and record["seconds"] > 0
  out = capsys.readouterr().out
  assert "== all cases" in out and "30 CIFAR-10 epochs in" in out
  assert not (tmp_path / "errors.txt").exists()


def test_a_failing_case_leaves_its_traceback_and_the_rest_go_on(tmp_path, monkeypatch,
                                                              capsys):
  def run(system, variant, batch, precision, steps, **kw):
    if system == "wgan":
      raise RuntimeError("out of memory, say")
    return fake_result(system, variant, batch, precision, steps, **kw)

  monkeypatch.setattr(benchmark, "run", run)
  run_cli(["--smoke", "--notorch", "--out", str(tmp_path)])
  records = [json.loads(line) for line in (tmp_path / "results.jsonl").open()]
  assert [r["case"] for r in records] == [c.name for c in gpu_check.CASES
                                          if c.system != "wgan"]
  errors = (tmp_path / "errors.txt").read_text()
  assert "== wgan_bf16" in errors and "RuntimeError: out of memory, say" in errors
  assert "wgan_bf16: FAILED" in capsys.readouterr().out


class FakeClock:
  """perf_counter for gpu_check: each case run by the fake takes ``per_case`` seconds."""

  def __init__(self, per_case):
    self.now, self.per_case = 0.0, per_case

  def perf_counter(self):
    return self.now


def test_cases_that_would_pass_the_budget_are_skipped(tmp_path, monkeypatch, capsys):
  clock = FakeClock(per_case=50.0)

  def run(*args, **kw):
    clock.now += clock.per_case
    return fake_result(*args, **kw)

  monkeypatch.setattr(benchmark, "run", run)
  monkeypatch.setattr(gpu_check, "time", clock)
  budget = 130.0
  run_cli(["--smoke", "--notorch", "--out", str(tmp_path), "--budget_s",
           str(budget)])
  ran = [json.loads(line)["case"] for line in (tmp_path / "results.jsonl").open()]
  # A case starts only if the time spent so far plus its estimate fits the budget.
  expected, spent = [], 0.0
  for case in gpu_check.CASES:
    if spent + case.estimate_s <= budget:
      expected.append(case.name)
      spent += clock.per_case
  assert ran == expected and 0 < len(ran) < len(gpu_check.CASES)
  # Time spent counts: by estimates alone, more cases would have fitted.
  assert len(ran) < sum(c.estimate_s <= budget for c in gpu_check.CASES)
  out = capsys.readouterr().out
  assert out.count("skipped") == len(gpu_check.CASES) - len(ran)


def test_an_unknown_case_is_a_usage_error(tmp_path):
  with pytest.raises(Exception, match="unknown.*darknet_b512_bf17"):
    run_cli(["--smoke", "--out", str(tmp_path), "--cases", "darknet_b512_bf17"])


def test_the_targets_read_off_the_results():
  darknet = {**fake_result("darknet", "cifar10", 512, "bf16", 50),
             "images_per_sec": 60_000.0, "tflops_per_sec": 144.0,
             "torch": [{"impl": "pytorch-eager", "images_per_sec": 30_000.0,
                        "vs_torch": 2.0}]}
  cyclegan = {**fake_result("cyclegan", "horse2zebra", 1, "bf16", 30), "step_ms": 27.0}
  lines = gpu_check.implications([darknet, cyclegan], {"bf16_matmul_tflops": 800.0})
  # 30 epochs of 50,000 images at 60,000 images/s; 18% of 800; 200 x 1334 x 27 ms.
  assert "30 CIFAR-10 epochs in 25.0 s" in lines[0]
  assert "144.0 TFLOP/s, 18.0% of the measured 800" in lines[1]
  assert lines[2].endswith("pytorch-eager 3e+04: 2.00x")
  assert "200 horse2zebra epochs in 2.00 h" in lines[3]


def test_each_unpadded_case_is_compared_with_its_padded_twin():
  padded = {**fake_result("cyclegan", "horse2zebra", 1, "bf16", 30), "step_ms": 20.0,
            "case": "cyclegan_bf16"}
  unpadded = {**padded, "step_ms": 50.0, "case": "cyclegan_bf16_unpadded"}
  lines = gpu_check.implications([padded, unpadded], None)
  assert any("50 -> 20 ms a step: 2.50x" in line for line in lines), lines
  twins = {c.name for c in gpu_check.CASES} & {c.name + "_unpadded" for c in gpu_check.CASES}
  assert twins == {c.name for c in gpu_check.CASES if c.formulation == "lax"}


def test_ceilings_are_measured_on_whatever_device_there_is():
  ceilings = gpu_check.measure_ceilings(size=128, copy_gib=2**-10, repeats=3, warmup=2)
  assert ceilings["bf16_matmul_tflops"] > 0 and ceilings["copy_tb_per_s"] > 0
  assert ceilings["device"] and ceilings["jax"]
