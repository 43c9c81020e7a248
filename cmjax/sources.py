"""Training batches streamed from the host (grain), for inputs too large for every device.

A stage reads its batches in one of two ways:

- from device-resident arrays, through its sampler (`train.Stage.sample_fn`): the
  training set is placed once, replicated, and every step samples on device.
  Right for feature vectors.
- from a `HostSource`: the rows of host arrays (pixels, feature maps) stay on the
  host; every epoch is a new permutation (grain), `batch_size` rows a step, of
  which each process gathers only its own share in background threads, with
  prefetch, and places it on its devices already sharded over `'data'`
  (`jax.make_array_from_process_local_data`). Device memory holds a few batches,
  not the training set, whatever the number of devices.

The batch of step s depends only on the seed and s, so a resumed stage reads on
from where it stopped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

import jax
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np

from cmjax.checks import ConfigError

__all__ = ["HostSource", "stacked_batches"]


@dataclasses.dataclass(frozen=True, eq=False)
class HostSource:
  """Batches of rows of host arrays, reshuffled every epoch, prefetched (grain).

  Attributes:
    arrays: `{name: [n, ...]}` host arrays with one row per training item (they
      stay on the host).
    batch_size: rows a step, over all processes (each reads `batch_size /
      process_count` of them).
    seed: the permutations' seed.
    threads: threads gathering rows.
    prefetch: batches read ahead.
  """

  arrays: Mapping[str, np.ndarray]
  batch_size: int
  seed: int = 0
  threads: int = 4
  prefetch: int = 8

  def __post_init__(self):
    lengths = {name: len(array) for name, array in self.arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"HostSource: arrays of different lengths {lengths}")
    if not 0 < self.batch_size <= self.num_rows:
      raise ConfigError(f"HostSource: a batch of {self.batch_size} rows from "
                        f"{self.num_rows} rows")

  @property
  def num_rows(self) -> int:
    return len(next(iter(self.arrays.values())))

  def shape_of_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch's shapes and dtypes."""
    return {name: jax.ShapeDtypeStruct((self.batch_size, *a.shape[1:]), a.dtype)
            for name, a in self.arrays.items()}

  def local_batches(self, first_step: int, num_steps: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of the batches of steps `first_step` .. `num_steps - 1`.

    Raises:
      ConfigError: a batch that does not split over the processes.
    """
    try:
      import grain  # pylint: disable=import-outside-toplevel  (the [stream] extra)
    except ImportError:
      raise ConfigError("streamed inputs need grain: pip install 'cmjax[stream]'") from None

    process, count = jax.process_index(), jax.process_count()
    if self.batch_size % count:
      raise ConfigError(f"a batch of {self.batch_size} rows does not split over {count} "
                        "processes")
    local = self.batch_size // count
    epochs = -(-num_steps * self.batch_size // self.num_rows)
    arrays = self.arrays
    rows = (grain.MapDataset.range(self.num_rows).shuffle(seed=self.seed).repeat(epochs)
            .batch(self.batch_size, drop_remainder=True))[first_step:num_steps]
    batches = rows.map(lambda ids: {name: array[np.sort(ids[process * local:(process + 1)
                                                            * local])]
                                    for name, array in arrays.items()})
    options = grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.prefetch)
    return iter(batches.to_iter_dataset(options))


def stacked_batches(batches: Iterator[dict[str, np.ndarray]], num_steps: int,
                    mesh: jax.sharding.Mesh) -> Any:
  """The next `num_steps` local batches as `[num_steps, batch, ...]` device arrays,
  the batch axis sharded over `'data'` (every process contributes its rows)."""
  local = [next(batches) for _ in range(num_steps)]
  sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
  return {name: jax.make_array_from_process_local_data(
              sharding, np.stack([batch[name] for batch in local]))
          for name in local[0]}
