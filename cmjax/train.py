"""The one training loop of cmjax, shared by every method and every stage.

A method describes a stage as a `Stage`: a loss, a device-side batch sampler,
an optimizer, a step budget and optionally a validation metric for model
selection. `train_stage` then runs it:

- mesh: every device (of every process) on one `'data'` axis; parameters, optimizer state and
  the (small) training arrays are replicated, each sampled batch is sharded over
  `'data'`, and XLA's partitioner inserts the gradient all-reduce (sharded `jit`).
- update: one pure, jitted function runs `steps_per_call` steps in a
  `lax.scan`, sampling batches on device from device-resident data; the rng of
  step s is `fold_in(key(seed), s)`, so results do not depend on how steps are
  grouped into calls, nor on interruptions.
- checkpoint: the whole state (parameters, optimizer state, step, the best
  parameters so far) is saved with orbax in `workdir/checkpoints/<stage>`; a
  workdir with a checkpoint resumes from it and reaches identical parameters;
  a finished stage is not run again.
- metrics: TensorBoard event files and `metrics.jsonl` in `workdir/logs/<stage>`;
  progress lines with steps/s and ETA.
- safety: a non-finite loss or gradient norm stops the run with the stage and
  step named.
- device-count invariance (`LoopConfig.fixed_shards`): XLA sums a step's
  gradient over the devices in an order that depends on their number, so the
  last bits of a run differ between 1 and 8 devices. With `fixed_shards=V` a
  step cuts its batch into V shards, each device computes the gradients of its
  shards one at a time, and every device sums all V in one fixed order: the run
  is bit-identical on every device count that divides V.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import orbax.checkpoint as ocp

from cmjax import console, protocol, sources
from cmjax.checks import ConfigError, UserError
from cmjax.files import RunError
from cmjax.metric_writer import MetricWriter

__all__ = [
    "LoopConfig",
    "RunError",
    "NonFiniteError",
    "STATE_KEY",
    "Stage",
    "StageResult",
    "data_mesh",
    "init_state",
    "initialize_distributed",
    "make_update_fn",
    "replicate",
    "to_host",
    "train_stage",
]

Params = Any
Batch = Any
# loss_fn(params, context, batch, rng) -> (scalar loss, {name: scalar metric}). The
# metrics may hold `STATE_KEY`: a dict of top-level entries of `params` that are not
# trained but computed by the step (e.g. flax "batch_stats"); they replace those
# entries after the update.
LossFn = Callable[[Params, Any, Batch, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]
# sample_fn(rng, data) -> batch (a pytree whose leaves lead with the batch axis).
SampleFn = Callable[[jax.Array, Any], Batch]


STATE_KEY = "updated_state"


class NonFiniteError(UserError, FloatingPointError):
  """The loss or the gradient norm became NaN or Inf."""


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage of a method.

  Attributes:
    name: unique within a run; names the checkpoint and log folders.
    loss_fn: pure loss, see `LossFn`.
    sample_fn: pure, jittable batch sampler, see `SampleFn` (None with a `source`).
    optimizer: optax transformation.
    num_steps: step budget.
    validation: if set, the stage's model on a validation split
      (`cmjax.protocol.Validation`), evaluated every `eval_every` steps by the
      evaluation protocol (`protocol.validation_map`, logged under `val/`); the
      parameters with the best `protocol.SELECT_METRIC`, among the initial ones
      and those of every evaluation, are the stage's result.
    eval_every: steps between evaluations (0: never).
    patience: stop after this many evaluations without improvement (0: never).
    source: batches streamed from the host instead of sampled on device
      (`cmjax.sources.HostSource`: inputs too large to place on every device).
    loops_convolutions: the step runs convolutions: on CPU the loop runs one step
      per call, since XLA:CPU runs convolutions inside a device-side loop many
      times slower than in a plain jitted step (reports/benchmark_emd_cnn_step.md).
    row_mean_loss: the loss and every metric are means over the batch's rows of
      a term of each row alone (no batch statistics, no in-batch negatives, no
      `STATE_KEY`): the mean of the losses of equal shards of a batch is its
      loss, so the stage can run with `LoopConfig.fixed_shards`.
  """

  name: str
  loss_fn: LossFn
  sample_fn: SampleFn | None
  optimizer: optax.GradientTransformation
  num_steps: int
  validation: protocol.Validation | None = None
  eval_every: int = 0
  patience: int = 0
  source: sources.HostSource | None = None
  loops_convolutions: bool = False
  row_mean_loss: bool = False


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How the loop runs (not what it learns).

  Attributes:
    steps_per_call: steps fused in one jitted call (device-side loop).
    checkpoint_every: steps between checkpoints.
    log_every_s: seconds between progress lines.
    on_validation: called with `(stage name, step, validation scores)` after each
      validation of a stage (`cmjax.tune` reports them to its pruner, which may
      stop the run by raising).
    fixed_shards: 0: XLA reduces each step's gradient over the devices (the
      fastest; its last bits depend on the device count). V > 0: each batch is
      cut into V shards whose gradients are summed in one fixed order, so a run
      is bit-identical on any device count dividing V (which must divide every
      batch). Every stage must have a `row_mean_loss`. Each shard draws its own
      dropout, so the numbers differ from those of `fixed_shards=0`; a run
      records V in its identity.
  """

  steps_per_call: int = 100
  checkpoint_every: int = 1000
  log_every_s: float = 10.0
  on_validation: Callable[[str, int, Mapping[str, float]], None] | None = None
  fixed_shards: int = 0


@dataclasses.dataclass(frozen=True)
class StageResult:
  """What `train_stage` returns; `params` are device arrays, replicated over the mesh."""

  params: Params
  steps: int
  best_score: float | None
  wall_s: float
  resumed_from: int


# Stages seed their keys with seed * 1000 + a small offset, and JAX keys hold 32
# bits: a larger seed would wrap onto another seed's keys.
MAX_SEED = (2**32 - 1000) // 1000


def check_seed(seed: Any) -> int:
  """`seed` if it is an int in [0, MAX_SEED], else a `ConfigError`."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise ConfigError(f"seed must be an integer, got {seed!r}")
  if not 0 <= seed <= MAX_SEED:
    raise ConfigError(f"seed must be in [0, {MAX_SEED}] (stage keys are seed * 1000 + k in "
                      f"JAX's 32 bits), got {seed}")
  return int(seed)


def stage_seed(seed: int, k: int) -> int:
  """The key seed of a run's stage `k`: `seed * 1000 + k` (`k` < 1000)."""
  return seed * 1000 + k


def data_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis `'data'` over the given devices (default: every device of
  every process, `jax.devices()`)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), ("data",))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places every leaf of `tree` on every device of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def to_host(tree: Any) -> Any:
  """Replicated (possibly multi-process) arrays as host NumPy arrays."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array)
                      else np.asarray(a), tree)


def _check_distributed(coordinator_address: str | None, num_processes: int,
                       process_id: int, timeout_s: float) -> None:
  if not coordinator_address:
    raise ConfigError(f"--num_processes={num_processes} --process_id={process_id} need "
                      "--coordinator_address=HOST:PORT (process 0's address)")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ConfigError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT with "
                      "a port in 1..65535")
  if num_processes < 1:
    raise ConfigError(f"--num_processes must be >= 1, got {num_processes}")
  if not 0 <= process_id < num_processes:
    raise ConfigError(f"--process_id must be in [0, {num_processes}), got {process_id}")
  if not timeout_s > 0:
    raise ConfigError(f"--distributed_timeout_s must be > 0, got {timeout_s}")


def initialize_distributed(coordinator_address: str | None, num_processes: int,
                           process_id: int, timeout_s: float = 120.0) -> None:
  """Joins a multi-process run (`jax.distributed.initialize`) before any computation.

  Every process runs the same command; the mesh then spans `jax.devices()` of
  all of them. On CPU the cross-process collectives use gloo. If not every
  process has joined within `timeout_s` (a coordinator that cannot be
  reached, a peer that never starts), the process prints one line and exits
  with status 1 (JAX itself would abort with a C++ dump after 5 minutes).

  Raises:
    ConfigError: a missing or malformed address, a process id out of range.
  """
  _check_distributed(coordinator_address, num_processes, process_id, timeout_s)
  joined = threading.Event()

  def watchdog():
    if not joined.wait(timeout_s):
      print(f"error: multi-process start: process {process_id} of {num_processes} did not "
            f"connect every process through the coordinator {coordinator_address} within "
            f"{timeout_s:g} s (--distributed_timeout_s); check the address and that every "
            "process was started", file=sys.stderr, flush=True)
      os._exit(1)  # The main thread is blocked inside JAX's C++ client.

  threading.Thread(target=watchdog, daemon=True).start()
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only.
  jax.distributed.initialize(coordinator_address, num_processes=num_processes,
                             process_id=process_id,
                             initialization_timeout=int(timeout_s) + 60)
  joined.set()


def init_state(params: Params, optimizer: optax.GradientTransformation) -> dict:
  """The loop's state of a new stage: step, params, optimizer state, selection."""
  # Own copies: the state is donated to the update, and placing it on a mesh
  # may alias the caller's buffers (one device's shard is the caller's array).
  params = jax.tree.map(jnp.copy, params)
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt_state": optimizer.init(params),
      "best_params": jax.tree.map(jnp.copy, params),  # Own buffers (donation).
      "best_score": jnp.full((), -jnp.inf, jnp.float32),
      "evals_since_best": jnp.zeros((), jnp.int32),
      "stopped": jnp.zeros((), jnp.bool_),
  }


def fixed_order_grad(loss_fn: LossFn, shards: int, mesh: jax.sharding.Mesh):
  """`value_and_grad(loss_fn, has_aux=True)` for a row-mean loss, the same bits on any
  number of devices dividing `shards`.

  The batch's rows are cut into `shards` equal shards (`[shards, rows / shards,
  ...]`, sharded over `'data'`); each device runs the loss and its gradient on
  its shards one after another (the same shapes on every device count), the
  results are gathered, and every device averages the `shards` of them in one
  fixed order. Shard `i` draws its randomness from `split(rng, shards)[i]`.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def local(params, context, cut, keys):  # cut: [shards / devices, rows / shards, ...].
    results = jax.lax.map(lambda x: grad_fn(params, context, *x), (cut, keys))
    return jax.lax.all_gather(results, "data", tiled=True)  # [shards, ...] everywhere.

  # The all-gather makes every output the same on every device (`out_specs=P()`);
  # the replication check cannot see through it.
  gathered = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")),
                           out_specs=P(), check_vma=False)
  mean = lambda a: functools.reduce(operator.add, [a[i] for i in range(shards)]) / shards

  def value_and_grad(params, context, batch, rng):
    cut = jax.tree.map(lambda a: a.reshape(shards, a.shape[0] // shards, *a.shape[1:]), batch)
    (loss, aux), grads = gathered(params, context, cut, jax.random.split(rng, shards))
    return (mean(loss), jax.tree.map(mean, aux)), jax.tree.map(mean, grads)

  return value_and_grad


def make_update_fn(stage: Stage, mesh: jax.sharding.Mesh, fixed_shards: int = 0):
  """The jitted update `(state, context, data, key, num_steps, batches=None) -> (state,
  metrics)`.

  It runs `num_steps` steps (static) in a `lax.scan` (or one plain step), with
  `state` donated; `metrics` leaves are `[num_steps]`. Each step samples its batch
  from `data` on device, or takes the next of `batches` (`[num_steps, batch, ...]`,
  a stage with a `source`). Its gradient is XLA's sharded one, or with
  `fixed_shards` that of `fixed_order_grad`. `train_stage` drives it; benchmarks
  time it.
  """
  batch_sharding = NamedSharding(mesh, P("data"))
  grad_fn = (fixed_order_grad(stage.loss_fn, fixed_shards, mesh) if fixed_shards
             else jax.value_and_grad(stage.loss_fn, has_aux=True))

  def one_step(carry, batch):
    state, context, data, key = carry
    rng = jax.random.fold_in(key, state["step"])
    sample_rng, loss_rng = jax.random.split(rng)
    if batch is None:  # Sampled on device (else streamed from the stage's source).
      batch = stage.sample_fn(sample_rng, data)
    batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    (loss, aux), grads = grad_fn(state["params"], context, batch, loss_rng)
    aux = dict(aux)
    computed = aux.pop(STATE_KEY, {})
    updates, opt_state = stage.optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    if computed:
      params = {**params, **computed}
    state = dict(state, step=state["step"] + 1, params=params, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return (state, context, data, key), metrics

  @functools.partial(jax.jit, static_argnames=("num_steps",), donate_argnums=(0,))
  def run(state, context, data, key, num_steps, batches=None):
    if num_steps == 1:  # No loop: XLA:CPU runs convolutions inside loops far slower.
      first = None if batches is None else jax.tree.map(lambda b: b[0], batches)
      (state, *_), metrics = one_step((state, context, data, key), first)
      return state, jax.tree.map(lambda m: m[None], metrics)
    (state, *_), metrics = jax.lax.scan(
        one_step, (state, context, data, key), batches, length=num_steps
    )
    return state, metrics

  return run


def _check_finite(stage: str, first_step: int, metrics: Mapping[str, np.ndarray]) -> None:
  for name in ("loss", "grad_norm"):
    bad = np.flatnonzero(~np.isfinite(metrics[name]))
    if bad.size:
      raise NonFiniteError(
          f"stage '{stage}': non-finite {name} ({metrics[name][bad[0]]}) at step "
          f"{first_step + int(bad[0]) + 1}; stopping. Lower the learning rate or "
          "check the input data."
      )


def _check_batch_splits(stage: Stage, key: jax.Array, data: Any,
                        mesh: jax.sharding.Mesh, fixed_shards: int = 0) -> None:
  """Raises ConfigError unless every batch leaf's rows split evenly over the mesh
  (and, with `fixed_shards`, into that many shards, themselves split evenly)."""
  if fixed_shards:
    if not stage.row_mean_loss:
      raise ConfigError(
          f"stage '{stage.name}': its loss is not a mean over the rows of a batch (batch "
          "statistics or in-batch comparisons), so it cannot be cut into --fixed_shards; "
          "run it with --fixed_shards=0")
    if fixed_shards < 0 or fixed_shards % mesh.size:
      raise ConfigError(f"--fixed_shards={fixed_shards} must be a positive multiple of "
                        f"the {mesh.size} devices")
  batch = (stage.source.shape_of_batch() if stage.source is not None
           else jax.eval_shape(stage.sample_fn, key, data))
  split = max(fixed_shards, mesh.size)
  for leaf in jax.tree.leaves(batch):
    if not leaf.shape or leaf.shape[0] % split:
      what = f"{fixed_shards} shards" if fixed_shards else f"{mesh.size} devices"
      raise ConfigError(
          f"stage '{stage.name}': a batch of {leaf.shape[0] if leaf.shape else 0} rows does "
          f"not split over {what}; use a batch size divisible by {split}")


def _next_boundary(step: int, stage: Stage, loop: LoopConfig) -> int:
  candidates = [stage.num_steps, step + loop.steps_per_call]
  for every in (stage.eval_every if stage.validation else 0, loop.checkpoint_every):
    if every:
      candidates.append((step // every + 1) * every)
  return min(candidates)


def train_stage(
    stage: Stage,
    params: Params,
    data: Any,
    *,
    workdir: str,
    seed: int,
    context: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    loop: LoopConfig = LoopConfig(),
) -> StageResult:
  """Trains `params` for one stage, resuming from `workdir` if it can.

  Args:
    stage: what to train.
    params: initial trainable parameters (a pytree).
    data: pytree of arrays the sampler reads (placed on every device).
    workdir: the run's folder; checkpoints and logs of this stage go below it.
    seed: the stage's rng seed (step s uses `fold_in(key(seed), s)`).
    context: pytree of fixed inputs to the loss (e.g. frozen parameters).
    mesh: device mesh with a `'data'` axis; default all local devices.
    loop: loop settings.

  Returns:
    the trained (or selected) parameters and facts about the run.

  Raises:
    NonFiniteError: the loss or gradient norm became non-finite.
  """
  start_time = time.time()
  mesh = mesh or data_mesh()
  if (stage.loops_convolutions and loop.steps_per_call > 1
      and mesh.devices.flat[0].platform == "cpu"):
    logging.info("stage '%s': convolutions on CPU train one step per call", stage.name)
    loop = dataclasses.replace(loop, steps_per_call=1)
  ckpt_dir = os.path.abspath(os.path.join(workdir, "checkpoints", stage.name))
  state = replicate(init_state(params, stage.optimizer), mesh)
  manager, state, resumed_from = _restore(stage.name, ckpt_dir, state)
  if resumed_from:
    logging.info("stage '%s': resumed from step %d (%s)", stage.name, resumed_from, ckpt_dir)

  data, context = replicate((data, context), mesh)
  key = jax.random.key(seed)
  _check_batch_splits(stage, key, data, mesh, loop.fixed_shards)
  run = make_update_fn(stage, mesh, loop.fixed_shards)
  streamed = None
  if stage.source is not None:  # Batches read on from the resumed step.
    streamed = stage.source.local_batches(int(state["step"]), stage.num_steps)
  validation = stage.validation
  val_data = None
  if validation is not None:  # Uploaded once a stage (a data source), rows split.
    val_data = protocol.validation_inputs(validation, mesh)
  writer = MetricWriter(os.path.join(workdir, "logs", stage.name),
                        enabled=jax.process_index() == 0, resume_step=resumed_from)
  step = int(state["step"])
  stopped = bool(state["stopped"])
  last_log, last_log_step = time.time(), step
  label = f"{os.path.basename(os.path.abspath(workdir))}: stage '{stage.name}'"
  if step == 0:
    logging.info("%s: compiling its step (the first call of a run takes a while)", label)
  bar = console.progress_bar(stage.num_steps, label, initial=step)
  evaluate = lambda state, step: _evaluate(stage, state, val_data, writer, step, mesh,
                                           loop.on_validation)
  try:
    # From here on nothing is uploaded but explicitly (`replicate`): a step or a
    # validation that moves host arrays to the devices is an error.
    with jax.transfer_guard_host_to_device("disallow"):
      if step == 0 and validation is not None:
        # The starting point is a candidate too: a stage never selects parameters
        # that are worse on validation than the ones it was given.
        state, _ = evaluate(state, step)
      while step < stage.num_steps and not stopped:
        n = _next_boundary(step, stage, loop) - step
        batches = None if streamed is None else sources.stacked_batches(streamed, n, mesh)
        state, metrics = run(state, context, data, key, n, batches)
        metrics = jax.device_get(metrics)
        _check_finite(stage.name, step, metrics)
        step += n
        writer.write_scalars(step, {f"train/{k}": np.mean(v) for k, v in metrics.items()})
        if validation is not None and stage.eval_every and step % stage.eval_every == 0:
          state, stopped = evaluate(state, step)
        now = time.time()
        if bar is not None:
          bar.update(n)
          bar.set_postfix(loss=f"{float(np.mean(metrics['loss'])):.4f}",
                          **({"early_stop": "yes"} if stopped else {}), refresh=False)
        elif now - last_log >= loop.log_every_s or step == stage.num_steps or stopped:
          rate = (step - last_log_step) / max(now - last_log, 1e-9)
          logging.info(
              "%s: step %d/%d loss %.4f (%.0f steps/s, eta %.0fs)%s",
              label, step, stage.num_steps, float(np.mean(metrics["loss"])), rate,
              (stage.num_steps - step) / max(rate, 1e-9), " early stop" if stopped else "",
          )
          last_log, last_log_step = now, step
        if step % loop.checkpoint_every == 0 or step == stage.num_steps or stopped:
          _save(stage.name, ckpt_dir, manager, step, state)
      _save(stage.name, ckpt_dir, manager, None, state)
  finally:
    if bar is not None:
      bar.close()
    writer.close()
    manager.close()
  selected = validation is not None and np.isfinite(float(state["best_score"]))
  return StageResult(
      params=state["best_params"] if selected else state["params"],
      steps=step,
      best_score=float(state["best_score"]) if selected else None,
      wall_s=time.time() - start_time,
      resumed_from=resumed_from,
  )


def _checkpoint_error(stage: str, ckpt_dir: str, error: Exception, doing: str) -> RunError:
  """What failed and what to do: a checkpoint that cannot be written (full disk,
  read-only folder) leaves the last one whole, so the same command resumes from it
  once the cause is fixed; one that cannot be read must be trained again."""
  first = (str(error).strip().splitlines() or [""])[0][:200]
  fix = ("free space (or make the folder writable) and run the same command again: it "
         "resumes from the last checkpoint written" if doing == "write" else
         "delete that folder to train the stage again from its start, or use another "
         "--workdir")
  return RunError(f"stage '{stage}': cannot {doing} the checkpoint in {ckpt_dir} "
                  f"({type(error).__name__}: {first}); {fix}")


def _checkpoint_handler() -> ocp.PyTreeCheckpointHandler:
  """orbax's pytree handler with replica-parallel saving off: with it (orbax's
  default on CPU and TPU), each replica of a replicated array writes a slice of it,
  and on 8 simulated CPU devices saving EMD-CNN's few MB took 5 s instead of 0.2 s
  and raised peak RSS by 0.15 GB (docs/execution.md). The files are those of
  `StandardSave`: checkpoints written before resume alike."""
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)),
      (np.ndarray, ocp.type_handlers.NumpyHandler()),
      *[(kind, ocp.type_handlers.ScalarHandler()) for kind in (int, float, np.number)])
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _restore(stage: str, ckpt_dir: str, state: dict):
  """`(manager, state, step)`: the stage's checkpoint manager and its latest state, if any.

  Raises:
    RunError: the checkpoint cannot be read (truncated, zeroed, an empty step
      folder, damaged metadata), naming its folder and what to do.
  """
  manager = None
  try:
    # Saves are synchronous: `_save` waits for each at once anyway, and an asynchronous
    # save fails once 20 minutes of wall clock pass (orbax's timeout), as they do when
    # the process is paused (Ctrl-Z, SIGSTOP, a suspended machine) mid-save.
    manager = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False),
        item_handlers=_checkpoint_handler())
    step = manager.latest_step()
    if step is None:
      return manager, state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    state = manager.restore(step, args=ocp.args.PyTreeRestore(
        abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)))
    return manager, state, int(state["step"])
  except Exception as e:  # orbax and tensorstore raise many types for damaged files.
    if manager is not None:
      manager.close()
    raise _checkpoint_error(stage, ckpt_dir, e, "read") from None


def _save(stage: str, ckpt_dir: str, manager, step: int | None, state: dict) -> None:
  """Saves `state` at `step` (None: waits for the pending saves); `RunError` on failure."""
  try:
    if step is not None:
      manager.save(step, args=ocp.args.PyTreeSave(state), force=True)
    manager.wait_until_finished()
  except Exception as e:  # A full disk, a read-only folder...
    raise _checkpoint_error(stage, ckpt_dir, e, "write") from None


def _evaluate(stage: Stage, state: dict, val_data: Any, writer: MetricWriter, step: int,
              mesh: jax.sharding.Mesh, on_validation=None) -> tuple[dict, bool]:
  """Validates the current parameters on device, keeps the best ones, decides early
  stopping. The selection's scalars are uploaded explicitly (`replicate`)."""
  scores = protocol.validation_map(stage.validation, state["params"], val_data)
  writer.write_scalars(step, {f"val/{k}": v for k, v in scores.items()})
  if on_validation is not None:
    on_validation(stage.name, step, scores)
  score = scores[protocol.SELECT_METRIC]
  evals_since_best = int(state["evals_since_best"]) + 1
  if score > float(state["best_score"]):
    state = dict(state, best_params=jax.tree.map(jnp.copy, state["params"]))
    state["best_score"] = replicate(np.float32(score), mesh)
    evals_since_best = 0
  stopped = bool(stage.patience and evals_since_best >= stage.patience)
  state["evals_since_best"], state["stopped"] = replicate(
      (np.int32(evals_since_best), np.bool_(stopped)), mesh)
  return state, stopped
