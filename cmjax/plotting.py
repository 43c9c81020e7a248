"""Figures: precision-recall curves."""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_pr_curves"]


def plot_pr_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    path: str,
    title: str = "",
) -> str:
  """Draws one panel per direction, one line per method; writes `path` atomically.

  Args:
    curves: `{direction: {label: (recall [R], precision [R])}}`, e.g.
      `{"i2t": {"uncsm": (r, p)}, "t2i": {...}}`.
    path: PNG file to write.
    title: figure title.
  """
  names = {"i2t": "Image -> Text", "t2i": "Text -> Image"}
  fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
  for ax, (direction, lines) in zip(axes[0], curves.items()):
    for label, (recall, precision) in lines.items():
      ax.plot(recall, precision, marker=".", label=label)
    ax.set(xlabel="recall", ylabel="precision", title=names.get(direction, direction),
           xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)
  return path
