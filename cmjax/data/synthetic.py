"""A deterministic synthetic cross-modal dataset: the embedded default.

Each document has a class c and a latent point u = mu_c + difficulty * e in a
shared space; each modality sees u through its own random nonlinear map plus
its own noise. So both modalities carry the same class structure, the maps
differ (a common space must be learned), and `difficulty` moves the task from
easy (0.2) to near chance (3.0).
"""

from __future__ import annotations

import numpy as np

from cmjax.data.core import Dataset, Split, validate_split

__all__ = ["make_synthetic"]


def _modality(rng: np.random.Generator, latent: np.ndarray, dim: int) -> np.ndarray:
  weights = rng.normal(size=(latent.shape[1], dim)) / np.sqrt(latent.shape[1])
  bias = rng.normal(size=dim) * 0.1
  return weights, bias


def make_synthetic(
    num_train: int = 1000,
    num_test: int = 300,
    num_classes: int = 10,
    image_dim: int = 64,
    text_dim: int = 32,
    latent_dim: int = 16,
    difficulty: float = 1.0,
    multi_label: bool = False,
    seed: int = 0,
) -> Dataset:
  """Generates the dataset. Same arguments, same arrays.

  Args:
    num_train, num_test: pairs per split.
    num_classes: number of classes.
    image_dim, text_dim: feature dimensions of the two modalities.
    latent_dim: dimension of the shared latent space.
    difficulty: spread of items around their class centre (and modality noise).
    multi_label: if True, each document also gets a second random label and
      labels are multi-hot `[n, num_classes]`; its latent point is the mean of
      its classes' centres.
    seed: generator seed.

  Returns:
    `Dataset` named "synthetic" with `[n, image_dim]` and `[n, text_dim]` arrays.
  """
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, latent_dim)) * 1.5
  maps = [_modality(rng, centres, image_dim), _modality(rng, centres, text_dim)]
  splits = {}
  for name, n in (("train", num_train), ("test", num_test)):
    first = rng.integers(num_classes, size=n)
    if multi_label:
      second = rng.integers(num_classes, size=n)
      labels = np.zeros((n, num_classes), np.float32)
      labels[np.arange(n), first] = 1
      labels[np.arange(n), second] = 1
      centre = labels @ centres / labels.sum(1, keepdims=True)
    else:
      labels = first.astype(np.int32)
      centre = centres[first]
    latent = centre + difficulty * rng.normal(size=(n, latent_dim))
    image, text = (
        np.tanh(latent @ w + b) + 0.5 * difficulty * rng.normal(size=(n, w.shape[1]))
        for w, b in maps
    )
    split = Split(
        image=image.astype(np.float32),
        text=text.astype(np.float32),
        labels=labels,
        ids=np.array([f"{name}-{i}" for i in range(n)]),
    )
    splits[name] = validate_split(split, num_classes, "synthetic", name)
  return Dataset(
      name="synthetic",
      train=splits["train"],
      test=splits["test"],
      class_names=tuple(f"class_{c}" for c in range(num_classes)),
      metadata={"difficulty": difficulty, "seed": seed},
  )
