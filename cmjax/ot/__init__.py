"""Earth mover's distance between histograms of different sizes, on ott-jax.

EMD(p, q; D) = min_F <F, D> over F >= 0 with row sums p (`[m]`) and column
sums q (`[n]`), for a ground cost D (`[m, n]`).

- `sinkhorn_emd`: entropic OT with ott-jax's Sinkhorn solver; returns the
  transport cost <F_eps, D> of the entropic plan, differentiable in p, q and D
  (implicit differentiation of the fixed point, or unrolled iterations), and
  whether the solver converged. `batched_sinkhorn_emd` maps it over pairs.
- `ground_cost_on_line`, `emd_on_line`: the fixed ground cost
  |i/(m-1) - j/(n-1)| puts both histograms' bins on one line, where the EMD has
  an exact closed form, the L1 distance between the two cumulative
  distributions; `pairwise_emd_on_line` evaluates all Q x N pairs at once.
- `shared_cost_sinkhorn`: many problems under one shared ground cost solved
  together, each iteration one batched operation (log or scaling domain);
  what EMD-CNN trains with.
- `certified_emd`: every query against every item under one general ground
  cost, with a certificate per problem: a lower bound (dual value) and an
  upper bound (a feasible plan's cost). The semi-dual over the potentials of
  the smaller side, damped Newton with epsilon scaling, a fixed budget.
  `certified_topk` makes top-k retrieval exact by solving only the pairs
  whose bounds straddle the k-th (`exact_emd`: POT, else SciPy's HiGHS).
- `pairwise_emd`: the `[Q, N]` EMD matrix by any of the solvers above (the
  certified one by default); `centroid_lower_bound` and
  `independent_lower_bound` are cheap lower bounds, and `topk_emd` uses them to
  skip exact computations that cannot change the top k.
- `learned_ground_cost`: a learned positive, scale-normalised matrix, or
  distances between learned bin embeddings.

Modules, one concept each: `entropic` (Sinkhorn), `line` (exact on a line),
`certified` (the certified semi-dual solver), `topk` (exact top-k and the
exact reference solver), `pairwise` (the retrieval matrix by any solver, lower
bounds), `costs` (learned ground costs). Everything above is importable from
`cmjax.ot` itself.
"""

from cmjax.ot.certified import EMDBounds, SemidualConfig, certified_emd
from cmjax.ot.costs import learned_ground_cost
from cmjax.ot.entropic import (EMDResult, SinkhornConfig, batched_sinkhorn_emd, reduce_cost,
                               shared_cost_sinkhorn, sinkhorn_emd)
from cmjax.ot.line import emd_on_line, ground_cost_on_line, pairwise_emd_on_line
from cmjax.ot.pairwise import centroid_lower_bound, independent_lower_bound, pairwise_emd
from cmjax.ot.topk import TopK, certified_topk, exact_emd, exact_plan, topk_emd

__all__ = [
    "EMDResult",
    "SinkhornConfig",
    "batched_sinkhorn_emd",
    "centroid_lower_bound",
    "emd_on_line",
    "EMDBounds",
    "SemidualConfig",
    "TopK",
    "certified_emd",
    "certified_topk",
    "exact_emd",
    "exact_plan",
    "ground_cost_on_line",
    "independent_lower_bound",
    "learned_ground_cost",
    "pairwise_emd",
    "pairwise_emd_on_line",
    "reduce_cost",
    "shared_cost_sinkhorn",
    "sinkhorn_emd",
    "topk_emd",
]
