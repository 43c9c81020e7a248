"""Where host arrays go: onto every device of the run's mesh, explicitly.

`runner.run` sets its `'data'` mesh as JAX's current mesh (`jax.set_mesh`) for the
fit and the evaluation; `put` places host arrays (a split's inputs, labels, block
indices) replicated over it, so they meet the parameters, which live on that
mesh, in every process (with several processes a single-device array would not).
Outside a run (no mesh set) they go to JAX's default device. These explicit
uploads are the only ones: the training loop and the evaluation's blocks run
under `jax.transfer_guard_host_to_device("disallow")`.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["put"]


def put(tree: Any) -> Any:
  """`tree` on the devices: host leaves replicated over the current mesh (the default
  device when none is set); device arrays stay as they are."""
  mesh = jax.sharding.get_mesh()
  target = None if mesh.empty else NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x, target),
                      tree)
