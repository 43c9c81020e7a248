"""Figures: precision-recall curves; retrieval examples as HTML (photos and
captions side by side, for notebooks: a browser renders Chinese captions, which
matplotlib's default fonts cannot)."""

from __future__ import annotations

import base64
import html
import io
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cmjax import files  # noqa: E402

__all__ = ["image_to_texts_html", "photo_html", "plot_codes", "plot_pair_weights",
           "plot_pr_curves", "plot_transport_plan", "text_to_images_html"]


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
  # Curves often lie on each other: besides its colour, every line has its own dash
  # pattern and marker, so a hidden one still shows between the marks of another.
  colours = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
  markers = (".", "x", "^", "s", "v", "d")
  dashes = ("-", "--", "-.", ":")
  style = {label: dict(color=colours(i % colours.N), linestyle=dashes[i % len(dashes)],
                       marker=markers[(i // len(dashes) + i) % len(markers)], markersize=4)
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
  return _save(fig, path)


def _save(fig, path: str) -> str:
  try:
    files.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100,
                                                   bbox_inches="tight"), binary=True)
  finally:
    plt.close(fig)
  return path


def plot_transport_plan(p: np.ndarray, q: np.ndarray, plan: np.ndarray, path: str,
                        title: str = "") -> str:
  """An image histogram `[m]` (left), a text histogram `[n]` (top) and the optimal
  transport plan `[m, n]` between them (heat map); writes `path` atomically."""
  fig = plt.figure(figsize=(8, 6))
  grid = fig.add_gridspec(2, 3, width_ratios=(1, 4, 0.15), height_ratios=(1, 4), wspace=0.05,
                          hspace=0.05)
  heat = fig.add_subplot(grid[1, 1])
  shown = heat.imshow(plan, aspect="auto", cmap="magma_r", interpolation="nearest")
  fig.colorbar(shown, cax=fig.add_subplot(grid[1, 2]), label="mass moved (image bin -> text bin)")
  heat.set(xlabel=f"text bin (of {len(q)})")
  heat.set_xticks(_bin_ticks(len(q)))
  heat.tick_params(labelleft=False)
  top = fig.add_subplot(grid[0, 1], sharex=heat)
  top.bar(np.arange(len(q)), q, color="tab:orange")
  top.set(ylabel="text\nhistogram")
  top.tick_params(labelbottom=False)
  left = fig.add_subplot(grid[1, 0], sharey=heat)
  left.barh(np.arange(len(p)), p, color="tab:blue")
  left.invert_xaxis()
  left.set(xlabel="image\nhistogram", ylabel=f"image bin (of {len(p)})")
  left.set_yticks(_bin_ticks(len(p)))
  if title:
    fig.suptitle(title)
  return _save(fig, path)


def _bin_ticks(num_bins: int, most: int = 16) -> np.ndarray:
  """Tick positions for `num_bins` bins: every bin, or every k-th for many."""
  return np.arange(0, num_bins, max(1, -(-num_bins // most)))


def plot_codes(codes: np.ndarray, labels: np.ndarray, class_names, path: str,
               title: str = "") -> str:
  """Binary codes `[n, bits]` (+-1) as rows of black and white, grouped by class
  (`labels` `[n]`); writes `path` atomically."""
  order = np.argsort(labels, kind="stable")
  fig, ax = plt.subplots(figsize=(8, min(10, max(3, len(codes) / 30))))
  ax.imshow(codes[order] > 0, aspect="auto", cmap="gray_r", interpolation="nearest")
  ends = np.flatnonzero(np.diff(labels[order])) + 0.5
  for end in ends:
    ax.axhline(end, color="tab:red", linewidth=1)
  starts = np.concatenate([[0], np.ceil(ends)])
  ax.set_yticks(starts, [class_names[labels[order][int(i)]] for i in starts], fontsize=7)
  ax.set(xlabel="bit", ylabel=f"{len(codes)} items, grouped by class")
  key = [matplotlib.patches.Patch(facecolor=c, edgecolor="grey", label=name)
         for c, name in (("black", "bit = +1"), ("white", "bit = -1"))]
  ax.legend(handles=key, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
  if title:
    ax.set_title(title)
  return _save(fig, path)


def plot_pair_weights(weights: np.ndarray, labels: np.ndarray, path: str,
                      title: str = "") -> str:
  """Histograms of `[n, n]` pair weights (FGL's fine-grained labels) over the
  same-class and the different-class pairs of `[n]` labels (the diagonal left
  out); writes `path` atomically."""
  relevant = labels[:, None] == labels[None, :]
  off_diagonal = ~np.eye(len(labels), dtype=bool)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  bins = np.linspace(weights.min(), weights.max(), 41)
  for mask, name, color in ((relevant, "same class (relevant)", "tab:green"),
                            (~relevant, "different class (irrelevant)", "tab:red")):
    ax.hist(weights[mask & off_diagonal], bins=bins, density=True, alpha=0.6, color=color,
            label=f"{name}: {int((mask & off_diagonal).sum())} pairs")
  ax.set(xlabel="pair weight in the matching loss", ylabel="density")
  ax.legend()
  if title:
    ax.set_title(title)
  return _save(fig, path)


def photo_html(pixels: np.ndarray, size: int = 128, border: str = "none") -> str:
  """An `<img>` of `[H, W, 3]` uint8 pixels (inline PNG), `size` px wide."""
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
  data = base64.b64encode(buffer.getvalue()).decode()
  return (f'<img src="data:image/png;base64,{data}" width="{size}" '
          f'style="border:{border};margin:2px">')


def _mark(relevant: bool) -> str:
  return '<b style="color:#2a2">&#10003;</b>' if relevant else '<b style="color:#c22">&#10007;</b>'


def image_to_texts_html(photos: np.ndarray, texts: Sequence[str], labels: np.ndarray,
                        class_names: Sequence[str], queries: Sequence[int],
                        ranked: np.ndarray, max_chars: int = 80) -> str:
  """A table: each query photo, then its top retrieved captions (relevant or not).

  Args:
    photos: `[N, H, W, 3]` uint8 test photos.
    texts: the N test captions.
    labels: `[N]` class ids (relevant = same class).
    class_names: a name per class id.
    queries: the query rows.
    ranked: `[len(queries), k]` retrieved caption rows, best first.
    max_chars: captions are cut to this many characters (marked with ...).
  """
  rows = []
  for query, top in zip(queries, ranked):
    items = "".join(
        f"<li>{_mark(labels[i] == labels[query])} [{html.escape(class_names[labels[i]])}] "
        f"{html.escape(texts[i][:max_chars])}{'...' if len(texts[i]) > max_chars else ''}</li>"
        for i in top)
    rows.append(f"<tr><td>{photo_html(photos[query])}<br>"
                f"{html.escape(class_names[labels[query]])}</td><td><ol>{items}</ol></td></tr>")
  return "<table>" + "".join(rows) + "</table>"


def text_to_images_html(photos: np.ndarray, texts: Sequence[str], labels: np.ndarray,
                        class_names: Sequence[str], queries: Sequence[int],
                        ranked: np.ndarray, max_chars: int = 160) -> str:
  """A table: each query caption, then its top retrieved photos (green border:
  relevant, red: not). Arguments as `image_to_texts_html`."""
  rows = []
  for query, top in zip(queries, ranked):
    images = "".join(photo_html(photos[i], 96, "3px solid " + (
        "#2a2" if labels[i] == labels[query] else "#c22")) for i in top)
    caption = html.escape(texts[query][:max_chars]) + ("..." if len(texts[query]) > max_chars
                                                      else "")
    rows.append(f"<tr><td style='max-width:320px'>[{html.escape(class_names[labels[query]])}] "
                f"{caption}</td><td>{images}</td></tr>")
  return "<table>" + "".join(rows) + "</table>"
