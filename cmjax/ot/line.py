"""The exact EMD when both histograms' bins lie on one line: the L1 distance
between their cumulative distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.precision import float32_matmuls

__all__ = [
    "emd_on_line",
    "ground_cost_on_line",
    "pairwise_emd_on_line",
]


def ground_cost_on_line(m: int, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The fixed cost |i/(m-1) - j/(n-1)| and its bin positions.

  Returns:
    `(cost [m, n], x [m], y [n])` with `cost[i, j] = |x[i] - y[j]|`.
  """
  x = jnp.linspace(0.0, 1.0, m)
  y = jnp.linspace(0.0, 1.0, n)
  return jnp.abs(x[:, None] - y[None, :]), x, y


def _cdfs_on_grid(p: jax.Array, x: jax.Array, grid: jax.Array) -> jax.Array:
  """`[..., m]` histograms at positions `x` -> `[..., K]` CDF values at `grid`."""
  below = (x[:, None] <= grid[None, :]).astype(p.dtype)
  return p @ below


@float32_matmuls
def emd_on_line(p: jax.Array, q: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
  """Exact EMD of histograms on a line under |x_i - y_j|: `[..., m]`, `[..., n]` -> `[...]`.

  EMD = integral |F_p(t) - F_q(t)| dt, a finite sum over the merged positions.
  """
  grid = jnp.sort(jnp.concatenate([x, y]))
  widths = jnp.diff(grid)
  gap = _cdfs_on_grid(p, x, grid[:-1]) - _cdfs_on_grid(q, y, grid[:-1])
  return jnp.sum(jnp.abs(gap) * widths, axis=-1)


@jax.jit
def _line_block(cdf_block: jax.Array, item_cdfs: jax.Array, widths: jax.Array) -> jax.Array:
  """`[B, K]` query CDFs x `[N, K]` item CDFs -> `[B, N]` sum_k |F_p - F_q| widths_k."""
  return jnp.sum(jnp.abs(cdf_block[:, None, :] - item_cdfs[None]) * widths, axis=-1)


def _line_cdfs(histograms, positions: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """`[n, m]` histograms at `positions` -> `[n, K]` float32 CDFs at `grid` (float64 sums)."""
  below = (positions[:, None] <= grid[None, :]).astype(np.float64)
  return (np.asarray(histograms, np.float64) @ below).astype(np.float32)


def pairwise_emd_on_line(p: jax.Array, q: jax.Array, x: jax.Array, y: jax.Array,
                         chunk: int = 64) -> jax.Array:
  """Exact `[Q, N]` EMD of every `[Q, m]` query against every `[N, n]` item on a line.

  The CDFs at the merged positions are summed on the host in float64; the
  device compares `chunk` queries at a time against every item (a sum of
  |difference| x width: no matrix product, so no matmul precision to pin),
  queries and items padded on the host to whole blocks, so one compiled
  block serves every Q and every N up to the same multiple of `chunk`.
  Memory is O(chunk * N * (m + n)).

  Why the product is not on the device (XLA:CPU, jax 0.10.2): a `pad` of a
  matrix product's output fused into a broadcast |difference| reduction
  kills the process (SIGSEGV), e.g. under `jax.jit`, with Q = 2 or 20:

      fp = p @ b                                    # p [Q, 128], b [128, 137]
      block = jnp.pad(fp, ((0, 64 - Q), (0, 0)))    # [64, 137]
      jnp.sum(jnp.abs(block[:, None, :] - fq[None]), -1)   # fq [30, 137]

  The earlier form of this function did exactly that (tests/test_ot.py
  checks a grid of shapes against POT).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  grid = np.sort(np.concatenate([x, y]))
  widths = jax.device_put(np.diff(grid).astype(np.float32))
  fp, fq = _line_cdfs(p, x, grid[:-1]), _line_cdfs(q, y, grid[:-1])
  num_q, num_n = fp.shape[0], fq.shape[0]
  items = jax.device_put(np.pad(fq, ((0, -num_n % chunk), (0, 0))))
  queries = np.pad(fp, ((0, -num_q % chunk), (0, 0)))
  blocks = [np.asarray(_line_block(jax.device_put(queries[start:start + chunk]), items, widths))
            for start in range(0, len(queries), chunk)]
  # Sliced and placed on the host side: eager device ops (`jnp.asarray` included)
  # compile once per shape.
  return jax.device_put(np.concatenate(blocks)[:num_q, :num_n])
