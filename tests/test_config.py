"""Run configs: dotted fields, checks that name the fix, renamed fields, a run's own copy."""

import importlib
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from experiments.configs import cyclegan as cyclegan_configs
from experiments.configs import darknet as darknet_configs
from experiments.configs import wgan as wgan_configs
from jaxgan import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_override_sets_nested_fields_and_refuses_new_ones():
  config = config_lib.override(cyclegan_configs.get_config("smoke"),
                               {"data.load_size": 24}, batch_size=4)
  assert (config.data.load_size, config.batch_size) == (24, 4)
  assert config_lib.get(config, "data.load_size") == 24
  with pytest.raises(AttributeError, match="data.lod_size"):
    config_lib.override(config, {"data.lod_size": 24})


def test_checks_name_the_field_and_a_fix():
  config = wgan_configs.get_config("smoke")
  config_lib.override(config, batch_size=0, loss="hinge")
  with pytest.raises(ValueError, match=r"config.batch_size=0 must be positive: set "
                                       r"--config.batch_size to a value above 0"):
    config_lib.positive(config, "batch_size")
  with pytest.raises(ValueError, match=r"--config.loss=<one of them>"):
    config_lib.choice(config, "loss", ("wgan", "wgan-gp"))
  with pytest.raises(ValueError, match="--config.gen_batch_size to 0 or more"):
    config_lib.non_negative(config_lib.override(config, gen_batch_size=-1), "gen_batch_size")


def test_the_three_systems_spell_shared_concepts_alike():
  configs = {name: module.get_config("smoke") for name, module in (
      ("darknet", darknet_configs), ("wgan", wgan_configs), ("cyclegan", cyclegan_configs))}
  for name, c in configs.items():
    for field in ("data.source", "data.data_dir", "data.max_images", "batch_size", "seed",
                  "precision", "keep_checkpoints"):
      config_lib.get(c, field)  # raises if a system spells it otherwise
    assert config_lib.run_system(c) == name
  for name in ("wgan", "cyclegan"):
    for field in ("data.path", "data.channels", "data.num_workers", "data.num_threads",
                  "data.prefetch", "num_samples", "sample_every", "log_every",
                  "eval.judge", "eval.samples", "eval.every", "eval.reference_images"):
      config_lib.get(configs[name], field)
  assert configs["wgan"].adam_b1 == 0.5 and configs["cyclegan"].adam_b2 == 0.999


def test_a_renamed_field_names_its_new_name():
  with pytest.raises(ValueError, match=r"config.dataset was renamed: use --config.data.source"):
    config_lib.check_renamed("darknet", ["model.nf", "dataset"])
  with pytest.raises(ValueError, match=r"config.b1 was renamed: use --config.adam_b1"):
    config_lib.check_renamed("cyclegan", ["b1"])
  config_lib.check_renamed("cyclegan", ["data.num_threads", "num_samples"])  # current names
  config_lib.check_renamed("wgan", ["b1"])  # not a WGAN rename (and no such field: flags say)


@pytest.mark.parametrize("module, old", [
    ("darknet", "--config.max_train_examples=64"), ("cyclegan", "--config.n_samples=2")])
def test_a_renamed_field_on_the_command_line_is_one_line_before_work(module, old, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", f"experiments.{module}", "--config",
       f"experiments/configs/{module}.py:smoke", old, "--workdir", str(tmp_path / "run")],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  new = {"darknet": "data.max_images", "cyclegan": "num_samples"}[module]
  assert result.stderr.strip().splitlines()[-1].startswith("error: config.")
  assert f"--config.{new}" in result.stderr and "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")


def test_a_run_folder_written_before_the_renames_reads_with_the_new_names(tmp_path):
  old_darknet = {"dataset": "fashion_mnist", "data_dir": "/idx", "max_train_examples": 64,
                 "max_test_examples": 40, "max_lr": 1.3, "model": {"nf": 4}}
  old_cyclegan = {"lambda_a": 10.0, "n_samples": 2, "b1": 0.5, "b2": 0.999,
                  "data": {"source": "fashion_mnist", "num_threads": 0}}
  for name, raw in (("darknet", old_darknet), ("cyclegan", old_cyclegan)):
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / "config.json", "w") as f:
      json.dump(raw, f)
  darknet = config_lib.read_config(str(tmp_path / "darknet"), "darknet")
  assert (darknet.data.source, darknet.data.data_dir, darknet.data.max_images,
          darknet.data.max_test_images) == ("fashion_mnist", "/idx", 64, 40)
  assert "dataset" not in darknet
  cifar = config_lib.upgrade({**old_darknet, "dataset": "cifar10"}, "darknet")
  assert (cifar["data"]["source"], cifar["data"]["name"]) == ("tfds", "cifar10")
  cyclegan = config_lib.read_config(str(tmp_path / "cyclegan"), "cyclegan")
  assert (cyclegan.num_samples, cyclegan.adam_b1, cyclegan.adam_b2) == (2, 0.5, 0.999)
  assert cyclegan.data.num_workers == 0
  with pytest.raises(ValueError, match="holds a Darknet run, not a CycleGAN run"):
    config_lib.read_config(str(tmp_path / "darknet"), "cyclegan")


def test_write_config_round_trips(tmp_path):
  config = darknet_configs.get_config("smoke")
  config_lib.write_config(str(tmp_path), config)
  again = config_lib.read_config(str(tmp_path), "darknet")
  assert again.to_dict() == json.loads(config.to_json_best_effort())
  assert isinstance(again, ml_collections.ConfigDict)


@pytest.mark.parametrize("system", ["darknet", "wgan", "cyclegan"])
def test_a_run_written_before_fields_were_added_reads_with_every_field(system, tmp_path):
  # config.json of a smoke run as the project wrote it on 2026-11-29: reading it must give
  # every field today's config has (each added one at its old behaviour), so the tools
  # that restore a run (sample, evaluate, translate, a resumed run) accept it.
  here = os.path.dirname(__file__)
  with open(os.path.join(here, "data", f"{system}_smoke_config_2026-11-29.json")) as f:
    old = json.load(f)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(old, f)
  config = config_lib.read_config(str(tmp_path), system)
  configs = {"darknet": darknet_configs, "wgan": wgan_configs,
             "cyclegan": cyclegan_configs}[system]

  def names(c, prefix=""):
    return {n for k, v in c.items() for n in (
        names(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k})}

  assert names(config) == names(configs.get_config("smoke"))
  for name, value in config_lib.ADDED.get(system, {}).items():
    if name not in names(ml_collections.ConfigDict(old)):
      assert config_lib.get(config, name) == value
  importlib.import_module(f"jaxgan.train.{system}").validate_config(config)
