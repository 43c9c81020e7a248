r"""EMD-CNN presets (Zuo et al. 2020) and of its control rows.

  python -m experiments.emd_cnn --dataset=web_news
  python -m experiments.emd_cnn --method=emd_cnn_cosine --config=cmjax/configs/emd_cnn.py:quick

- `default`: 16 image bins, 8 text bins, a learned cost matrix, triplet loss
  with margin 0.1, epsilon 0.1 (reports/emd_cnn.md holds the variants tried
  on validation).
- `finetune`: the image tower fine-tuned from ImageNet EfficientNet-Lite0 (its
  last 2 blocks and head; web_news), texts as TF-IDF.
- `quick`: tiny networks and 100 steps (smoke runs); not for reporting.

The `distance` field is fixed by the method name (emd_cnn: emd,
emd_cnn_cosine: cosine, emd_cnn_euclidean: euclidean).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cmjax import configs, data


@dataclasses.dataclass(frozen=True)
class EMDCNNConfig:
  """Every setting of an EMD-CNN run; presets in `cmjax/configs/emd_cnn.py`.

  Attributes:
    distance: cross-modal dissimilarity: EMD between histograms of different
      sizes (the method), or the cosine / Euclidean control rows (equal sizes);
      fixed by the method name (emd_cnn, emd_cnn_cosine, emd_cnn_euclidean).
    image_bins: histogram size of the image network (also both sizes of the controls).
    text_bins: histogram size of the text network (EMD only).
    ground_cost: EMD ground cost: fixed |i/(m-1) - j/(n-1)|, a learned positive
      matrix, or distances of learned bin embeddings; all scaled to mean 1.
    cost_embedding_dim: dimension of the bin embeddings of ground_cost=embedding.
    epsilon: entropic regularisation of the Sinkhorn EMD, in units of the mean cost.
    sinkhorn_iterations: Sinkhorn iterations unrolled in each training step.
    sinkhorn_domain: training Sinkhorn updates: scaling (fast; needs max cost /
      epsilon <= 40), log-sum-exp (stable for any epsilon), or auto (scaling
      when safe, decided each step).
    eval_max_iterations: Sinkhorn iteration budget when ranking a database.
    eval_threshold: marginal error at which retrieval Sinkhorn stops;
      non-converged problems are counted in a warning.
    loss: margin loss over the batch's image/text pairs: hinge on every
      relevant / irrelevant pair per anchor (triplet), or contrastive.
    margin: margin of the loss (distances have mean cost 1).
    encoder: network: learned encoders; identity: the (histogram) input
      features are the histograms and only the ground cost is learned.
    hidden: feature MLP hidden widths.
    activation: feature MLP activation.
    dropout: dropout before each network's output layer(s).
    image_channels: image CNN: channels of the stride-2 3x3 convolutions.
    char_embedding: text CNN: character embedding size.
    text_widths: text CNN: convolution widths (characters).
    text_filters: text CNN: filters per width.
    pixels_chars: how the `pixels_chars` view (web_news, encoder=network) is
      loaded: `max_chars`, `char_vocab` (`cmjax.data.PixelsCharsOptions`).
    finetune_blocks: 0, or an image tower fine-tuned from ImageNet
      EfficientNet-Lite0 (raw images: web_news): its last `finetune_blocks`
      MBConv blocks and head convolution, then the feature MLP, trained with the
      rest; the blocks below stay frozen and run once (their output maps are
      the cached image inputs). Texts: TF-IDF features. (The frozen network
      alone is `--image_features=efficientnet` with 0.)
    finetune_learning_rate_scale: learning rate of the fine-tuned pretrained
      layers, as a multiple of `training.learning_rate`.
    tower_dtype: compute dtype of the image and text networks: bfloat16 is
      fast on TPUs and recent GPUs (emulated, slow, on CPU); parameters,
      histograms, the ground cost and the Sinkhorn EMD stay float32.
    training: AdamW learning rate and weight decay, the batch (documents a
      step; all batch_size^2 image/text pairs are scored), validation cadence
      and patience.
    steps: training steps.
    stream_inputs: the training inputs stay on the host and every step's batch is
      streamed to the devices (`cmjax.sources.HostSource`, grain: each epoch a new
      permutation, each process reading its share, prefetched), instead of placing
      the training set on every device and sampling rows there (with
      replacement). For pixels and feature maps at scale: device memory holds a
      few batches whatever the number of devices. Other batches, so other numbers
      than the default.
    prepare: the feature transform (feature datasets, network encoder;
      pixels and characters are never transformed) and the validation split.
  """

  distance: Literal["emd", "cosine", "euclidean"] = "emd"
  image_bins: int = 16
  text_bins: int = 8
  ground_cost: Literal["fixed", "matrix", "embedding"] = "matrix"
  cost_embedding_dim: int = 4
  epsilon: float = 0.1
  sinkhorn_iterations: int = 50
  sinkhorn_domain: Literal["auto", "scaling", "log"] = "auto"
  eval_max_iterations: int = 2000
  eval_threshold: float = 1e-3
  loss: Literal["triplet", "contrastive"] = "triplet"
  margin: float = 0.1
  encoder: Literal["network", "identity"] = "network"
  hidden: tuple[int, ...] = (512,)
  activation: Literal["relu", "sigmoid", "tanh"] = "relu"
  dropout: float = 0.2
  image_channels: tuple[int, ...] = (16, 32, 64)
  char_embedding: int = 32
  text_widths: tuple[int, ...] = (2, 3, 4)
  text_filters: int = 64
  pixels_chars: data.PixelsCharsOptions = data.PixelsCharsOptions()
  finetune_blocks: int = 0
  finetune_learning_rate_scale: float = 0.1
  tower_dtype: Literal["float32", "bfloat16"] = "float32"
  training: configs.TrainingConfig = configs.TrainingConfig(batch_size=32)
  steps: int = 2000
  stream_inputs: bool = False
  prepare: configs.PrepareConfig = configs.PrepareConfig()

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(
        self, "cost_embedding_dim", "epsilon", "sinkhorn_iterations", "eval_max_iterations",
        "eval_threshold", "hidden", "image_channels", "char_embedding", "text_widths",
        "text_filters", "steps")
    configs.check_non_negative(self, "margin", "finetune_blocks")
    configs.check_positive(self, "finetune_learning_rate_scale")
    if self.finetune_blocks > 16:
      raise configs.ConfigError(f"config field 'finetune_blocks' must be <= 16 (EfficientNet-"
                                f"Lite0 has 16 MBConv blocks), got {self.finetune_blocks}")
    if self.finetune_blocks and self.encoder != "network":
      raise configs.ConfigError("config field 'finetune_blocks' needs encoder='network'")
    configs.check_fraction(self, "dropout")
    configs.check_nonempty(self, "hidden", "image_channels", "text_widths")
    for name in ("image_bins", "text_bins"):
      if getattr(self, name) < 2:
        raise configs.ConfigError(f"config field '{name}' must be >= 2 (a histogram needs "
                                  f"two bins), got {getattr(self, name)}")

  @property
  def bins(self) -> tuple[int, int]:
    """(image, text) output sizes: different for EMD, equal for the controls."""
    if self.distance == "emd":
      return self.image_bins, self.text_bins
    return self.image_bins, self.image_bins


PRESETS = {
    "default": {},
    "finetune": dict(finetune_blocks=2),
    "quick": {"hidden": (32,), "image_channels": (8, 16), "text_filters": 16, "steps": 100,
              "training.eval_every": 50},
}


# What `python -m experiments.tune` samples, over the default preset: the networks'
# training, the triplet margin, the histogram sizes and, for the EMD itself, its
# ground cost and Sinkhorn settings. The control rows tune the same fields but
# those of the EMD, so that EMD vs cosine is compared at equal effort.
_EMD_CNN_SPACE = {
        "training.learning_rate": configs.Float(1e-4, 3e-3, log=True),
        "training.weight_decay": configs.Float(1e-6, 1e-2, log=True),
        "dropout": configs.Float(0.0, 0.5),
        "hidden": configs.Choice(((256,), (512,), (1024,))),
        "margin": configs.Float(0.02, 1.0, log=True),
        "image_bins": configs.Choice((8, 16, 32)),
        "text_bins": configs.Choice((4, 8, 16)),
        "steps": configs.Int(1000, 4000, step=500),
}
SEARCH_SPACES = {
    "emd_cnn": {**_EMD_CNN_SPACE,
                "ground_cost": configs.Choice(("fixed", "matrix", "embedding")),
                "epsilon": configs.Float(0.01, 0.5, log=True),
                "sinkhorn_iterations": configs.Int(20, 200, log=True)},
    "emd_cnn_cosine": _EMD_CNN_SPACE,
    "emd_cnn_euclidean": _EMD_CNN_SPACE,
}


def get_config(preset: str = "default"):
  return configs.preset_config(EMDCNNConfig, PRESETS, preset, __file__)
