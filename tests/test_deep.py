"""Deep baselines: DCCA's objective against numpy, each method beats chance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import configs, data, runner
from cmjax.methods import deep, registry

SMALL = configs.replace(
    deep.DeepConfig(), hidden=(64,), code_dim=16, dcca_dim=8,
    training=dict(batch_size=64, eval_every=100), dcca_batch_size=256, steps=300,
    mdbn_image_hidden=(64, 32),
    mdbn_text_hidden=(32, 32), mdbn_joint_hidden=64, mdbn_steps=600,
    mdbn_learning_rate=1e-2)


def numpy_total_correlation(h1, h2, reg):
  n = len(h1)
  h1, h2 = h1 - h1.mean(0), h2 - h2.mean(0)
  s11 = h1.T @ h1 / (n - 1) + reg * np.eye(h1.shape[1])
  s22 = h2.T @ h2 / (n - 1) + reg * np.eye(h2.shape[1])
  s12 = h1.T @ h2 / (n - 1)
  inv_sqrt = lambda s: np.linalg.inv(np.real(__import__("scipy").linalg.sqrtm(s)))
  return np.linalg.svd(inv_sqrt(s11) @ s12 @ inv_sqrt(s22), compute_uv=False).sum()


def test_cca_objective_matches_numpy_and_has_finite_gradients():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=(400, 2))
  h1 = shared @ rng.normal(size=(2, 5)) + 0.5 * rng.normal(size=(400, 5))
  h2 = shared @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(400, 4))
  h2 = np.concatenate([h2, rng.normal(size=(400, 1))], 1)  # Equal widths: 5 and 5.
  got = float(deep.cca_objective(jnp.asarray(h1, jnp.float32), jnp.asarray(h2, jnp.float32), 1e-3))
  assert got == pytest.approx(numpy_total_correlation(h1, h2, 1e-3), rel=1e-4)
  assert 1.5 < got < 2.0  # Two strongly correlated directions, the rest near zero.
  grads = jax.grad(deep.cca_objective, argnums=(0, 1))(jnp.asarray(h1, jnp.float32),
                                                       jnp.asarray(h2, jnp.float32))
  assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("method", ["dcca", "dccae", "corr_ae", "corr_cross_ae",
                                    "corr_full_ae", "bimodal_ae", "multimodal_dbn"])
def test_deep_baselines_beat_chance(method, tmp_path):
  dataset = data.make_synthetic(num_train=600, num_test=200, difficulty=0.7)
  out = runner.run(registry.get(method), SMALL, dataset, str(tmp_path), seed=0)
  assert min(out["map"]["i2t"], out["map"]["t2i"]) > 0.2, out["map"]  # Chance: about 0.1.
