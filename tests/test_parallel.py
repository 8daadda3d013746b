"""Eight fake CPU devices give the same training as one (docs/lesson.md, "Several devices")."""

import os
import subprocess
import sys
import textwrap

from conftest import xla_flags_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, numpy as np, pytest
    from jaxgan import parallel
    from jaxgan.train import darknet
    from test_darknet_train import smoke_config, synthetic_data

    assert jax.device_count() == 8
    data = synthetic_data(64, size=8)
    config = smoke_config(batch_size=16, eval_batch_size=16)

    def train(devices, steps=4):
      task, evaluate = darknet.make_task(config, parallel.make_mesh(devices), data, data)
      state, losses = task.init_state(), []
      batches = task.batches(0, state)
      for _ in range(steps):
        state, step_metrics = task.step(state, next(batches).inputs)
        losses.append(float(step_metrics["loss"]))
      return losses, jax.device_get(state), evaluate(state)

    one_losses, one_state, one_eval = train(jax.devices()[:1])
    all_losses, all_state, all_eval = train(jax.devices())
    np.testing.assert_allclose(one_losses, all_losses, rtol=1e-4, atol=1e-6)
    # The same gradient sums in another order (float32: ~1e-5 of their size); SGD turns
    # that into lr x 1e-5 per step (smoke max_lr 1.3, 4 steps).
    for a, b in zip(jax.tree.leaves(one_state), jax.tree.leaves(all_state)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                 atol=4 * config.max_lr * 1e-5)
    assert abs(one_eval["test_loss"] - all_eval["test_loss"]) < 1e-4
    # The batch really is split: each device holds 2 of the 16 examples.
    task, _ = darknet.make_task(config, parallel.make_mesh(), data, data)
    state = task.init_state()
    assert len(state.params["Dense_0"]["kernel"].sharding.device_set) == 8
    inputs = next(task.batches(0, state)).inputs
    assert inputs.sharding.shard_shape(inputs.shape) == (2,)

    bad = smoke_config(batch_size=12)
    with pytest.raises(ValueError, match="batch_size=12 does not divide by the 8 devices"):
      darknet.make_task(bad, parallel.make_mesh(), data, data)
    print("PARALLEL-OK", one_losses)
""")


def test_eight_devices_equal_one_device():
  env = dict(os.environ, XLA_FLAGS=xla_flags_for(8),
             PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
  result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "PARALLEL-OK" in result.stdout
