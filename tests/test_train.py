"""The shared training loop: data parallelism, resume, safety, metrics."""

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from cmjax import optim, protocol, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _regression_stage(num_steps=60, batch_size=32, record=None, **kwargs):
  """Linear regression on device-resident data; batches sampled on device.

  `record(sharding)` is called (at compile time) with the batch's sharding as
  the loss sees it.
  """

  def sample_fn(rng, data):
    rows = jax.random.randint(rng, (batch_size,), 0, data["x"].shape[0])
    return {"x": data["x"][rows], "y": data["y"][rows]}

  def loss_fn(params, context, batch, rng):
    if record:
      jax.debug.inspect_array_sharding(batch["x"], callback=record)
    pred = jnp.tanh(batch["x"] @ params["w1"]) @ params["w2"]
    return jnp.mean((pred - batch["y"]) ** 2), {}

  return train.Stage("regression", loss_fn, sample_fn, optax.adam(1e-2), num_steps, **kwargs)


def _problem():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 6)).astype(np.float32)
  y = np.sin(x @ rng.normal(size=(6, 2))).astype(np.float32)
  params = {"w1": jnp.asarray(rng.normal(size=(6, 16)) * 0.3, jnp.float32),
            "w2": jnp.zeros((16, 2), jnp.float32)}
  return params, {"x": jnp.asarray(x), "y": jnp.asarray(y)}


_DEVICE_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    {distributed}
    sys.path.insert(0, {tests!r})
    from test_train import _problem, _regression_stage
    from cmjax import train
    assert jax.device_count() == 8 and jax.local_device_count() == {local}, jax.devices()
    params, data = _problem()
    shard_shapes = []
    record = lambda sharding: shard_shapes.append(sharding.shard_shape((32, 6)))
    result = train.train_stage(_regression_stage(record=record), params, data,
                               workdir={workdir!r}, seed=0,
                               loop=train.LoopConfig(steps_per_call=7))
    # The caller's parameters survive (the state is donated, not the caller's arrays).
    again = train.train_stage(_regression_stage(num_steps=3), params, data,
                              workdir={workdir!r} + "_again", seed=0)
    assert shard_shapes and set(shard_shapes) == {{(4, 6)}}, shard_shapes
    if jax.process_index() == 0:
      np.savez({out!r}, **result.params)
""")


def _launch(script_args: dict, processes: int, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // processes}")
  running = []
  for process in range(processes):
    distributed = ""
    if processes > 1:
      distributed = (f"from cmjax import train; train.initialize_distributed("
                     f"'127.0.0.1:{script_args['port']}', {processes}, {process})")
    script = _DEVICE_SCRIPT.format(tests=os.path.join(REPO, "tests"), local=8 // processes,
                                   distributed=distributed, workdir=script_args["workdir"],
                                   out=script_args["out"])
    running.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for process in running:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_same_parameters_on_1x8_and_2x4_devices(tmp_path):
  """8 devices in one process, and 2 processes x 4 devices (jax.distributed):
  the batch is sharded 4 rows per device and the parameters agree."""
  outputs = []
  for processes, port in ((1, None), (2, 12000 + os.getpid() % 5000)):
    out = str(tmp_path / f"params{processes}.npz")
    _launch({"workdir": str(tmp_path / f"w{processes}"), "out": out, "port": port}, processes,
            tmp_path)
    outputs.append(np.load(out))
  for name in ("w1", "w2"):
    np.testing.assert_allclose(outputs[0][name], outputs[1][name], rtol=1e-4, atol=1e-5)
  assert not np.allclose(outputs[0]["w2"], 0)  # It trained.


def test_resume_gives_identical_parameters(tmp_path):
  params, data = _problem()
  loop = train.LoopConfig(steps_per_call=5, checkpoint_every=20)
  straight = train.train_stage(_regression_stage(60), params, data,
                               workdir=str(tmp_path / "a"), seed=1, loop=loop)
  # Interrupted: a first process stops after 40 steps (2 checkpoints), a second
  # process resumes from the workdir and finishes.
  train.train_stage(_regression_stage(40), params, data, workdir=str(tmp_path / "b"),
                    seed=1, loop=loop)
  resumed = train.train_stage(_regression_stage(60), params, data,
                              workdir=str(tmp_path / "b"), seed=1, loop=loop)
  assert resumed.resumed_from == 40 and resumed.steps == 60
  for name in ("w1", "w2"):
    np.testing.assert_array_equal(np.asarray(straight.params[name]),
                                  np.asarray(resumed.params[name]))
  # A finished stage is not run again.
  again = train.train_stage(_regression_stage(60), params, data,
                            workdir=str(tmp_path / "b"), seed=1, loop=loop)
  assert again.resumed_from == 60
  np.testing.assert_array_equal(np.asarray(again.params["w1"]), np.asarray(resumed.params["w1"]))


def test_a_checkpoint_written_by_standard_save_resumes(tmp_path, monkeypatch):
  """Workdirs checkpointed before the handler without replica-parallel saving
  (orbax's `StandardSave`) resume to the same parameters."""
  params, data = _problem()
  loop = train.LoopConfig(steps_per_call=5, checkpoint_every=20)
  straight = train.train_stage(_regression_stage(60), params, data,
                               workdir=str(tmp_path / "a"), seed=1, loop=loop)
  with monkeypatch.context() as patched:
    patched.setattr(train, "_checkpoint_handler", ocp.StandardCheckpointHandler)
    patched.setattr(ocp.args, "PyTreeSave", ocp.args.StandardSave)
    train.train_stage(_regression_stage(40), params, data, workdir=str(tmp_path / "b"),
                      seed=1, loop=loop)
  resumed = train.train_stage(_regression_stage(60), params, data,
                              workdir=str(tmp_path / "b"), seed=1, loop=loop)
  assert resumed.resumed_from == 40
  for name in ("w1", "w2"):
    np.testing.assert_array_equal(np.asarray(straight.params[name]),
                                  np.asarray(resumed.params[name]))


def test_a_save_survives_a_paused_process(tmp_path, monkeypatch):
  """A process paused mid-save (Ctrl-Z, SIGSTOP, a suspended machine) finds 30 more
  minutes on the wall clock when it goes on: the save still completes (an
  asynchronous orbax save times out after 20 minutes), and the stage resumes."""
  params, data = _problem()
  loop = train.LoopConfig(steps_per_call=5, checkpoint_every=20)
  real_time = time.time
  jumps = iter(range(10**6))
  monkeypatch.setattr(time, "time", lambda: real_time() + 1800 * next(jumps))
  train.train_stage(_regression_stage(40), params, data, workdir=str(tmp_path), seed=1,
                    loop=loop)
  monkeypatch.setattr(time, "time", real_time)
  resumed = train.train_stage(_regression_stage(60), params, data, workdir=str(tmp_path),
                              seed=1, loop=loop)
  assert resumed.resumed_from == 40


def test_non_finite_loss_stops_with_step(tmp_path):
  params, data = _problem()

  def loss_fn(params, context, batch, rng):
    # Gradient descent drives sum(w2) past 1 within a few steps: log of a negative.
    return jnp.log(1.0 - jnp.sum(params["w2"])), {}

  stage = train.Stage("diverge", loss_fn, lambda rng, d: {"x": d["x"][:8]},
                      optax.sgd(0.1), 100)
  params = {"w1": params["w1"], "w2": jnp.zeros((1,))}
  with pytest.raises(train.NonFiniteError, match=r"stage 'diverge': non-finite loss .* at step \d+"):
    train.train_stage(stage, params, data, workdir=str(tmp_path), seed=0,
                      loop=train.LoopConfig(steps_per_call=10))


def _scripted_validation(monkeypatch, scores, calls=None):
  """A stage validation whose avg MAPs are `scores`, in order (the selection logic alone)."""
  def validation_map(validation, params, data=None):
    if calls is not None:
      calls.append(float(jnp.sum(params["w2"] ** 2)))
    score = next(scores)
    return {"i2t": score, "t2i": score, "avg": score}

  monkeypatch.setattr(train.protocol, "validation_map", validation_map)
  identity = lambda p, x: x
  model = protocol.Model(identity, identity, lambda p, a, b: a @ b.T)
  return protocol.Validation(model, np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32),
                             np.arange(4))


def test_model_selection_and_early_stopping(tmp_path, monkeypatch):
  params, data = _problem()
  calls = []
  validation = _scripted_validation(
      monkeypatch, iter([0.0, 3.0, 5.0, 4.0, 2.0, 1.0, 0.0, 9.0]), calls)
  stage = _regression_stage(200, validation=validation, eval_every=10, patience=3)
  result = train.train_stage(stage, params, data, workdir=str(tmp_path), seed=0,
                             loop=train.LoopConfig(steps_per_call=100))
  assert result.steps == 50 and result.best_score == 5.0  # Stopped 3 evals after the best.
  assert float(jnp.sum(result.params["w2"] ** 2)) == pytest.approx(calls[2], rel=1e-6)
  logged = [json.loads(l) for l in open(tmp_path / "logs" / "regression" / "metrics.jsonl")]
  assert [l["val/avg"] for l in logged if "val/avg" in l] == [0, 3, 5, 4, 2, 1]

  # The starting point wins when training only makes validation worse.
  validation = _scripted_validation(monkeypatch, iter([7.0, 1.0, 0.5]))
  stage = _regression_stage(20, validation=validation, eval_every=10)
  kept = train.train_stage(stage, params, data, workdir=str(tmp_path / "keep"), seed=0)
  np.testing.assert_array_equal(np.asarray(kept.params["w2"]), np.asarray(params["w2"]))


def test_metrics_are_tensorboard_readable(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  params, data = _problem()
  train.train_stage(_regression_stage(30), params, data, workdir=str(tmp_path), seed=0,
                    loop=train.LoopConfig(steps_per_call=10))
  acc = event_accumulator.EventAccumulator(str(tmp_path / "logs" / "regression"))
  acc.Reload()
  events = acc.Scalars("train/loss")
  assert [e.step for e in events] == [10, 20, 30]
  assert events[-1].value < events[0].value
  assert "train/grad_norm" in acc.Tags()["scalars"]


def test_batch_must_split_over_devices(tmp_path):
  params, data = _problem()
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  result = train.train_stage(_regression_stage(5), params, data, workdir=str(tmp_path),
                             seed=0, mesh=mesh)
  assert result.steps == 5
  # A batch of 30 rows cannot be split over 4 devices: an error, not a silent replication.
  fake = type("Mesh", (), {"size": 4})()
  with pytest.raises(ValueError, match="a batch of 30 rows does not split over 4 devices"):
    train._check_batch_splits(_regression_stage(batch_size=30), jax.random.key(0), data, fake)


def test_fixed_shards_give_the_gradient_of_the_whole_batch(tmp_path):
  """The mean of the shards' gradients is the batch's gradient (to float rounding);
  a stage that trains with it learns; a loss that is not a row mean is refused."""
  params, data = _problem()
  mesh = train.data_mesh(jax.devices()[:1])
  stage = _regression_stage(row_mean_loss=True)
  batch = stage.sample_fn(jax.random.key(1), data)
  (loss, _), grads = jax.value_and_grad(stage.loss_fn, has_aux=True)(params, None, batch, None)
  (fixed_loss, _), fixed_grads = jax.jit(train.fixed_order_grad(stage.loss_fn, 8, mesh))(
      params, None, batch, jax.random.key(0))
  assert float(fixed_loss) == pytest.approx(float(loss), rel=1e-5)
  for name in params:
    np.testing.assert_allclose(fixed_grads[name], grads[name], rtol=1e-4, atol=1e-7)
  result = train.train_stage(stage, params, data, workdir=str(tmp_path / "a"), seed=0,
                             mesh=mesh, loop=train.LoopConfig(fixed_shards=8))
  assert result.steps == 60 and not np.allclose(result.params["w2"], 0)
  fake = type("Mesh", (), {"size": 2})()
  with pytest.raises(ValueError, match="not a mean over the rows"):
    train._check_batch_splits(_regression_stage(), jax.random.key(0), data, fake, 8)
  for shards in (3, -2):
    with pytest.raises(ValueError, match="must be a positive multiple of the 2 devices"):
      train._check_batch_splits(stage, jax.random.key(0), data, fake, shards)
  with pytest.raises(ValueError, match="a batch of 32 rows does not split over 64 shards"):
    train._check_batch_splits(stage, jax.random.key(0), data, fake, 64)


def test_a_resumed_stage_logs_each_step_once_in_one_events_file(tmp_path):
  from cmjax import metric_writer
  params, data = _problem()
  loop = train.LoopConfig(steps_per_call=5, checkpoint_every=20)
  train.train_stage(_regression_stage(20), params, data, workdir=str(tmp_path), seed=1,
                    loop=loop)
  logdir = tmp_path / "logs" / "regression"
  # A process killed after logging steps 25 and 30 past its last checkpoint (20).
  killed = metric_writer.MetricWriter(str(logdir), resume_step=20)
  killed.write_scalars(25, {"train/loss": 9.0})
  killed.write_scalars(30, {"train/loss": 9.0})
  killed.close()
  result = train.train_stage(_regression_stage(60), params, data, workdir=str(tmp_path),
                             seed=1, loop=loop)
  assert result.resumed_from == 20
  steps = [json.loads(line)["step"] for line in open(logdir / "metrics.jsonl")]
  assert steps == sorted(set(steps)) and steps[-1] == 60 and 9.0 not in [
      json.loads(line).get("train/loss") for line in open(logdir / "metrics.jsonl")]
  events = [f for f in os.listdir(logdir) if f.startswith("events.out.tfevents.")]
  assert len(events) == 1
  event_steps = [metric_writer._event_step(r)  # pylint: disable=protected-access
                 for r in metric_writer._records(str(logdir / events[0]))][1:]
  assert event_steps == sorted(set(event_steps)) and event_steps[-1] == 60


@pytest.mark.parametrize("damage", ["truncate", "zero", "empty_step"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, damage):
  params, data = _problem()
  train.train_stage(_regression_stage(20), params, data, workdir=str(tmp_path), seed=1)
  ckpt = tmp_path / "checkpoints" / "regression"
  step_dir = ckpt / "20"
  if damage == "empty_step":
    import shutil
    shutil.rmtree(step_dir)
    step_dir.mkdir()
  else:
    for root, _, names in os.walk(step_dir):
      for name in names:
        path = os.path.join(root, name)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
          if damage == "truncate":
            f.truncate(size // 2)
          else:
            f.write(b"\0" * size)
  with pytest.raises(train.RunError, match=r"stage 'regression': cannot read the checkpoint "
                     r"in .*checkpoints/regression .*delete that folder"):
    train.train_stage(_regression_stage(40), params, data, workdir=str(tmp_path), seed=1)


def test_scale_updates_under_a_module_scales_only_that_subtree():
  params = {"tower": {"efficientnet": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}},
            "efficientnet_like": jnp.ones(2)}
  grads = jax.tree.map(jnp.ones_like, params)
  base = optim.make_optimizer("adam", 1e-2, 1e-3)
  scaled = optim.scale_updates_under(base, "efficientnet", 0.1)
  plain_updates, _ = base.update(grads, base.init(params), params)
  updates, _ = scaled.update(grads, scaled.init(params), params)
  np.testing.assert_allclose(updates["tower"]["efficientnet"]["w"],
                             0.1 * plain_updates["tower"]["efficientnet"]["w"], rtol=1e-6)
  np.testing.assert_allclose(updates["tower"]["head"]["w"], plain_updates["tower"]["head"]["w"])
  np.testing.assert_allclose(updates["efficientnet_like"], plain_updates["efficientnet_like"])


def test_checkpoint_errors_say_what_to_do():
  full = train._checkpoint_error("s", "/w/checkpoints/s", OSError(28, "No space left on device"),
                                 "write")  # pylint: disable=protected-access
  assert "No space left on device" in str(full) and "resumes from the last checkpoint" in str(full)
  assert "delete" not in str(full)
  damaged = train._checkpoint_error("s", "/w/checkpoints/s", ValueError("bad"), "read")  # pylint: disable=protected-access
  assert "delete that folder" in str(damaged)


def test_a_notebook_sees_a_progress_bar_a_log_sees_lines(tmp_path, capsys, caplog):
  from cmjax import console  # pylint: disable=g-import-not-at-top
  params, data = _problem()
  try:
    for bars in (True, False):
      console.setup_logging(progress_bars=bars)
      with caplog.at_level("INFO"):
        train.train_stage(_regression_stage(num_steps=20), params, data,
                          workdir=str(tmp_path / f"run_{bars}"), seed=0,
                          loop=train.LoopConfig(steps_per_call=10))
      out, lines = capsys.readouterr().out, [r.getMessage() for r in caplog.records]
      caplog.clear()
      steps = [l for l in lines if "step 20/20 loss" in l]
      assert any(f"run_{bars}: stage 'regression': compiling" in l for l in lines)
      if bars:  # tqdm's bar on stdout (never stderr): label, 20/20, the loss.
        assert f"run_{bars}: stage 'regression'" in out and "20/20" in out and "loss=" in out
        assert not steps
      else:
        assert "20/20" not in out and steps == [
            s for s in steps if s.startswith(f"run_{bars}: stage 'regression': step 20/20")]
        assert steps
  finally:
    console.setup_logging(progress_bars=False)


def test_a_notebook_gets_log_lines_on_stdout_without_the_absl_prefix(monkeypatch, capsys):
  import types  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from cmjax import console  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
  try:
    console.setup_logging(progress_bars=False)
    console.setup_logging(progress_bars=False)  # Twice: still one line a record.
    logging.info("stage 'x': compiling")
    logging.warning("watch out")
    out, err = capsys.readouterr()
    assert out == "stage 'x': compiling\nWARNING: watch out\n"
    assert "absl" not in err and "compiling" not in err
  finally:
    monkeypatch.delitem(sys.modules, "ipykernel")
    console.setup_logging(progress_bars=False)
  logging.info("back to the terminal form")
  assert "back to the terminal form" not in capsys.readouterr().out
