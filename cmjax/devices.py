"""Where host arrays go: onto every device of the run's mesh, explicitly.

`runner.run` sets its `'data'` mesh as JAX's current mesh (`jax.set_mesh`) for the
fit and the evaluation; `put` places host arrays (a split's inputs, labels, block
indices) replicated over it, so they meet the parameters, which live on that
mesh, in every process (with several processes a single-device array would not).
Outside a run (no mesh set) they go to JAX's default device. These explicit
uploads are the only ones: the training loop and the evaluation's blocks run
under `jax.transfer_guard_host_to_device("disallow")`. `put_rows` splits rows over the
mesh instead, for row-by-row work (a split's inputs to encode).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

__all__ = ["put", "put_rows", "replicated", "split_rows"]


def put(tree: Any, mesh: jax.sharding.Mesh | None = None) -> Any:
  """`tree` on the devices: host leaves replicated over `mesh` (default: the current
  mesh; the default device when none is set); device arrays stay as they are."""
  mesh = jax.sharding.get_mesh() if mesh is None else mesh
  target = None if mesh.empty else NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, target),
                      tree)


def put_rows(array: np.ndarray,
             mesh: jax.sharding.Mesh | None = None) -> tuple[jax.Array, int]:
  """A host array `[n, ...]` on the devices with its rows split over `mesh`'s (default:
  the current mesh's) `'data'` axis (the last row repeated up to a multiple of the
  mesh size), and n.

  For work that is row by row (encoders): each device computes its rows only.
  Without a mesh, the default device holds all of them.
  """
  array = np.asarray(array)
  mesh = jax.sharding.get_mesh() if mesh is None else mesh
  if mesh.empty or mesh.size == 1:
    return put(array, mesh), len(array)
  pad = -len(array) % mesh.size
  if pad:
    array = np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])
  return jax.device_put(array, NamedSharding(mesh, PartitionSpec("data"))), len(array) - pad


def replicated(tree: Any) -> Any:
  """`tree`'s device arrays replicated over the current mesh (an all-gather of those
  whose rows are split, e.g. by `put_rows`); host leaves are `put`."""
  mesh = jax.sharding.get_mesh()
  if mesh.empty:
    return put(tree)
  target = NamedSharding(mesh, PartitionSpec())
  gather = jax.jit(lambda x: x, out_shardings=target)
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) and x.sharding.is_fully_replicated
                      else gather(put(x)), tree)


def split_rows(tree: Any) -> Any:
  """Inside a jitted function: `tree`'s arrays with their rows split over the current
  mesh's `'data'` axis (a sharding constraint), so that each device computes its
  rows of what follows; unchanged without a mesh of several devices or when the rows
  do not divide evenly."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or "data" not in mesh.axis_names:
    return tree
  rows = NamedSharding(mesh, PartitionSpec("data"))
  return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, rows)
                      if x.shape and x.shape[0] % mesh.size == 0 else x, tree)
