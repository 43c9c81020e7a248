"""Matrix products at full float32 precision where a result's guarantee needs it.

JAX's default matrix-product precision is TF32 on recent NVIDIA GPUs and one
bfloat16 pass on TPUs. The exact EMD on a line, the certified bounds, Sinkhorn
in the scaling domain, the Newton steps, Hamming distances by products and the
similarity scores that the evaluation ranks are derived for float32, so the
functions that compute them are wrapped by `float32_matmuls`: every matrix
product traced inside them is at HIGHEST precision whatever the default
(`tests/test_precision.py` checks the lowered programs).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import jax

__all__ = ["float32_matmuls"]

F = TypeVar("F", bound=Callable)


def float32_matmuls(fn: F) -> F:
  """`fn`, traced (or run) with `jax.default_matmul_precision("highest")`.

  Under `jax.jit`, put it below the `jit` decorator, so that the context is
  active while the function is traced.
  """
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision("highest"):
      return fn(*args, **kwargs)
  return wrapped
