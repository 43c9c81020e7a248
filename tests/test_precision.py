"""Matrix products whose guarantee needs float32 are pinned to HIGHEST precision.

Each function is lowered under a bfloat16 default (a TPU's), and every
`dot_general` of its program must carry `precision = [HIGHEST, HIGHEST]`; on a
CPU the test fails just the same when a product is left at the default.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import evaluation, hashing, ot, similarity
from cmjax.ot import certified


def _precisions(fn, *args) -> list[str]:
  """The precision of every matrix product of `fn(*args)` as lowered under bfloat16."""
  with jax.default_matmul_precision("bfloat16"):
    text = jax.jit(fn).lower(*args).as_text()
  lines = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
  found = [re.search(r"precision = \[(\w+), (\w+)\]", line) for line in lines]
  return [m.group(1) if m and m.group(1) == m.group(2) else "DEFAULT" for m in found]


def _histograms(rows, bins, seed=0):
  x = np.random.default_rng(seed).random((rows, bins)).astype(np.float32) + 0.1
  return jnp.asarray(x / x.sum(1, keepdims=True))


P, Q = _histograms(6, 8), _histograms(6, 5, seed=1)
COST = jnp.asarray(np.random.default_rng(2).random((8, 5)).astype(np.float32))
VECTORS = jnp.ones((4, 3)), jnp.ones((5, 3))
# (ott-jax's Sinkhorn, `ot.sinkhorn_emd`, works in the log domain: no matrix product.)
CASES = {
    "cosine": (similarity.cosine, *VECTORS),
    "normalized_correlation": (similarity.normalized_correlation, *VECTORS),
    "euclidean_distance": (similarity.euclidean_distance, *VECTORS),
    "relevance (multi-hot)": (evaluation.relevance, jnp.eye(4, 3), jnp.eye(5, 3)),
    "codes_score": (hashing.codes_score, *VECTORS),
    "emd_on_line": (ot.emd_on_line, P, _histograms(6, 8, seed=3), jnp.linspace(0, 1, 8),
                    jnp.linspace(0, 1, 8)),
    "shared_cost_sinkhorn scaling": (functools.partial(
        ot.shared_cost_sinkhorn, config=ot.SinkhornConfig(epsilon=0.1), domain="scaling"),
        P, Q, COST),
    "shared_cost_sinkhorn log": (functools.partial(
        ot.shared_cost_sinkhorn, config=ot.SinkhornConfig(epsilon=0.1), domain="log"),
        P, Q, COST),
    "certified block": (functools.partial(
        certified._certified_block, config=ot.SemidualConfig(), queries_per_block=6),
        P, Q, ot.reduce_cost(COST)[0]),
    "independent_lower_bound": (ot.independent_lower_bound, P, Q, COST),
    "centroid_lower_bound": (ot.centroid_lower_bound, P, Q, jnp.ones((8, 2)), jnp.ones((5, 2))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_matrix_product_is_float32(name):
  fn, *args = CASES[name]
  precisions = _precisions(fn, *args)
  assert precisions, f"{name}: no matrix product found (the check would see nothing)"
  assert set(precisions) == {"HIGHEST"}, f"{name}: {precisions}"


def test_the_check_sees_an_unpinned_product():
  assert _precisions(lambda a, b: a @ b.T, *VECTORS) == ["DEFAULT"]
