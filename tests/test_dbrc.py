"""DBRC and the hashing baselines: the adaptive tanh, batch-norm state in the shared
loop, learning on synthetic data, the hashing protocol in results."""

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import data, train
from cmjax.methods import dbrc, hashing_baselines, registry


def test_adaptive_tanh_starts_at_tanh_and_its_penalty_pushes_alpha_up():
  z = jnp.linspace(-2, 2, 8)[None, :]
  for kind in ("linear", "nonlinear"):
    layer = dbrc.AdaptiveTanh(kind)
    params = layer.init(jax.random.key(0), z)
    h, penalty = layer.apply(params, z)
    np.testing.assert_allclose(h, np.tanh(z), atol=0.06 if kind == "nonlinear" else 1e-4)
    assert float(penalty) == pytest.approx(1.0, rel=1e-3)
    grad = jax.grad(lambda p: layer.apply(p, z)[1])(params)["params"]["alpha"]
    assert np.all(np.asarray(grad) < 0)  # Descent raises alpha.
  h, penalty = dbrc.AdaptiveTanh("plain").apply({}, z)
  np.testing.assert_allclose(h, np.tanh(z), rtol=1e-5)
  assert float(penalty) == 0.0


@pytest.mark.parametrize("hashing_layer", ["plain", "nonlinear"])
def test_dbrc_learns_codes_and_updates_batch_norm(tmp_path, hashing_layer):
  dataset = data.make_synthetic(num_train=500, num_test=150)
  out = registry.run("dbrc", dataset, str(tmp_path), preset="quick", steps=200,
                     hashing_layer=hashing_layer)
  h = out["hashing"]
  assert h["bits"] == 16 and set(h) == {"bits", "i2t", "t2i"}
  assert min(h["i2t"]["map"], h["t2i"]["map"]) > 0.2, h  # Chance: about 0.1.
  assert out["map"]["avg"] > 0.2
  assert ("mean_alpha" in out["extras"]) == (hashing_layer != "plain")


def test_batch_norm_running_statistics_are_trained_state():
  model = dbrc.DBRCNet(dbrc.DBRCConfig(bits=8, hidden=8, decoder_hidden=8), 4, 3, 2)
  x, z = jnp.ones((6, 4)), jnp.ones((6, 3))
  params = model.init(jax.random.key(0), x, z)
  stage = dbrc._stage(dbrc.DBRCConfig(bits=8, hidden=8, decoder_hidden=8, steps=5), model, None)
  rng = np.random.default_rng(0)
  data_ = {"image": jnp.asarray(rng.normal(3, 1, (64, 4)), jnp.float32),
           "text": jnp.asarray(rng.normal(size=(64, 3)), jnp.float32),
           "labels": jnp.zeros(64, jnp.int32)}
  with tempfile.TemporaryDirectory() as workdir:
    result = train.train_stage(stage, params, data_, workdir=workdir, seed=0)
  mean = np.asarray(result.params["batch_stats"]["image_norm"]["mean"])
  assert not np.allclose(mean, 0)  # Running means moved towards the data.


@pytest.mark.parametrize("method", ["cvh", "cca_itq", "cmfh", "imh", "lssh"])
def test_hashing_baselines_beat_chance(tmp_path, method):
  dataset = data.make_synthetic(num_train=400, num_test=150)
  out = registry.run(method, dataset, str(tmp_path), preset="quick")
  h = out["hashing"]
  assert h["bits"] == 16
  assert min(h["i2t"]["map"], h["t2i"]["map"]) > 0.2, h


def test_cvh_bits_past_the_text_dimension_carry_no_information():
  rng = np.random.default_rng(0)
  x, z = rng.normal(size=(200, 12)), rng.normal(size=(200, 3))
  config = hashing_baselines.HashingBaselineConfig(bits=8)
  _, a, _, b = hashing_baselines.fit_cvh(x, z, config)
  assert np.all(b[:, 3:] == 0) and np.any(b[:, :3] != 0)


@pytest.mark.parametrize("method", ["cvh", "cca_itq", "cmfh", "imh", "lssh"])
def test_hashing_baseline_codes_are_made_on_device_and_equal_the_float64_ones(method):
  """The maps are fitted in float64 on the host; the codes of new items come from
  their float32 device form, with no upload, and match the float64 signs bit for bit
  (on Wikipedia and web_news they did for all 20 method x length pairs)."""
  dataset = data.make_synthetic(num_train=300, num_test=120, seed=4)
  config = hashing_baselines.HashingBaselineConfig(
      bits=16, itq_iterations=10, cmfh_iterations=5, lssh_atoms=64, lssh_iterations=3,
      lssh_ista_steps=10)
  train_split, test = dataset.train, dataset.test
  maps = hashing_baselines.VARIANTS[method].maps(train_split.image, train_split.text, config, 0)
  for real_map, train_items, test_items in zip(maps, (train_split.image, train_split.text),
                                               (test.image, test.text)):
    encode = hashing_baselines.sign_encoder(real_map, train_items)
    test_on_device = jax.device_put(test_items)
    with jax.transfer_guard_host_to_device("disallow"):
      codes = encode(test_on_device)
    assert isinstance(codes, jax.Array)
    threshold = real_map.host(train_items).mean(0)
    expected = np.where(real_map.host(test_items) >= threshold, 1.0, -1.0)
    np.testing.assert_array_equal(np.asarray(codes), expected)
