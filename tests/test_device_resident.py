"""Device-resident execution: parameters and encodings stay on the devices, nothing is
uploaded per step or per block, and the evaluation is sharded over the `data` mesh
(one device, 8 devices and 2 processes x 4 devices give the same metrics)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmjax import data, evaluation, protocol, similarity, sources, train
from cmjax.methods import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPLOAD_ERROR = "Disallowed host-to-device transfer"


def _regression(tmp_path, validation=None, num_steps=20):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 4)).astype(np.float32)
  stage = train.Stage(
      "regression", lambda p, c, b, r: (jnp.mean((b["x"] @ p["w"]) ** 2), {}),
      lambda rng, d: {"x": d["x"][jax.random.randint(rng, (16,), 0, 64)]}, optax.sgd(0.1),
      num_steps, validation=validation, eval_every=10)
  return train.train_stage(stage, {"w": jax.device_put(np.ones((4, 2), np.float32))},
                           {"x": jax.device_put(x)}, workdir=str(tmp_path), seed=0,
                           loop=train.LoopConfig(steps_per_call=5))


def test_stage_parameters_stay_on_the_mesh(tmp_path):
  result = _regression(tmp_path)
  w = result.params["w"]
  assert isinstance(w, jax.Array) and not isinstance(w, np.ndarray)
  assert w.sharding.is_fully_replicated
  assert set(w.sharding.device_set) == set(jax.devices())


def test_a_host_upload_in_the_training_loop_is_an_error(tmp_path, monkeypatch):
  """The loop (steps and validation) runs under `transfer_guard_host_to_device`."""
  def uploading_validation(validation, params, data=None):
    jnp.asarray(np.ones(3, np.float32))  # An implicit upload, as host parameters would be.
    return {"i2t": 0.0, "t2i": 0.0, "avg": 0.0}

  monkeypatch.setattr(train.protocol, "validation_map", uploading_validation)
  identity = lambda p, x: x
  validation = protocol.Validation(protocol.Model(identity, identity, lambda p, a, b: a @ b.T),
                                   np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32),
                                   np.arange(4))
  with pytest.raises(Exception, match=UPLOAD_ERROR):
    _regression(tmp_path, validation)


def test_streamed_blocks_upload_nothing_and_match_the_dense_ranking():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(200, 8)).astype(np.float32)
  qa, qb = rng.integers(0, 4, 300), rng.integers(0, 4, 200)
  dense = evaluation.retrieval_metrics(np.asarray(similarity.cosine(a, b)), qa, qb)
  device_a, device_b, device_qb = jax.device_put((a, b, qb))
  streamed = evaluation.streamed_metrics(similarity.cosine, device_a, device_b, qa, device_qb,
                                         chunk_size=64)
  np.testing.assert_array_equal(streamed.average_precisions, dense.average_precisions)
  assert streamed.map == dense.map
  # Encodings left on the host would be uploaded by every block: refused.
  with pytest.raises(Exception, match=UPLOAD_ERROR):
    evaluation.streamed_metrics(similarity.cosine, a, device_b, qa, device_qb, chunk_size=64)


# One method of each family, with the fewest steps that still train every stage.
FAMILIES = {
    "uncsm": dict(pretrain_steps=20, finetune_steps=20, metric_pairs=2560,
                  training=dict(eval_every=10)),
    "emd_cnn": dict(steps=10, training=dict(eval_every=5)),
    "fgl": dict(siamese_steps=10, steps=10, training=dict(eval_every=5)),
    "dbrc": dict(steps=20, training=dict(eval_every=10)),
    "cca": {},
    "dcca": dict(steps=20, training=dict(eval_every=10)),
    "multimodal_dbn": {},
    "cvh": {},
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_trains_and_evaluates_without_uploads(name, tmp_path):
  """Training runs under the loop's guard; the streamed test evaluation (blocks of
  queries against the encoded items) runs here under the guard too."""
  dataset = data.make_synthetic(num_train=160, num_test=96, seed=2)
  fitted, prepared = registry.fit(name, dataset, str(tmp_path), preset="quick", **FAMILIES[name])
  test = prepared.test
  images, texts = protocol.encode(fitted, test.image, test.text)
  with jax.transfer_guard_host_to_device("disallow"):
    streamed = protocol.evaluate(fitted.score, images, texts, test.labels, name,
                                 max_dense_pairs=1000)
  dense = protocol.evaluate(fitted.score, images, texts, test.labels, name)
  assert streamed.scores is None and dense.scores is not None
  # Both forms rank alike up to float rounding. EMD-CNN's Sinkhorn stops early per chunk
  # of pairs, and the chunks differ between the forms (a last-digits change). The quick
  # Multimodal DBN collapses on this little data (its scores of a query span 2e-7, so
  # float rounding alone orders them): only finiteness is checked there.
  tolerance = {"emd_cnn": 1e-4, "multimodal_dbn": None}.get(name, 1e-6)
  for direction in ("i2t", "t2i"):
    assert np.isfinite(streamed.metrics[direction].map)
    if tolerance is not None:
      assert streamed.metrics[direction].map == pytest.approx(dense.metrics[direction].map,
                                                              abs=tolerance)


_SCRIPT = textwrap.dedent("""
    import json, sys, jax
    from absl import logging
    logging.set_verbosity(logging.INFO)
    {distributed}
    from cmjax import data, runner, train
    from cmjax.methods import registry
    assert jax.device_count() == {devices}, jax.devices()
    dataset = data.make_synthetic(num_train=240, num_test=120, seed=3)
    out = {{}}
    # UNCSM sums its gradients over 8 fixed shards (`--fixed_shards`), in one order on
    # any device count; each stage selects on validation and the metric net is trained.
    runs = (("cca", {{}}, 0), ("uncsm", dict(finetune_steps=20, pretrain_steps=20,
                                             metric_pairs=2560,
                                             training=dict(eval_every=10)), 8))
    for name, overrides, shards in [r for r in runs if r[0] in {methods!r}]:
      spec = registry.get(name)
      config = registry.make_config(spec, "quick", **overrides)
      # 120 x 120 test pairs > 1000: the test evaluation is streamed over sharded blocks.
      results = runner.run(spec, config, dataset, {workdir!r} + name, max_dense_pairs=1000,
                           loop=train.LoopConfig(fixed_shards=shards))
      out[name] = {{k: results[k] for k in ("map", "map@50", "pr_curve", "roc_auc")}}
    if jax.process_index() == 0:
      json.dump(out, open({out!r}, "w"))
      print("metrics:", json.dumps({{k: v["map"] for k, v in out.items()}}))
""")


def _run(tmp_path, tag: str, processes: int, devices: int,
         methods: tuple[str, ...] = ("cca", "uncsm")) -> tuple[dict, list[str]]:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices // processes}")
  out, port, running = str(tmp_path / f"{tag}.json"), 12000 + (os.getpid() + 7) % 5000, []
  for process in range(processes):
    distributed = ""
    if processes > 1:
      distributed = (f"from cmjax import train; train.initialize_distributed("
                     f"'127.0.0.1:{port}', {processes}, {process})")
    script = _SCRIPT.format(distributed=distributed, devices=devices, methods=methods,
                            workdir=str(tmp_path / f"{tag}_"), out=out)
    running.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = []
  for process in running:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    logs.append(output)
  return json.load(open(out)), logs


@pytest.mark.slow
def test_sharded_evaluation_is_identical_on_1_8_and_2x4_devices(tmp_path):
  one, _ = _run(tmp_path, "one", processes=1, devices=1)
  eight, _ = _run(tmp_path, "eight", processes=1, devices=8)
  two_by_four, logs = _run(tmp_path, "twobyfour", processes=2, devices=8)
  # Identical, bit for bit: CCA (no stochastic training) and UNCSM (three trained
  # stages, their gradients summed over fixed shards).
  for name in ("cca", "uncsm"):
    assert eight[name] == one[name] and two_by_four[name] == one[name], name
  # Each of the two processes scored half of every streamed direction's queries.
  for process, log in enumerate(logs):
    counts = re.findall(rf"process {process} of 2 scored (\d+) of (\d+) query rows", log)
    assert counts and all(2 * int(k) == int(n) for k, n in counts), counts


def _streamed_stage(num_steps, x):
  """Linear regression whose batches stream from host rows (`sources.HostSource`)."""
  return train.Stage(
      "streamed", lambda p, c, b, r: (jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2), {}), None,
      optax.sgd(0.2), num_steps,
      source=sources.HostSource({"x": x, "y": x[:, :2] * 2.0}, batch_size=16, seed=4))


def test_a_host_source_streams_batches_and_resumes_exactly(tmp_path):
  x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
  params = {"w": jax.device_put(np.zeros((4, 2), np.float32))}
  loop = train.LoopConfig(steps_per_call=4, checkpoint_every=12)
  straight = train.train_stage(_streamed_stage(30, x), params, {}, workdir=str(tmp_path / "a"),
                               seed=0, loop=loop)
  train.train_stage(_streamed_stage(24, x), params, {}, workdir=str(tmp_path / "b"), seed=0,
                    loop=loop)  # Interrupted after 24 steps (2 checkpoints)...
  resumed = train.train_stage(_streamed_stage(30, x), params, {}, workdir=str(tmp_path / "b"),
                              seed=0, loop=loop)  # ... and resumed: reads on from step 24.
  assert resumed.resumed_from == 24
  np.testing.assert_array_equal(np.asarray(straight.params["w"]), np.asarray(resumed.params["w"]))
  # It learned y = 2 x[:, :2].
  np.testing.assert_allclose(np.asarray(straight.params["w"])[:2], 2 * np.eye(2), atol=0.3)


def test_each_process_reads_only_its_share_of_a_batch(monkeypatch):
  x = np.arange(40, dtype=np.float32)[:, None]
  source = sources.HostSource({"x": x}, batch_size=8, seed=1)
  monkeypatch.setattr(jax, "process_count", lambda: 1)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  whole = [b["x"][:, 0] for b in source.local_batches(0, 10)]
  shares = []
  for process in (0, 1):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda p=process: p)
    shares.append([b["x"][:, 0] for b in source.local_batches(0, 10)])
  for step in range(10):
    assert len(shares[0][step]) == len(shares[1][step]) == 4
    np.testing.assert_array_equal(np.sort(np.concatenate([shares[0][step], shares[1][step]])),
                                  np.sort(whole[step]))
  # Every epoch (5 batches of 40 rows) is a permutation: no row twice.
  assert sorted(np.concatenate(whole[:5]).tolist()) == list(range(40))
  assert sorted(np.concatenate(whole[5:]).tolist()) == list(range(40))
  assert not np.array_equal(np.concatenate(whole[:5]), np.concatenate(whole[5:]))


def test_emd_cnn_learns_from_streamed_inputs(tmp_path):
  """`stream_inputs`: the training rows stay on the host (no copy on the devices)."""
  dataset = data.make_synthetic(num_train=300, num_test=120, seed=5)
  streamed = registry.run("emd_cnn", dataset, str(tmp_path / "s"), preset="quick",
                          stream_inputs=True, steps=60, training=dict(eval_every=30))
  assert streamed["config"]["stream_inputs"] is True
  assert streamed["map"]["avg"] > 0.2  # Chance: 0.1 (10 balanced classes).


def test_large_databases_are_scored_in_item_tiles(monkeypatch):
  """No scorer call sees more than `MAX_BLOCK_PAIRS` pairs; the ranking is unchanged
  (+-1 codes: integer-valued scores, so exactly)."""
  from cmjax import hashing
  rng = np.random.default_rng(3)
  codes = lambda n: np.where(rng.normal(size=(n, 16)) > 0, 1.0, -1.0).astype(np.float32)
  queries, items = jax.device_put((codes(90), codes(700)))
  qa, qb = rng.integers(0, 3, 90), jax.device_put(rng.integers(0, 3, 700))
  seen = []

  def score(a, b):
    seen.append(b.shape[0])
    return hashing.codes_score(a, b)

  whole = evaluation.streamed_metrics(score, queries, items, qa, qb, chunk_size=32)
  monkeypatch.setattr(evaluation, "MAX_BLOCK_PAIRS", 32 * 200)
  tiled = evaluation.streamed_metrics(lambda a, b: score(a, b), queries, items, qa, qb,
                                      chunk_size=32)
  assert seen[0] == 700 and seen[-1] == 175  # 4 tiles of 175 items.
  np.testing.assert_array_equal(tiled.average_precisions, whole.average_precisions)
