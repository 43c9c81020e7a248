r"""Benchmark: the UNCSM update step in cmjax against the same step in PyTorch.

  pip install -e ".[benchmark]"   # torch (CPU build: torch==2.13.0+cpu)
  python -m benchmarks.uncsm_step --output=reports/benchmark_uncsm.md

Measures, in one process on the same machine:
- steps/s of the stage-1 (contrastive) and stage-2 (double triplet) update
  steps: cmjax's real training step (`cmjax.train`: batches sampled on device,
  `--steps_per_call` steps fused in one jitted call) and the same model, loss,
  sampling and optimizer (SGD + momentum + weight decay) in plain PyTorch;
- the steps' achieved FLOP/s (matrix multiplies of forward and backward,
  counted analytically) against a large plain float32 matrix multiply
  (`--matmul_size`), in JAX and in PyTorch: the practical limit of the machine.

Every number is the median of `--repeats` timed windows after a warm-up.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from cmjax import data as data_lib
from cmjax import configs, sampling, train
from cmjax.methods import registry, uncsm
import benchmarks

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes to time.")
flags.DEFINE_integer("steps", 200, "Steps per timed window.")
flags.DEFINE_integer("repeats", 5, "Timed windows; the median is reported.")
flags.DEFINE_integer("steps_per_call", 100, "cmjax: steps fused per jitted call.")
flags.DEFINE_integer("matmul_size", 4096, "Side of the square matmul for peak FLOP/s.")
flags.DEFINE_string("full_run_dataset", "wikipedia",
                    "Also time one whole 3-stage UNCSM run (default recipe) on this dataset "
                    "(empty: skip).")
flags.DEFINE_string("output", None, "Markdown report to write (default: print only).")


def _median_rate(fn, work: float) -> float:
  """Runs `fn` (which does `work` units) `repeats` times; returns median units/s."""
  fn()  # Warm-up (compilation).
  rates = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    fn()
    rates.append(work / (time.perf_counter() - start))
  return statistics.median(rates)


def _step_flops(config: uncsm.UNCSMConfig, d_image: int, d_text: int, batch: int,
                stage: str) -> float:
  """Matmul FLOPs of one update step: forward 2*MACs, backward about 2x forward."""
  widths = list(config.hidden)
  path = lambda d: sum(a * b for a, b in zip([d] + widths[:-1], widths))
  if stage == "pretrain":  # One image and one text pass per pair.
    macs = batch * (path(d_image) + path(d_text))
  else:  # Anchor, positive and one negative per triplet, both branches.
    macs = 3 * batch * (path(d_image) + path(d_text))
    macs += 6 * batch * widths[-1] * config.branch_size
  return 3 * 2 * macs


def _cmjax_rate(config, stage_name, dataset, batch) -> float:
  config = configs.replace(config, training=dict(batch_size=batch))
  model = uncsm.pathway_model(config)
  x, z = dataset.train.image, dataset.train.text
  params = model.init(jax.random.key(0), x[:1], z[:1])
  make = uncsm.pretrain_stage if stage_name == "pretrain" else uncsm.finetune_stage
  stage = make(config, model, None)
  mesh = train.data_mesh()
  state = jax.device_put(train.init_state(params, stage.optimizer),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  data = train.replicate({"image": jnp.asarray(x), "text": jnp.asarray(z),
                          "index": sampling.label_index(dataset.train.labels, 10)}, mesh)
  run = train.make_update_fn(stage, mesh)
  key = jax.random.key(0)
  holder = {"state": state}

  def window():
    for _ in range(FLAGS.steps // FLAGS.steps_per_call):
      holder["state"], metrics = run(holder["state"], None, data, key, FLAGS.steps_per_call)
    jax.block_until_ready(metrics)

  return _median_rate(window, FLAGS.steps // FLAGS.steps_per_call * FLAGS.steps_per_call)


def _torch_rate(config, stage_name, dataset, batch) -> float:
  import torch
  from torch import nn

  torch.manual_seed(0)
  device = benchmarks.torch_device()
  act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[config.activation]

  def pathway(d):
    layers, width = [], d
    for i, w in enumerate(config.hidden):
      layers.append(nn.Linear(width, w))
      if i < len(config.hidden) - 1:
        layers.append(act())
      width = w
    return nn.Sequential(*layers).to(device)

  fi, ft = pathway(dataset.train.image.shape[1]), pathway(dataset.train.text.shape[1])
  bi = nn.Linear(config.hidden[-1], config.branch_size).to(device)
  bt = nn.Linear(config.hidden[-1], config.branch_size).to(device)
  parameters = [*fi.parameters(), *ft.parameters(), *bi.parameters(), *bt.parameters()]
  opt = torch.optim.SGD(parameters, lr=config.training.learning_rate, momentum=config.momentum,
                        weight_decay=config.training.weight_decay)
  x, z = (torch.from_numpy(a).to(device) for a in (dataset.train.image, dataset.train.text))
  labels = torch.from_numpy(dataset.train.labels.astype(np.int64)).to(device)
  order = torch.argsort(labels, stable=True)
  counts = torch.bincount(labels, minlength=10)
  offsets = torch.cumsum(counts, 0) - counts
  n = labels.shape[0]

  def positives(anchor_labels):
    r = torch.randint(0, 1 << 30, anchor_labels.shape, device=device) % counts[anchor_labels]
    return order[offsets[anchor_labels] + r]

  def negatives(anchor_labels):
    cand = torch.randint(0, n, (anchor_labels.shape[0], 8), device=device)
    pick = (labels[cand] != anchor_labels[:, None]).int().argmax(1)
    return cand[torch.arange(cand.shape[0], device=device), pick]

  def sqdist(a, b):
    return ((a - b) ** 2).sum(-1)

  def pretrain_step():
    a = torch.randint(0, n, (batch,), device=device)
    half = batch // 2
    partner = torch.cat([positives(labels[a[:half]]), negatives(labels[a[half:]])])
    rel = (labels[a] == labels[partner]).float()
    d2 = sqdist(fi(x[a]), ft(z[partner]))
    push = torch.relu(config.contrastive_margin - torch.sqrt(d2 + 1e-9)) ** 2
    return (rel * d2 + (1 - rel) * push).mean()

  def finetune_step():
    ia, ta = (torch.randint(0, n, (batch,), device=device) for _ in range(2))
    tp, ip = positives(labels[ia]), positives(labels[ta])
    tn, inn = negatives(labels[ia]), negatives(labels[ta])
    gi = lambda f: torch.sigmoid(bi(f))
    gt = lambda f: torch.sigmoid(bt(f))
    a_i, p_t, n_t = gi(fi(x[ia])), gi(ft(z[tp])), gi(ft(z[tn]))
    a_t, p_i, n_i = gt(ft(z[ta])), gt(fi(x[ip])), gt(fi(x[inn]))
    s_i = torch.relu(sqdist(a_i, p_t) - sqdist(a_i, n_t) + config.image_triplet_margin).mean()
    s_t = torch.relu(sqdist(a_t, p_i) - sqdist(a_t, n_i) + config.text_triplet_margin).mean()
    return s_i + s_t

  loss_fn = pretrain_step if stage_name == "pretrain" else finetune_step

  def window():
    for _ in range(FLAGS.steps):
      opt.zero_grad(set_to_none=True)
      loss = loss_fn()
      loss.backward()
      opt.step()
    float(loss)

  return _median_rate(window, FLAGS.steps)


def _matmul_flops() -> dict[str, float]:
  import torch

  n = FLAGS.matmul_size
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  mm = jax.jit(lambda a: a @ a)
  jax_rate = _median_rate(lambda: mm(a).block_until_ready(), 2 * n**3)
  device = benchmarks.torch_device()
  t = torch.randn(n, n, device=device)

  def torch_matmul():
    t @ t  # pylint: disable=pointless-statement
    benchmarks.torch_sync(device)

  torch_rate = _median_rate(torch_matmul, 2 * n**3)
  return {"jax": jax_rate, "torch": torch_rate}


def main(argv):
  benchmarks.start(argv)
  import torch

  dataset = data_lib.make_synthetic(num_train=2173, image_dim=128, text_dim=10)
  config = registry.make_config(registry.get("uncsm"), "paper")
  peak = _matmul_flops()
  rows = []
  for stage in ("pretrain", "finetune"):
    for batch in (int(b) for b in FLAGS.batch_sizes):
      jax_rate = _cmjax_rate(config, stage, dataset, batch)
      torch_rate = _torch_rate(config, stage, dataset, batch)
      flops = _step_flops(config, 128, 10, batch, stage)
      rows.append((stage, batch, jax_rate, torch_rate, flops))
      print(f"{stage} batch {batch}: cmjax {jax_rate:.1f} steps/s, torch {torch_rate:.1f} "
            f"steps/s ({jax_rate / torch_rate:.2f}x), cmjax {jax_rate * flops / 1e9:.1f} "
            f"GFLOP/s = {jax_rate * flops / peak['jax']:.0%} of matmul peak", flush=True)
  lines = [
      f"# UNCSM update step: cmjax vs PyTorch ({jax.default_backend()})",
      "",
      "Regenerate: `python -m benchmarks.uncsm_step --output=reports/benchmark_uncsm.md`",
      "",
      benchmarks.machine(),
      f"torch {torch.__version__} on {benchmarks.torch_device().type}, "
      f"{torch.get_num_threads()} threads.",
      f"Model: paper pathways {'-'.join(map(str, config.hidden))} ({config.activation}), 128-d image and "
      f"10-d text inputs, SGD + momentum + weight decay; batches sampled on the fly by label "
      f"in both. cmjax fuses {FLAGS.steps_per_call} steps per jitted call.",
      f"Peak: float32 {FLAGS.matmul_size}x{FLAGS.matmul_size} matmul, jax "
      f"{peak['jax'] / 1e9:.1f} GFLOP/s, torch {peak['torch'] / 1e9:.1f} GFLOP/s.",
      f"Median of {FLAGS.repeats} windows of {FLAGS.steps} steps.",
      "",
      "| stage | batch | cmjax steps/s | torch steps/s | cmjax / torch | step GFLOP | "
      "cmjax GFLOP/s | % of jax matmul peak | torch GFLOP/s |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for stage, batch, jr, tr, flops in rows:
    lines.append(f"| {stage} | {batch} | {jr:.1f} | {tr:.1f} | {jr / tr:.2f}x | "
                 f"{flops / 1e9:.3f} | {jr * flops / 1e9:.1f} | {jr * flops / peak['jax']:.0%} | "
                 f"{tr * flops / 1e9:.1f} |")
  if FLAGS.full_run_dataset:
    import tempfile
    with tempfile.TemporaryDirectory() as workdir:
      full = registry.run("uncsm", data_lib.load_dataset(FLAGS.full_run_dataset), workdir)
    stages = ", ".join(f"{k} {v['steps']} steps {v['wall_s']:.0f} s"
                       for k, v in full["stages"].items())
    lines += ["", f"One whole UNCSM run, default recipe, {FLAGS.full_run_dataset}, seed 0 "
              f"(loading, 3 stages with validation, test evaluation): {full['wall_s']:.0f} s "
              f"({stages}); test MAP avg {full['map']['avg']:.4f}."]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
