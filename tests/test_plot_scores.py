"""experiments.plot_scores: evaluation records read back from metrics.jsonl and drawn."""

import json
import os
import sys

import pytest

from experiments import plot_scores


def _write_run(workdir, records, judge="classifier:runs/darknet_fmnist"):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"critic_iters": 5, "eval": {"judge": judge}}, f)
  return str(workdir)


def _wgan_eval(step, fd, **extra):
  scores = {"fd": fd, "precision": 0.5, "recall": 0.4, "classes_covered": 9.0}
  out = {"step": step, "eval_seconds": 1.5, "wall_time": 10.0 * step}
  for k, v in scores.items():
    out.update({k: v, k + "_spread": 0.1, k + "_floor": v / 10, k + "_ceiling": v * 10})
  return {**out, **extra}


def _cyclegan_eval(step):
  out = {"step": step, "eval_seconds": 2.0}
  for d, rate in (("AtoB", 0.6), ("BtoA", 0.7)):
    out.update({f"{d}_fd": 3.0, f"{d}_fd_spread": 0.2, f"{d}_fd_floor": 0.5,
                f"{d}_fd_ceiling": 900.0, f"{d}_translation_rate": rate,
                f"{d}_translation_rate_spread": 0.01, f"{d}_translation_rate_floor": 0.95,
                f"{d}_translation_rate_ceiling": 0.02})
  return out


def test_eval_records_keep_one_per_step_in_order(tmp_path):
  workdir = _write_run(tmp_path / "run", [
      {"step": 50, "loss": 1.0}, _wgan_eval(100, 9.0), _wgan_eval(200, 5.0),
      _wgan_eval(100, 8.0)])  # resumed: step 100 judged again
  records = plot_scores.eval_records(workdir)
  assert [r["step"] for r in records] == [100, 200]
  assert records[0]["fd"] == 8.0  # the newest
  assert plot_scores.run_kind(records) == "wgan"
  s = plot_scores.series(records, "fd")
  assert s["value"] == [8.0, 5.0] and s["spread"] == [0.1, 0.1] and s["floor"] == [0.8, 0.5]


def test_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
    plot_scores.eval_records(str(tmp_path))
  workdir = _write_run(tmp_path / "no_eval", [{"step": 50, "loss": 1.0}])
  with pytest.raises(ValueError, match="eval.judge"):
    plot_scores.eval_records(workdir)
  wgan = _write_run(tmp_path / "wgan", [_wgan_eval(100, 9.0)])
  cyclegan = _write_run(tmp_path / "cyclegan", [_cyclegan_eval(10)])
  out = str(tmp_path / "x.png")
  with pytest.raises(ValueError, match="separately"):
    plot_scores.plot_runs([wgan, cyclegan], out)
  with pytest.raises(ValueError, match="2 labels for 1 runs"):
    plot_scores.plot_runs([wgan], out, labels=["a", "b"])


def test_missing_matplotlib_says_how_to_install_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
  with pytest.raises(ImportError, match="pip install matplotlib"):
    plot_scores._pyplot()  # pylint: disable=protected-access


def test_draws_wgan_runs_and_cyclegan_directions(tmp_path):
  pytest.importorskip("matplotlib")
  a = _write_run(tmp_path / "a", [_wgan_eval(100, 9.0), _wgan_eval(200, 5.0)])
  b = _write_run(tmp_path / "b", [_wgan_eval(100, 7.0), _wgan_eval(200, 6.0)])
  out = plot_scores.plot_runs([a, b], str(tmp_path / "plots" / "wgan.png"),
                              labels=["clip", "gp"], logy=("fd",))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no run recorded 'kid'"):
    plot_scores.plot_runs([a], str(tmp_path / "kid.png"), metrics=["kid"])
  c = _write_run(tmp_path / "c", [_cyclegan_eval(10), _cyclegan_eval(20)])
  out = plot_scores.plot_runs([c], str(tmp_path / "cyclegan.png"))
  assert os.path.getsize(out) > 1000
