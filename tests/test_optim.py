import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgan import optim


def fastai_clr_beta(t, nb, max_lr, div, pct, mom_max, mom_min):
  """fastai 0.7's CircularLR_beta, written out the way its source reads."""
  cycle_nb = int(nb * (1 - pct / 100) / 2)
  if t > 2 * cycle_nb:
    pct_t = (t - 2 * cycle_nb) / (nb - 2 * cycle_nb)
    return max_lr * (1 - pct_t * (1 - 1 / 100)) / div, mom_max
  if t > cycle_nb:
    pct_t = 1 - (t - cycle_nb) / cycle_nb
  else:
    pct_t = t / cycle_nb
  lr = max_lr * (1 + pct_t * (div - 1)) / div
  return lr, mom_max + pct_t * (mom_min - mom_max)


@pytest.mark.parametrize("nb,max_lr,div,pct", [(5880, 1.3, 20, 20), (1000, 0.4, 50, 15),
                                                (37, 1.0, 10, 30)])
def test_one_cycle_matches_fastai_formula(nb, max_lr, div, pct):
  lr_fn, mom_fn = optim.one_cycle(nb, max_lr, div, pct, (0.95, 0.85))
  steps = np.unique(np.concatenate([np.arange(0, nb, max(1, nb // 97)),
                                    [0, 1, nb // 2, nb - 1, nb]]))
  lrs = np.asarray(jax.vmap(lr_fn)(jnp.asarray(steps)))
  moms = np.asarray(jax.vmap(mom_fn)(jnp.asarray(steps)))
  for t, lr, mom in zip(steps, lrs, moms):
    want_lr, want_mom = fastai_clr_beta(int(t), nb, max_lr, div, pct, 0.95, 0.85)
    assert lr == pytest.approx(want_lr, rel=1e-5, abs=1e-8), t
    assert mom == pytest.approx(want_mom, rel=1e-6), t


def test_one_cycle_landmarks():
  lr_fn, mom_fn = optim.one_cycle(1000, 1.3, 20, 20)
  c = 400
  assert float(lr_fn(0)) == pytest.approx(1.3 / 20)
  assert float(lr_fn(c)) == pytest.approx(1.3)
  assert float(mom_fn(c)) == pytest.approx(0.85)
  assert float(lr_fn(2 * c)) == pytest.approx(1.3 / 20)
  assert float(lr_fn(1000)) == pytest.approx(1.3 / 2000)
  assert float(mom_fn(999)) == pytest.approx(0.95)


def test_one_cycle_too_short_is_an_error():
  with pytest.raises(ValueError, match="more steps"):
    optim.one_cycle(2, 1.0)


def test_sgd_l2_is_pytorch_sgd_with_scheduled_momentum():
  lr_fn = lambda t: 0.1 + 0.05 * t
  mom_fn = lambda t: 0.9 - 0.1 * t
  wd = 1e-2
  tx = optim.sgd_l2(lr_fn, mom_fn, wd)
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
  state = tx.init(params)
  p_ref = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {k: np.zeros_like(v) for k, v in p_ref.items()}
  for t in range(4):
    grads = {"w": jnp.array([0.3, -0.1]) * (t + 1), "b": jnp.array(0.2)}
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for k in p_ref:  # torch.optim.SGD.step, dampening 0, nesterov False
      g = np.asarray(grads[k], np.float64) + wd * p_ref[k]
      buf[k] = g if t == 0 else mom_fn(t) * buf[k] + g
      p_ref[k] = p_ref[k] - lr_fn(t) * buf[k]
    for k in p_ref:
      np.testing.assert_allclose(params[k], p_ref[k], rtol=1e-5)


def test_torch_rmsprop_formula():
  tx = optim.torch_rmsprop(1e-2)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  state = tx.init(params)
  p, v = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  for t in range(5):
    g = np.array([0.5, -1.0, 2.0]) * (t - 2.5)
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
    v = 0.99 * v + 0.01 * g**2  # torch: square_avg.mul_(alpha).addcmul_(g, g, 1 - alpha)
    p = p - 1e-2 * g / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(params["w"], p, rtol=1e-5)


def test_clip_params():
  clipped = optim.clip_params({"a": jnp.array([-1.0, 0.005, 3.0])}, 0.01)
  np.testing.assert_allclose(clipped["a"], [-0.01, 0.005, 0.01])


@pytest.mark.parametrize("epoch,factor", [(0, 1.0), (99, 1.0), (100, 1 - 1 / 101),
                                          (150, 1 - 51 / 101), (199, 1 - 100 / 101)])
def test_linear_decay_epochs(epoch, factor):
  assert float(optim.linear_decay_epochs(2e-4, 100, 100)(epoch)) == pytest.approx(2e-4 * factor)
