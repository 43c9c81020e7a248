r"""Benchmark: what an EMD-CNN training step costs on CPU, and why it is run as it is.

  python -m benchmarks.emd_cnn_step --output=reports/benchmark_emd_cnn_step.md

Two measurements behind choices of `cmjax.methods.emd_cnn`, on inputs shaped
like web_news (64x64 pixels, 256 character ids, batch 32, 16 x 8 bins):

- one full training step (sampling, CNNs, EMD loss, AdamW update) as a plain
  jitted call, against the same step inside a device-side `lax.scan` of
  `--scan_steps` steps: on XLA:CPU the loop makes convolutions much slower,
  which is why EMD-CNN on pixels trains one step per call on CPU;
- the EMD loss alone (forward and backward, 1,024 pairs, the training
  iteration budget) in the scaling and in the log domain of
  `cmjax.ot.shared_cost_sinkhorn`.
"""

from __future__ import annotations

import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import ot, sampling
from cmjax.methods import emd_cnn
import benchmarks

FLAGS = flags.FLAGS
flags.DEFINE_integer("scan_steps", 10, "Steps fused in the device-side loop being compared.")
flags.DEFINE_integer("repeats", 5, "Timed calls per measurement (after one compiling call).")
flags.DEFINE_string("output", None, "Markdown report to write.")


def _ms_per_call(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / FLAGS.repeats * 1e3


def _step_timings() -> tuple[float, float]:
  rng = np.random.default_rng(0)
  n, config = 1439, emd_cnn.EMDCNNConfig()
  data = {"image": jnp.asarray(rng.integers(0, 256, (n, 64, 64, 3)), jnp.uint8),
          "text": jnp.asarray(rng.integers(0, 4002, (n, config.pixels_chars.max_chars)), jnp.int32),
          "labels": jnp.asarray(rng.integers(0, 10, n))}
  model = emd_cnn.build_model(config, pixels=True, vocabulary_size=4002)
  params = model.init(jax.random.key(0), data["image"][:1], data["text"][:1])
  stage = emd_cnn.training_stage(config, model, None)
  optimizer = optax.adamw(config.training.learning_rate)

  def step(params, opt_state, key):
    batch = sampling.sample_rows(key, data, config.training.batch_size)
    grads = jax.grad(lambda p: stage.loss_fn(p, {}, batch, key)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def scanned(params, opt_state, key):
    body = lambda carry, i: (step(*carry, jax.random.fold_in(key, i)), None)
    return jax.lax.scan(body, (params, opt_state), jnp.arange(FLAGS.scan_steps))[0]

  opt_state = optimizer.init(params)
  plain = _ms_per_call(jax.jit(step), params, opt_state, jax.random.key(1))
  looped = _ms_per_call(jax.jit(scanned), params, opt_state, jax.random.key(1))
  return plain, looped / FLAGS.scan_steps


def _domain_timings() -> dict[str, float]:
  rng = np.random.default_rng(1)
  config = emd_cnn.EMDCNNConfig()
  m, n = config.bins
  logits_p = jnp.asarray(rng.normal(size=(1024, m)), jnp.float32)
  logits_q = jnp.asarray(rng.normal(size=(1024, n)), jnp.float32)
  cost, _, _ = ot.ground_cost_on_line(m, n)
  cost = cost / jnp.mean(cost)
  solver = ot.SinkhornConfig(epsilon=config.epsilon, max_iterations=config.sinkhorn_iterations)
  out = {}
  for domain in ("scaling", "log"):
    loss = lambda a, b, domain=domain: jnp.sum(ot.shared_cost_sinkhorn(
        jax.nn.softmax(a), jax.nn.softmax(b), cost, solver, domain=domain).cost)
    out[domain] = _ms_per_call(jax.jit(jax.grad(loss, argnums=(0, 1))), logits_p, logits_q)
  return out


def main(argv):
  benchmarks.start(argv)
  plain, looped = _step_timings()
  domains = _domain_timings()
  lines = [
      f"# EMD-CNN training step ({jax.default_backend()})",
      "",
      "Regenerate: `python -m benchmarks.emd_cnn_step "
      "--output=reports/benchmark_emd_cnn_step.md`",
      "",
      benchmarks.machine(),
      f"Mean of {FLAGS.repeats} calls after a compiling one.",
      "",
      "| EMD-CNN training step (web_news shapes, batch 32) | ms per step |",
      "|---|---|",
      f"| plain jitted step | {plain:.1f} |",
      f"| inside a {FLAGS.scan_steps}-step `lax.scan` | {looped:.1f} ({looped / plain:.1f}x) |",
      "",
      "| EMD loss, forward + backward, 1,024 pairs, 16 x 8 bins, "
      f"{emd_cnn.EMDCNNConfig().sinkhorn_iterations} iterations | ms |",
      "|---|---|",
      f"| scaling domain | {domains['scaling']:.1f} |",
      f"| log domain | {domains['log']:.1f} ({domains['log'] / domains['scaling']:.1f}x) |",
  ]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
