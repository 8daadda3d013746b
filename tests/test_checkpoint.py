"""Checkpointer: resuming walks back past damaged checkpoints, or says clearly why not."""

import gc
import logging
import os
import shutil
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import checkpoint

STEPS = (1, 2, 3)


def tree(step):
  # Noise above OCDBT's 1 KiB inline limit, so (as in a real run) the array data is the
  # step's largest file; several arrays, so a damaged file fails several reads at once.
  noise = np.random.default_rng(step).standard_normal((8, 512)).astype(np.float32)
  return {"w": [jnp.asarray(row) for row in noise], "b": jnp.full((3,), step, jnp.int32)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
  """Three good checkpoints, written once; each test damages its own copy."""
  directory = str(tmp_path_factory.mktemp("pristine") / "checkpoints")
  ckpt = checkpoint.Checkpointer(directory)
  for step in STEPS:
    ckpt.save(step, tree(step), {"step": step})
  ckpt.close()
  return directory


@pytest.fixture
def ckpt_dir(pristine, tmp_path):
  directory = str(tmp_path / "checkpoints")
  shutil.copytree(pristine, directory)
  return directory


def damage(directory, step, how):
  """Truncates or deletes the step's largest file: a full disk, a killed copy."""
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(directory,
                                                                               str(step)))
           for name in names]
  largest = max(files, key=os.path.getsize)
  if how == "truncate":
    os.truncate(largest, os.path.getsize(largest) // 2)
  else:
    os.remove(largest)


def warnings_of(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_damaged_newest_falls_back_to_the_previous_one(ckpt_dir, caplog, capfd, monkeypatch,
                                                       how):
  reported = []  # what Python would print as "Exception ignored in: ..."
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  damage(ckpt_dir, 3, how)
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  with caplog.at_level(logging.WARNING):
    state, meta = ckpt.restore(tree(0))
  assert meta == {"step": 2}
  np.testing.assert_array_equal(state["w"], tree(2)["w"])
  np.testing.assert_array_equal(state["b"], tree(2)["b"])
  skipped = [m for m in warnings_of(caplog) if "step 3" in m and "does not restore" in m]
  assert len(skipped) == 1 and "\n" not in skipped[0]
  # The damaged one is kept aside for a look, out of the manager's count: the run can
  # save step 3 again, and max_to_keep then keeps the good 1 and 2, not a broken 3.
  assert os.listdir(ckpt_dir + ".damaged") == ["3"]
  assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
  ckpt.save(3, tree(30), {"step": 3})
  ckpt.close()
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  assert ckpt.all_steps() == [1, 2, 3]
  state, meta = ckpt.restore(tree(0))
  assert meta == {"step": 3}
  np.testing.assert_array_equal(state["w"], tree(30)["w"])
  ckpt.close()
  gc.collect()  # finalise the reads the failed restore abandoned: they must stay quiet
  assert not reported, [str(r.exc_value)[:200] for r in reported]
  err = capfd.readouterr().err
  assert "Traceback" not in err and "Exception ignored" not in err, err[:2000]
  assert "Event loop is closed" not in err


def test_all_damaged_is_one_clear_error(ckpt_dir):
  for step, how in zip(STEPS, ("truncate", "delete", "truncate")):
    damage(ckpt_dir, step, how)
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  with pytest.raises(checkpoint.CheckpointError) as info:
    ckpt.restore(tree(0))
  text = str(info.value)
  assert all(f"step {s}:" in text for s in STEPS)
  assert "Remove the damaged step folders" in text and "fresh --workdir" in text
  assert "TensorStore" not in text  # the cause, not orbax's page of spec
  assert isinstance(info.value, RuntimeError)
  assert ckpt.all_steps() == [1, 2, 3]  # nothing restored, so nothing moved
  assert not os.path.exists(ckpt_dir + ".damaged")
  ckpt.close()


def test_explicit_damaged_step_is_the_error_not_a_fallback(ckpt_dir):
  damage(ckpt_dir, 3, "delete")
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  with pytest.raises(checkpoint.CheckpointError, match="step 3:"):
    ckpt.restore(tree(0), step=3)
  state, meta = ckpt.restore(tree(0), step=2)  # an explicit good step still restores
  assert meta == {"step": 2}
  np.testing.assert_array_equal(state["w"], tree(2)["w"])
  with pytest.raises(FileNotFoundError, match="no checkpoint at step 7"):
    ckpt.restore(tree(0), step=7)
  assert ckpt.all_steps() == [1, 2, 3]
  ckpt.close()


def test_empty_directory_is_file_not_found(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "none"))
  with pytest.raises(FileNotFoundError, match="train first"):
    ckpt.restore(tree(0))
  ckpt.close()


def test_only_abandoned_read_reports_are_held_back(ckpt_dir, monkeypatch):
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  ckpt = checkpoint.Checkpointer(ckpt_dir)
  ckpt.restore(tree(0))  # installs the hook
  ckpt.close()

  def unraisable(error):
    return types.SimpleNamespace(exc_type=type(error), exc_value=error,
                                 exc_traceback=error.__traceback__, err_msg=None,
                                 object=None)

  sys.unraisablehook(unraisable(RuntimeError("Event loop is closed")))
  assert not reported
  ours = unraisable(ValueError("a user's own unraisable error"))
  sys.unraisablehook(ours)
  assert reported == [ours]  # everything else still reaches the previous hook
