"""RBMs: the CD-1 surrogate loss has the CD-1 gradient, and training lowers error."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import rbm


def test_binary_cd_gradient_is_the_cd_update():
  rng = jax.random.key(0)
  params = rbm.init_rbm(rng, 6, 4)
  params["w"] = params["w"] * 50
  v = jax.random.bernoulli(jax.random.key(1), 0.5, (32, 6)).astype(jnp.float32)
  grads, _ = jax.grad(rbm.cd_loss, has_aux=True)(params, v, jax.random.key(2), "binary")
  # Rebuild the negative sample exactly as cd_loss does.
  hidden_rng, visible_rng = jax.random.split(jax.random.key(2))
  h = jax.random.bernoulli(hidden_rng, rbm.hidden_probabilities(params, v, "binary")).astype(v.dtype)
  v1 = rbm.reconstruct(visible_rng, params, h, "binary")
  ph0, ph1 = rbm.hidden_probabilities(params, v, "binary"), rbm.hidden_probabilities(params, v1, "binary")
  cd_update = (v.T @ ph0 - v1.T @ ph1) / v.shape[0]  # <v h>_data - <v h>_model.
  np.testing.assert_allclose(-grads["w"], cd_update, rtol=1e-4, atol=1e-6)


def test_gaussian_rbm_learns():
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(512, 3)) @ rng.normal(size=(3, 12))).astype(np.float32)
  x = (x - x.mean(0)) / x.std(0)
  params = rbm.init_rbm(jax.random.key(0), 12, 32)
  opt = optax.sgd(0.01, momentum=0.9)
  state = opt.init(params)

  @jax.jit
  def step(params, state, key):
    (_, aux), g = jax.value_and_grad(rbm.cd_loss, has_aux=True)(params, x, key, "gaussian")
    updates, state = opt.update(g, state)
    return optax.apply_updates(params, updates), state, aux["reconstruction_mse"]

  errors = []
  for i in range(300):
    params, state, err = step(params, state, jax.random.key(i))
    errors.append(float(err))
  assert np.mean(errors[-20:]) < 0.5 * np.mean(errors[:5])


def test_replicated_softmax_free_energy_scales_hidden_bias():
  params = rbm.init_rbm(jax.random.key(0), 5, 3)
  params["hidden_bias"] = jnp.ones(3)
  counts = jnp.array([[2.0, 0, 1, 0, 1]])
  expected = -(counts @ params["visible_bias"]) - jnp.sum(
      jax.nn.softplus(counts @ params["w"] + 4.0 * params["hidden_bias"]))
  np.testing.assert_allclose(rbm.free_energy(params, counts, "replicated_softmax"), expected, rtol=1e-6)
