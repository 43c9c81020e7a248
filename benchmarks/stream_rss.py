r"""Peak memory of EMD-CNN on web_news pixels by number of devices: inputs placed on every
device, or streamed from the host (`--config.stream_inputs`).

  python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md

Each row is one `python -m experiments.emd_cnn --dataset=web_news` child process
(the image CNN on 64 x 64 pixels and the character CNN, `--steps` training steps)
on N simulated CPU devices (`--xla_force_host_platform_device_count=N`, so every
device's buffers are host memory and the child's peak RSS counts them all). With
the inputs placed on the devices, the training set is replicated on each one;
streamed, the rows stay on the host once and the devices hold a few batches. The
first rows measure the runtime alone (a jitted product on replicated arrays, in a
child process on the same device counts).
"""

from __future__ import annotations

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
      args = [sys.executable, "-m", "experiments.run", f"--method={FLAGS.method}",
              "--dataset=web_news", f"--workdir={workdir}", f"--config.steps={FLAGS.steps}",
              f"--config.eval_every={FLAGS.steps}", f"--config.stream_inputs={stream}",
              *([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else [])]
      wall, rss, status, last = benchmarks.run_child(args, env)
      rows.append(("streamed (grain)" if stream else "on every device", int(count), wall, rss,
                   status, last))
      print(f"stream_inputs={stream} devices={count}: {rss:.2f} GB, {wall:.0f} s, exit {status}",
            flush=True)
  lines = [
      "# Peak memory by number of devices: inputs on every device, or streamed",
      "",
      "Regenerate: `python -m benchmarks.stream_rss --output=reports/benchmark_stream_rss.md`",
      "",
      benchmarks.machine(),
      "",
      f"`python -m experiments.run --method={FLAGS.method} --dataset=web_news "
      f"--config.steps={FLAGS.steps}` on N simulated CPU devices; peak RSS is the child's "
      "`ru_maxrss` (every device's buffers are host memory here).",
      "",
      "| inputs | devices | peak RSS GB | growth from the fewest devices GB | wall s | exit |",
      "|---|---|---|---|---|---|",
  ]
  for inputs, count, wall, rss, status, last in rows:
    base = next(r[3] for r in rows if r[0] == inputs)
    lines.append(f"| {inputs} | {count} | {rss:.3f} | {rss - base:+.3f} | {wall:.0f} | "
                 f"{status if status == 0 else f'{status}: {last}'} |")
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
