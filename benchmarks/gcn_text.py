r"""Training throughput of FGL's graph-convolutional text encoder, by vocabulary size.

  python -m benchmarks.gcn_text --output=reports/benchmark_gcn_text.md

One training step of the text path (Chebyshev convolution on a kNN word graph,
K=3, 4 filters, then dense 1024, tanh; forward and backward, Adam update) on a
batch of 64 captions with 65 distinct words each (web_news' mean), for
vocabularies of 500 to 8,000 words. Three implementations in the same run:
cmjax (`cmjax.models.GraphTextEncoder`: the sparse Laplacian as an edge list,
gathers and segment sums), the same network with a dense `[V, V]` Laplacian in
JAX, and PyTorch with `torch.sparse.mm` (if installed). Throughput is reported
in captions/s and in image/text pairs/s (FGL scores all 64 x 64 pairs of a batch).
"""

from __future__ import annotations

import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

import benchmarks
from cmjax import models, text_graph

FLAGS = flags.FLAGS
flags.DEFINE_list("vocab_sizes", ["500", "1000", "2000", "4000", "8000"], "Vocabulary sizes.")
flags.DEFINE_integer("batch_size", 64, "Captions per step.")
flags.DEFINE_integer("words", 65, "Distinct words per caption.")
flags.DEFINE_integer("steps", 20, "Timed steps (after a compiling one), best of 3 windows.")
flags.DEFINE_string("output", None, "Markdown report to write.")

FILTERS, ORDER, OUTPUTS = 4, 3, 1024


def _problem(v: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  graph = text_graph.build_graph(rng.normal(size=(v, 64)).astype(np.float32), neighbors=8)
  signals = np.zeros((FLAGS.batch_size, v), np.float32)
  for row in signals:
    row[rng.choice(v, FLAGS.words, replace=False)] = np.log1p(rng.integers(1, 4, FLAGS.words))
  target = rng.normal(size=(FLAGS.batch_size, OUTPUTS)).astype(np.float32)
  return graph, signals, target


def _best_rate(step, steps: int) -> float:
  step()  # Compile / warm up.
  best = 0.0
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(steps):
      out = step()
    jax.block_until_ready(out)
    best = max(best, steps / (time.perf_counter() - start))
  return best


class _DenseChebEncoder(models.nn.Module):
  """The same encoder with a dense `[V, V]` Laplacian (the naive peer)."""

  @models.nn.compact
  def __call__(self, signals, laplacian):
    x = signals[..., None]
    terms = [x, jnp.einsum("ij,bjf->bif", laplacian, x)]
    for _ in range(2, ORDER):
      terms.append(2 * jnp.einsum("ij,bjf->bif", laplacian, terms[-1]) - terms[-2])
    h = models.nn.relu(models.nn.Dense(FILTERS)(jnp.concatenate(terms, -1)))
    return jnp.tanh(models.nn.Dense(OUTPUTS)(h.reshape(h.shape[0], -1)))


def _jax_rate(module, graph_input, signals, target) -> float:
  params = module.init(jax.random.key(0), signals, graph_input)
  optimizer = optax.adam(1e-3)
  state = (params, optimizer.init(params))

  @jax.jit
  def step(state, signals, graph_input, target):
    params, opt_state = state
    loss_fn = lambda p: jnp.mean((module.apply(p, signals, graph_input) - target) ** 2)
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  holder = [state]

  def run():
    holder[0] = step(holder[0], signals, graph_input, target)
    return holder[0]

  return _best_rate(run, FLAGS.steps)


def _torch_rate(graph, signals, target) -> tuple[float, str, int] | None:
  try:
    import torch
  except ImportError:
    return None
  v, device = graph.num_nodes, benchmarks.torch_device()
  lap = torch.sparse_coo_tensor(np.stack([graph.rows, graph.cols]), graph.values,
                                (v, v)).coalesce().to(device)
  cheb = torch.nn.Linear(ORDER, FILTERS).to(device)
  dense = torch.nn.Linear(v * FILTERS, OUTPUTS).to(device)
  optimizer = torch.optim.Adam(list(cheb.parameters()) + list(dense.parameters()), 1e-3)
  x, y = torch.from_numpy(signals).to(device), torch.from_numpy(target).to(device)

  def run():
    optimizer.zero_grad()
    t0 = x.T  # [V, B]: sparse.mm multiplies along V.
    terms = [t0, torch.sparse.mm(lap, t0)]
    for _ in range(2, ORDER):
      terms.append(2 * torch.sparse.mm(lap, terms[-1]) - terms[-2])
    stacked = torch.stack(terms, -1).permute(1, 0, 2)  # [B, V, K]
    h = torch.relu(cheb(stacked)).reshape(x.shape[0], -1)
    loss = torch.mean((torch.tanh(dense(h)) - y) ** 2)
    loss.backward()
    optimizer.step()
    return None

  run()
  best = 0.0
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      run()
    benchmarks.torch_sync(device)
    best = max(best, FLAGS.steps / (time.perf_counter() - start))
  return best, f"{torch.__version__} on {device.type}", torch.get_num_threads()


def main(argv):
  benchmarks.start(argv)
  b = FLAGS.batch_size
  rows = []
  torch_note = "PyTorch not installed (pip install -e '.[benchmark]')"
  for v in (int(s) for s in FLAGS.vocab_sizes):
    graph, signals, target = _problem(v)
    encoder = models.GraphTextEncoder(FILTERS, ORDER, OUTPUTS, "tanh")
    sparse = _jax_rate(encoder, jax.tree.map(jnp.asarray, graph.arrays()), signals, target)
    dense = _jax_rate(_DenseChebEncoder(), jnp.asarray(text_graph.dense_laplacian(graph)),
                      signals, target)
    torch_out = _torch_rate(graph, signals, target)
    torch_rate = None
    if torch_out:
      torch_rate, version, threads = torch_out
      torch_note = f"PyTorch {version} (torch.sparse.mm), {threads} threads"
    rows.append((v, len(graph.rows), sparse, dense, torch_rate))
    print(f"V={v}: cmjax sparse {sparse * b:.0f} captions/s, dense {dense * b:.0f}, torch "
          f"{torch_rate * b if torch_rate else float('nan'):.0f}", flush=True)
  lines = [
      "# FGL text encoder (Chebyshev GCN) training throughput by vocabulary size",
      "",
      "Regenerate: `python -m benchmarks.gcn_text --output=reports/benchmark_gcn_text.md`",
      "",
      benchmarks.machine() + f" Peer: {torch_note}.",
      f"One training step of the text path: K={ORDER} Chebyshev terms, {FILTERS} filters, "
      f"dense {OUTPUTS} (tanh), Adam; batch {b} captions x {FLAGS.words} distinct words; "
      f"kNN word graph (k=8). Best of 3 windows of {FLAGS.steps} steps. Pairs/s counts the "
      f"{b} x {b} image/text pairs FGL scores per batch.",
      "",
      "| vocabulary V | graph entries | cmjax sparse captions/s | pairs/s | dense-L JAX "
      "captions/s | PyTorch sparse captions/s | cmjax / dense | cmjax / PyTorch |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for v, edges, sparse, dense, torch_rate in rows:
    lines.append(
        f"| {v:,} | {edges:,} | {sparse * b:,.0f} | {sparse * b * b:,.0f} | {dense * b:,.0f} | "
        + (f"{torch_rate * b:,.0f}" if torch_rate else "") + f" | {sparse / dense:.2f}x | "
        + (f"{sparse / torch_rate:.2f}x" if torch_rate else "") + " |")
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
