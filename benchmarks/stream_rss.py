r"""Memory of EMD-CNN on web_news pixels by number of devices: inputs placed on every
device, or streamed from the host (`--config.stream_inputs`).

  python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md

Each row is one child process running EMD-CNN on web_news (the image CNN on
64 x 64 pixels and the character CNN, `--steps` training steps, as
`python -m experiments.run` does) on N simulated CPU devices
(`--xla_force_host_platform_device_count=N`). Two measures:

- device bytes: the most bytes that live arrays hold summed over every device's
  copy (`addressable_shards`), sampled at each validation of the stage. An
  array replicated on 8 devices counts 8 times: this is what 8 accelerators
  would hold. With the inputs placed on the devices the training set is
  replicated on each one; streamed, the devices hold a few batches.
- peak RSS: the child's `ru_maxrss`, which also counts the runtime's own work on
  every simulated device, so it is not a measure of the arrays alone (the first
  rows: the runtime with a jitted product on replicated arrays, nothing of cmjax).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import app, flags

import benchmarks

FLAGS = flags.FLAGS
# The runtime's own growth with the device count: a jitted product on arrays replicated
# over every device, nothing of cmjax.
_BARE = ("import jax, numpy as np; from jax.sharding import Mesh, NamedSharding, PartitionSpec; "
         "m = Mesh(np.asarray(jax.devices()), ('data',)); "
         "x = jax.device_put(np.ones((64, 64), np.float32), NamedSharding(m, PartitionSpec())); "
         "jax.jit(lambda a: (a @ a).sum())(x).block_until_ready()")
# One run of the method, as `experiments.run` does it, that prints the most device bytes
# held at any validation (every device's copy counted) as its last line.
_RUN = """
import json, sys, jax
from cmjax import data, runner, train
from cmjax.methods import registry
method, data_dir, workdir, steps, stream = json.loads(sys.argv[1])
spec = registry.get(method)
config = registry.make_config(spec, "default", steps=steps,
                              training=dict(eval_every=steps // 4), stream_inputs=stream)
dataset = registry.load_data(spec, config, "web_news", data_dir, data.FeatureChoice(None, None))
held = []
def record(stage, step, scores):
  held.append(sum(s.data.nbytes for a in jax.live_arrays() for s in a.addressable_shards))
runner.run(spec, config, dataset, workdir, loop=train.LoopConfig(on_validation=record))
print("device_bytes", max(held))
"""
flags.DEFINE_list("devices", ["1", "4", "8"], "Simulated device counts.")
flags.DEFINE_string("method", "emd_cnn_cosine", "EMD-CNN method (the cosine control row "
                    "skips the Sinkhorn ranking, which does not depend on the inputs' placement).")
flags.DEFINE_integer("steps", 40, "Training steps of each run.")
flags.DEFINE_string("data_dir", None, "web_news release (default: the usual lookup).")
flags.DEFINE_string("scratch", None, "Folder for the workdirs (default: a new temp dir).")
flags.DEFINE_string("output", None, "Markdown report to write.")


def main(argv):
  benchmarks.start(argv)
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix="cmjax_stream_rss_")
  rows = []
  for count in FLAGS.devices:  # The runtime alone: a jitted product on replicated arrays.
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
    wall, rss, status, last = benchmarks.run_child([sys.executable, "-c", _BARE], env)
    rows.append(("runtime alone", int(count), wall, rss, status, last))
  for stream in (False, True):
    for count in FLAGS.devices:
      workdir = os.path.join(scratch, f"{'stream' if stream else 'device'}_{count}")
      env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")
      args = [sys.executable, "-c", _RUN,
              json.dumps([FLAGS.method, FLAGS.data_dir, workdir, FLAGS.steps, stream])]
      wall, rss, status, last = benchmarks.run_child(args, env)
      rows.append(("streamed (grain)" if stream else "on every device", int(count), wall, rss,
                   status, last))
      print(f"stream_inputs={stream} devices={count}: {rss:.2f} GB, {wall:.0f} s, exit {status}",
            flush=True)
  lines = [
      "# Memory by number of devices: inputs on every device, or streamed",
      "",
      "Regenerate: `python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md`",
      "",
      benchmarks.machine(),
      "",
      f"{FLAGS.method} on web_news pixels, its `default` preset with `steps={FLAGS.steps}`, on "
      "N simulated CPU devices. Device GB: the most bytes live arrays held at a validation, "
      "every device's copy counted (what N accelerators would hold). Peak RSS: the child's "
      "`ru_maxrss`, which also counts the runtime's work on every simulated device.",
      "",
      "| inputs | devices | device GB | growth GB | peak RSS GB | growth GB | wall s | exit |",
      "|---|---|---|---|---|---|---|---|",
  ]
  held = lambda last: (float(last.split()[1]) / 2**30 if last.startswith("device_bytes ")
                       else float("nan"))
  for inputs, count, wall, rss, status, last in rows:
    *_, first_rss, _, first_last = next(r for r in rows if r[0] == inputs)
    device = ("-", "-") if inputs == "runtime alone" else (
        f"{held(last):.3f}", f"{held(last) - held(first_last):+.3f}")
    lines.append(f"| {inputs} | {count} | {device[0]} | {device[1]} | {rss:.3f} | "
                 f"{rss - first_rss:+.3f} | {wall:.0f} | "
                 f"{status if status == 0 else f'{status}: {last}'} |")
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
