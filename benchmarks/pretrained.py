r"""EfficientNet-Lite0 in cmjax: its conversion checked against PyTorch, its speed,
and the quality of its features on web_news.

  python -m benchmarks.pretrained --output=reports/benchmark_pretrained.md

Needs the `benchmark` extra (torch) and `tfds` (the ImageNet class names).

1. Conversion: the same weights file loaded by `torch.load` into a PyTorch
   EfficientNet-Lite0 written here (TensorFlow "SAME" padding, ReLU6, batch
   norm eps 1e-3, as the TensorFlow original), against cmjax's flax network on
   a fixed batch (matplotlib's sample photo of Grace Hopper and a noise image):
   largest difference of the pooled features and of the logits.
   `--fixture=tests/data/efficientnet_lite0_reference.npz` writes the batch and
   PyTorch's outputs, which `tests/test_pretrained.py` compares to (no torch
   needed there).
2. Speed: images/s of the forward pass, cmjax (jit, float32) against PyTorch
   (eager, `torch.inference_mode`, same threads), same batch, best of 3.
3. web_news: the time to compute the features of every image (decode,
   preprocess, network) with an empty cache, then the cache hit time; a linear
   probe (softmax regression on train, accuracy on test) of the 10 news
   categories on colour histograms against EfficientNet features; the top-5
   ImageNet classes of some web_news photos, shown next to them.
"""

from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

import benchmarks
from cmjax import data, features
from cmjax.data import web_news
from cmjax.pretrained import efficientnet

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "Markdown report to write (a figure goes beside it).")
flags.DEFINE_string("fixture", None, "Also write the reference batch and PyTorch's outputs "
                    "to this .npz (the test fixture).")
flags.DEFINE_string("data_dir", None, "web_news release (default as in the entry points).")
flags.DEFINE_integer("batch_size", 64, "Images per forward pass in the speed comparison.")
flags.DEFINE_integer("photos", 8, "web_news photos shown with their top-5 ImageNet classes.")


def _torch_model(path: str, device):
  """A PyTorch EfficientNet-Lite0 holding the file's weights (eval mode) on `device`."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  state = torch.load(path, map_location=device, weights_only=True)

  def conv_bn(x, conv, bn, stride=1, groups=1, act=True):
    weight = state[f"{conv}.weight"]
    padding = []
    for size, k in ((x.shape[3], weight.shape[3]), (x.shape[2], weight.shape[2])):
      before, after = efficientnet._same_padding(k, stride, size)  # pylint: disable=protected-access
      padding += [before, after]
    x = F.conv2d(F.pad(x, padding), weight, stride=stride, groups=groups)
    x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                     state[f"{bn}.weight"], state[f"{bn}.bias"], False, 0.0,
                     efficientnet.BATCH_NORM_EPSILON)
    return F.relu6(x) if act else x

  class Lite0(nn.Module):
    def forward(self, pixels):  # [B, 3, H, W] in [0, 255]
      x = conv_bn((pixels - 127.0) / 128.0, "_conv_stem", "_bn0", stride=2)
      index = 0
      for stage in efficientnet.STAGES:
        for repeat in range(stage.repeats):
          p, inputs = f"_blocks.{index}", x
          stride = stage.stride if repeat == 0 else 1
          if stage.expand != 1:
            x = conv_bn(x, f"{p}._expand_conv", f"{p}._bn0")
          x = conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", stride, groups=x.shape[1])
          x = conv_bn(x, f"{p}._project_conv", f"{p}._bn2", act=False)
          if stride == 1 and inputs.shape[1] == x.shape[1]:
            x = x + inputs
          index += 1
      features = conv_bn(x, "_conv_head", "_bn1").mean((2, 3))
      return features, F.linear(features, state["_fc.weight"], state["_fc.bias"])

  return Lite0().eval()


def _reference_batch() -> np.ndarray:
  """`[2, 224, 224, 3]` uint8: Grace Hopper (matplotlib's sample) and uniform noise."""
  import matplotlib.cbook  # pylint: disable=g-import-not-at-top
  with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as im:
    photo = efficientnet.preprocess(im)
  noise = np.random.default_rng(0).integers(0, 256, photo.shape, dtype=np.uint8)
  return np.stack([photo, noise])


def _torch_outputs(model, pixels: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
  """Features and logits on the host (copying them back waits for the device)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.inference_mode():
    features, logits = model(torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2).float())
  return features.cpu().numpy(), logits.cpu().numpy()


def _best_rate(run, batch: int) -> float:
  run()  # Compile / warm up.
  best = 0.0
  for _ in range(3):
    start = time.perf_counter()
    run()
    best = max(best, batch / (time.perf_counter() - start))
  return best


def _linear_probe(train_x, train_y, test_x, test_y, steps: int = 2000) -> float:
  """Test accuracy of softmax regression (standardised inputs, Adam, weight decay)."""
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  x, t = jnp.asarray((train_x - mean) / std), jnp.asarray((test_x - mean) / std)
  classes = int(train_y.max()) + 1
  params = (jnp.zeros((x.shape[1], classes)), jnp.zeros(classes))
  optimizer = optax.adamw(1e-2, weight_decay=1e-2)

  def loss(p):
    logits = x @ p[0] + p[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()

  @jax.jit
  def fit(params):
    def step(carry, _):
      p, s = carry
      updates, s = optimizer.update(jax.grad(loss)(p), s, p)
      return (optax.apply_updates(p, updates), s), None
    return jax.lax.scan(step, (params, optimizer.init(params)), None, steps)[0][0]

  p = fit(params)
  return float(jnp.mean(jnp.argmax(t @ p[0] + p[1], 1) == test_y))


def _top5_figure(photos, probabilities, names, path: str) -> str:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.datasets.siscore.labels import IMAGENET_LABELS_LIST  # pylint: disable=g-import-not-at-top
  cols = 4
  rows = -(-len(photos) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 5.2 * rows))
  for ax, photo, p, name in zip(np.ravel(axes), photos, probabilities, names):
    ax.imshow(photo)
    ax.set_axis_off()
    top = np.argsort(-p)[:5]
    lines = [f"{IMAGENET_LABELS_LIST[i].split(',')[0][:24]}  {p[i]:.2f}" for i in top]
    ax.set_title(name + "\n" + "\n".join(lines), fontsize=9, loc="left")
  for ax in np.ravel(axes)[len(photos):]:
    ax.set_axis_off()
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def main(argv):
  benchmarks.start(argv)
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  path = efficientnet.weights_path()
  variables = efficientnet.load_variables(path)
  cpu, device = torch.device("cpu"), benchmarks.torch_device()
  model = _torch_model(path, cpu)  # The float32 reference; the speed peer runs on `device`.
  lines = ["# EfficientNet-Lite0 (ImageNet) in cmjax", "",
           "Regenerate: `python -m benchmarks.pretrained --output=<this file>` "
           "(`--fixture=tests/data/efficientnet_lite0_reference.npz` rewrites the test "
           "fixture).", "", benchmarks.machine() + f" torch {torch.__version__}, "
           f"{torch.get_num_threads()} threads, PyTorch's speed peer on {device.type}.", ""]

  # 1. Conversion.
  batch = _reference_batch()
  want_features, want_logits = _torch_outputs(model, batch, cpu)
  got_features = np.asarray(efficientnet.image_features(batch, variables))
  got_logits = np.asarray(efficientnet.image_features(batch, variables, logits=True))
  if FLAGS.fixture:
    np.savez_compressed(FLAGS.fixture, pixels=batch, features=want_features, logits=want_logits)
  top = np.argsort(-want_logits[0])[:5]
  lines += ["## 1. Conversion against PyTorch", "",
            "The same `.pth` file: `torch.load` into a PyTorch Lite0 (this file) and "
            "`cmjax.pretrained.torch_file` + `efficientnet.convert_state_dict` into flax; batch: "
            "Grace Hopper (matplotlib's sample photo) and a noise image, float32.", "",
            "| output | max abs difference | max abs value |", "|---|---|---|",
            f"| pooled features [2, 1280] | {np.abs(got_features - want_features).max():.2e} | "
            f"{np.abs(want_features).max():.2f} |",
            f"| logits [2, 1000] | {np.abs(got_logits - want_logits).max():.2e} | "
            f"{np.abs(want_logits).max():.2f} |", "",
            f"Top-5 ImageNet classes of the photo (both): {', '.join(map(str, top))}; flax "
            f"{', '.join(map(str, np.argsort(-got_logits[0])[:5]))}.", ""]

  # 2. Speed.
  pixels = np.random.default_rng(1).integers(0, 256, (FLAGS.batch_size, 224, 224, 3),
                                             dtype=np.uint8)
  flax_rate = _best_rate(lambda: efficientnet.image_features(pixels, variables,
                                                             batch_size=FLAGS.batch_size),
                         FLAGS.batch_size)
  device_model = model if device == cpu else _torch_model(path, device)
  torch_rate = _best_rate(lambda: _torch_outputs(device_model, pixels, device),
                          FLAGS.batch_size)
  lines += ["## 2. Forward pass speed", "",
            f"Batch {FLAGS.batch_size}, 224 x 224, float32, best of 3 after a warm-up.", "",
            "| implementation | images/s |", "|---|---|",
            f"| cmjax (flax, jit; depthwise convolutions as shifted sums) | {flax_rate:.1f} |",
            f"| PyTorch (eager, inference_mode, {device.type}) | {torch_rate:.1f} |",
            f"| ratio cmjax / PyTorch | {flax_rate / torch_rate:.2f} |", ""]

  # 3. web_news.
  data_dir = FLAGS.data_dir or data.default_data_dir("web_news")
  raw, class_names, _, _ = web_news.load_web_news_raw(data_dir)
  n = sum(len(s.labels) for s in raw.values())
  with tempfile.TemporaryDirectory() as cache_dir:
    start = time.perf_counter()
    deep = web_news.efficientnet_features(data_dir, raw, cache_dir)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    web_news.efficientnet_features(data_dir, raw, cache_dir)
    hit = time.perf_counter() - start
  hist = {name: features.color_histogram(r.images, 4) for name, r in raw.items()}
  probe = {kind: _linear_probe(x["train"], raw["train"].labels, x["test"], raw["test"].labels)
           for kind, x in (("colour histograms (320-d)", hist),
                           ("EfficientNet-Lite0 features (1280-d)", deep))}
  lines += ["## 3. web_news", "",
            f"Features of all {n} web_news images (decode, resize 256, centre crop 224, "
            f"network), empty cache: {cold:.1f} s ({n / cold:.1f} images/s overall); "
            f"the same call with the cache filled (fingerprint of the release files, weights' "
            f"sha256, checksum of the entry): {hit:.2f} s.", "",
            "Linear probe of the 10 news categories (softmax regression on the "
            f"{len(raw['train'].labels)} training pairs' images, accuracy on the "
            f"{len(raw['test'].labels)} test images; chance {1 / len(class_names):.2f}):", "",
            "| image features | test accuracy |", "|---|---|",
            *(f"| {kind} | {acc:.3f} |" for kind, acc in probe.items()), ""]
  if FLAGS.output:
    test = raw["test"]
    chosen = np.linspace(0, len(test.labels) - 1, FLAGS.photos).round().astype(int)
    decoded, *_ = web_news.load_web_news_raw(data_dir, transform=efficientnet.preprocess)
    photos = decoded["test"].images[chosen]
    probabilities = np.asarray(jax.nn.softmax(efficientnet.image_features(
        photos, variables, logits=True)))
    names = [f"test {decoded['test'].ids[i]} ({class_names[decoded['test'].labels[i]]})"
             for i in chosen]
    figure = _top5_figure(photos, probabilities, names,
                          os.path.splitext(FLAGS.output)[0] + "_top5.png")
    lines += [f"Top-5 ImageNet classes of {FLAGS.photos} test photos (evenly spaced in the "
              "test list), with their probabilities:", "",
              f"![top-5 classes]({os.path.basename(figure)})", ""]
  benchmarks.write_report(lines, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
