"""Figures: precision-recall curves."""

from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cmjax import files  # noqa: E402

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
  labels = list(dict.fromkeys(label for lines in curves.values() for label in lines))
  # Up to 20 distinct colours; beyond 10 lines, dashes tell neighbours apart, and
  # beyond 20 the markers change, so no two lines look the same.
  colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
  markers = (".", "x", "^", "s")
  style = {label: dict(color=colours(i % colours.N), linestyle="--" if i % 2 else "-",
                       marker=markers[(i // colours.N) % len(markers)])
           if len(labels) > 10 else dict(color=colours(i), marker=".")
           for i, label in enumerate(labels)}
  for ax, (direction, lines) in zip(axes[0], curves.items()):
    for label, (recall, precision) in lines.items():
      ax.plot(recall, precision, label=label, **style[label])
    ax.set(xlabel="recall", ylabel="precision", title=names.get(direction, direction),
           xlim=(0, 1), ylim=(0, 1))
    ax.grid(alpha=0.3)
  if len(labels) > 4:  # One shared legend beside the panels, off the curves.
    handles, names_ = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names_, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
  else:
    axes[0][-1].legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  try:
    files.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100,
                                                   bbox_inches="tight"), binary=True)
  finally:
    plt.close(fig)
  return path
