"""cmjax.ot against POT's exact network simplex, and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import ot as pot
import pytest

from cmjax import ot

jax.config.update("jax_enable_x64", False)

def _histograms(rng, count, bins):
  logits = rng.normal(size=(count, bins))
  return (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)

def _exact(p, q, cost):
  """`[Q, N]` exact EMDs by POT's network simplex, in float64."""
  return np.array([[pot.emd2(a.astype(np.float64), b.astype(np.float64),
                             np.asarray(cost, np.float64)) for b in q] for a in p])

@pytest.mark.parametrize("m, n", [(7, 4), (12, 5), (20, 9)])
def test_sinkhorn_emd_close_to_exact(m, n):
  rng = np.random.default_rng(m)
  p, q = _histograms(rng, 1, m)[0], _histograms(rng, 1, n)[0]
  cost = rng.random((m, n)).astype(np.float32)
  result = ot.sinkhorn_emd(jnp.asarray(p), jnp.asarray(q), jnp.asarray(cost))
  exact = pot.emd2(p.astype(np.float64), q.astype(np.float64), cost.astype(np.float64))
  assert bool(result.converged) and float(result.error) < 1e-3
  assert float(result.cost) == pytest.approx(exact, rel=1e-2)

@pytest.mark.parametrize("mode", ["implicit", "unrolled"])
def test_gradients_match_finite_differences(mode):
  rng = np.random.default_rng(0)
  p, q = _histograms(rng, 1, 12)[0], _histograms(rng, 1, 5)[0]
  cost = rng.random((12, 5)).astype(np.float32)
  config = ot.SinkhornConfig(epsilon=0.05, differentiation=mode, threshold=1e-6)
  f = lambda a, b, c: ot.sinkhorn_emd(a, b, c, config).cost
  gp, gq, gc = jax.grad(f, argnums=(0, 1, 2))(p, q, cost)
  dp = p * rng.normal(size=12).astype(np.float32) * 1e-2
  dp -= p * dp.sum()  # Stay on the simplex (zero total change).
  dq = q * rng.normal(size=5).astype(np.float32) * 1e-2
  dq -= q * dq.sum()
  dc = rng.normal(size=(12, 5)).astype(np.float32) * 1e-2
  for grad, base, direction, argnum in ((gp, p, dp, 0), (gq, q, dq, 1), (gc, cost, dc, 2)):
    args = [p, q, cost]
    plus, minus = list(args), list(args)
    plus[argnum], minus[argnum] = base + direction, base - direction
    finite = (f(*plus) - f(*minus)) / 2
    assert float(jnp.sum(grad * direction)) == pytest.approx(float(finite), rel=0.05, abs=2e-5)

def test_implicit_and_unrolled_gradients_agree():
  rng = np.random.default_rng(1)
  p, q = _histograms(rng, 1, 10)[0], _histograms(rng, 1, 6)[0]
  cost = rng.random((10, 6)).astype(np.float32)
  grads = [jax.grad(lambda c, mode=mode: ot.sinkhorn_emd(
      p, q, c, ot.SinkhornConfig(epsilon=0.05, differentiation=mode, threshold=1e-5)).cost)(cost)
           for mode in ("implicit", "unrolled")]
  np.testing.assert_allclose(grads[0], grads[1], atol=1e-3)

def test_exact_emd_on_line_matches_pot():
  rng = np.random.default_rng(2)
  cost, x, y = ot.ground_cost_on_line(128, 10)
  p, q = _histograms(rng, 9, 128), _histograms(rng, 7, 10)
  exact = _exact(p, q, cost)
  np.testing.assert_allclose(ot.pairwise_emd_on_line(p, q, x, y, chunk=4), exact, atol=1e-5)
  np.testing.assert_allclose(ot.emd_on_line(p[0], q[3], x, y), exact[0, 3], atol=1e-5)

def test_line_emd_every_shape_of_a_grid_matches_pot():
  """Q in 1..40 queries x N in 1..40 and 47..100 (every 13th) items, Dirichlet
  histograms, 128 vs 10 bins.

  The earlier form crashed the interpreter (SIGSEGV) at Q in {2, 10, 20, 21,
  32} with N = 30: an XLA:CPU fusion of a padded matrix product into the
  |difference| reduction (the reproduction is in `pairwise_emd_on_line`'s
  docstring). POT solves the 40 x 100 problems once; each shape's queries and
  items are its leading rows, so its exact EMDs are the leading block.
  """
  rng = np.random.default_rng(9)
  cost, x, y = ot.ground_cost_on_line(128, 10)
  p = rng.dirichlet(np.ones(128), 40).astype(np.float32)
  q = rng.dirichlet(np.ones(10), 100).astype(np.float32)
  exact = _exact(p, q, cost)
  worst = 0.0
  for num_q in range(1, 41):
    for num_n in [*range(1, 41), *range(47, 101, 13), 100]:
      got = np.asarray(ot.pairwise_emd_on_line(p[:num_q], q[:num_n], x, y))
      assert got.shape == (num_q, num_n)
      worst = max(worst, float(np.max(np.abs(got - exact[:num_q, :num_n]))))
  assert worst < 1e-5, worst

def test_pairwise_sinkhorn_and_convergence_report():
  rng = np.random.default_rng(3)
  cost, x, y = ot.ground_cost_on_line(16, 6)
  p, q = _histograms(rng, 5, 16), _histograms(rng, 4, 6)
  approx = np.asarray(ot.pairwise_emd(jnp.asarray(p), jnp.asarray(q), cost, ot.SinkhornConfig(),
                                      chunk=7))
  exact = np.asarray(ot.pairwise_emd_on_line(p, q, x, y))
  np.testing.assert_allclose(approx, exact, rtol=0.02, atol=2e-3)
  with pytest.raises(FloatingPointError, match="did not converge"):
    ot.pairwise_emd(jnp.asarray(p), jnp.asarray(q), cost,
                    ot.SinkhornConfig(epsilon=1e-3, max_iterations=20))

@pytest.mark.parametrize("domain", ["log", "scaling"])
@pytest.mark.parametrize("m, n", [(16, 8), (9, 13)])
def test_shared_cost_sinkhorn_matches_exact_and_ott(domain, m, n):
  rng = np.random.default_rng(m + n)
  p, q = _histograms(rng, 6, m), _histograms(rng, 6, n)
  p[0, :m // 2] = 0.0  # Empty bins.
  p[0] /= p[0].sum()
  cost = rng.random((m, n)).astype(np.float32) + 0.5  # No zero in any row: exercises the reduction.
  config = ot.SinkhornConfig(epsilon=0.02, max_iterations=1000, threshold=1e-4)
  shared = ot.shared_cost_sinkhorn(p, q, cost, config, domain=domain, early_stop=True)
  exact = [pot.emd2(a.astype(np.float64), b.astype(np.float64), cost.astype(np.float64))
           for a, b in zip(p, q)]
  assert bool(jnp.all(shared.converged))
  np.testing.assert_allclose(shared.cost, exact, rtol=0.02)
  by_ott = ot.batched_sinkhorn_emd(p, q, cost, ot.SinkhornConfig(epsilon=0.02, threshold=1e-4))
  np.testing.assert_allclose(shared.cost, by_ott.cost, rtol=2e-3)


def test_shared_cost_sinkhorn_gradients_match_finite_differences():
  rng = np.random.default_rng(7)
  p, q = _histograms(rng, 3, 10), _histograms(rng, 3, 6)
  cost = rng.random((10, 6)).astype(np.float32)
  config = ot.SinkhornConfig(epsilon=0.05, max_iterations=300)
  for domain in ("log", "scaling"):
    f = lambda a, b, c: jnp.sum(ot.shared_cost_sinkhorn(a, b, c, config, domain=domain).cost)
    grads = jax.grad(f, argnums=(0, 1, 2))(p, q, cost)
    directions = (p * rng.normal(size=p.shape).astype(np.float32) * 1e-3,
                  q * rng.normal(size=q.shape).astype(np.float32) * 1e-3,
                  rng.normal(size=cost.shape).astype(np.float32) * 1e-3)
    for argnum, (grad, direction) in enumerate(zip(grads, directions)):
      if argnum < 2:  # Stay on the simplex.
        direction = direction - (p, q)[argnum] * direction.sum(-1, keepdims=True)
      plus, minus = [p, q, cost], [p, q, cost]
      plus[argnum] = plus[argnum] + direction
      minus[argnum] = minus[argnum] - direction
      finite = (f(*plus) - f(*minus)) / 2
      assert float(jnp.sum(grad * direction)) == pytest.approx(float(finite), rel=0.02, abs=2e-6)


def test_scaling_domain_reports_underflow_as_not_converged():
  rng = np.random.default_rng(8)
  p, q = _histograms(rng, 4, 12), _histograms(rng, 4, 5)
  cost = rng.random((12, 5)).astype(np.float32) * 50
  out = ot.shared_cost_sinkhorn(p, q, cost, ot.SinkhornConfig(epsilon=1e-2, max_iterations=50),
                                domain="scaling")
  assert not bool(jnp.any(out.converged))


@pytest.mark.parametrize("solver", ["shared_cost", "ott"])
def test_pairwise_emd_solvers_agree_with_exact(solver):
  rng = np.random.default_rng(9)
  cost, x, y = ot.ground_cost_on_line(20, 7)
  p, q = _histograms(rng, 6, 20), _histograms(rng, 5, 7)
  for epsilon in (0.01, 0.025):  # Log domain (cost / eps = 100), then scaling (40).
    approx = ot.pairwise_emd(jnp.asarray(p), jnp.asarray(q), cost,
                             ot.SinkhornConfig(epsilon=epsilon), chunk=8, solver=solver)
    np.testing.assert_allclose(approx, ot.pairwise_emd_on_line(p, q, x, y), rtol=0.03, atol=3e-3)


def test_lower_bounds_and_topk_pruning():
  rng = np.random.default_rng(4)
  image_points, text_points = rng.normal(size=(12, 2)), rng.normal(size=(5, 2))
  cost = np.linalg.norm(image_points[:, None] - text_points[None], axis=-1)
  p, q = _histograms(rng, 30, 12), _histograms(rng, 40, 5)
  exact = _exact(p, q, cost)
  centroid = np.asarray(ot.centroid_lower_bound(p, q, image_points, text_points))
  independent = np.asarray(ot.independent_lower_bound(p, q, jnp.asarray(cost)))
  assert np.all(centroid <= exact + 1e-5) and np.all(independent <= exact + 1e-5)
  bound = np.maximum(centroid, independent)
  top, distances, evaluations = ot.topk_emd(bound, lambda r, c: exact[r, c], k=3)
  np.testing.assert_array_equal(top, np.argsort(exact, 1, kind="stable")[:, :3])
  np.testing.assert_allclose(distances, np.sort(exact, 1)[:, :3])
  assert evaluations < exact.size  # Some pairs were never computed.

@pytest.mark.parametrize("kind", ["matrix", "embedding"])
def test_learned_ground_cost_is_positive_and_normalised(kind):
  rng = np.random.default_rng(5)
  params = ({"logits": jnp.asarray(rng.normal(size=(6, 4)) - 5)} if kind == "matrix" else
            {"image_points": jnp.asarray(rng.normal(size=(6, 3))),
             "text_points": jnp.asarray(rng.normal(size=(4, 3)))})
  cost = ot.learned_ground_cost(params, kind)
  assert cost.shape == (6, 4) and bool(jnp.all(cost > 0))
  assert float(jnp.mean(cost)) == pytest.approx(1.0, rel=1e-5)
  grads = jax.grad(lambda prm: ot.sinkhorn_emd(
      jnp.full(6, 1 / 6), jnp.full(4, 1 / 4), ot.learned_ground_cost(prm, kind)).cost)(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_auto_domain_keeps_values_and_gradients_finite():
  # Peaked softmax histograms and a cost whose range / epsilon breaks the scaling domain.
  rng = np.random.default_rng(10)
  logits_p = jnp.asarray(rng.normal(size=(64, 16)) * 10, jnp.float32)
  logits_q = jnp.asarray(rng.normal(size=(64, 8)) * 10, jnp.float32)
  config = ot.SinkhornConfig(epsilon=0.05, max_iterations=100)
  for scale in (2.0, 8.0):  # Scaling domain, then log domain.
    cost = jnp.asarray(rng.random((16, 8)) ** 3 * scale, jnp.float32)
    f = lambda a, b, c: jnp.sum(ot.shared_cost_sinkhorn(
        jax.nn.softmax(a), jax.nn.softmax(b), c, config).cost)
    value, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(logits_p, logits_q, cost)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    log = ot.shared_cost_sinkhorn(jax.nn.softmax(logits_p), jax.nn.softmax(logits_q), cost,
                                  config, domain="log")
    np.testing.assert_allclose(f(logits_p, logits_q, cost), jnp.sum(log.cost), rtol=1e-4)


def _sparse_histograms(rng, count, bins, zeros=0.3):
  """Histograms with about `zeros` of their bins empty (as SIFT bag-of-words are)."""
  h = _histograms(rng, count, bins) * (rng.random((count, bins)) > zeros)
  h[:, 0] += 1e-3  # No all-zero row.
  return (h / h.sum(1, keepdims=True)).astype(np.float32)



@pytest.fixture(scope="module")
def general_cost_problem():
  rng = np.random.default_rng(11)
  cost = rng.uniform(0.1, 1.0, (24, 6))
  p, q = _sparse_histograms(rng, 8, 24), _histograms(rng, 30, 6)
  return p, q, cost, _exact(p, q, cost)


@pytest.mark.parametrize("config", [ot.SemidualConfig(),
                                    ot.SemidualConfig(epsilons=(0.2,), newton_steps=1)])
def test_certified_emd_bounds_bracket_exact(general_cost_problem, config):
  # The certificates hold whatever the iterations achieved (one step included).
  p, q, cost, exact = general_cost_problem
  bounds = ot.certified_emd(p, q, cost, config)
  assert bounds.lower.shape == bounds.upper.shape == exact.shape
  assert np.all(bounds.lower <= exact + 1e-5) and np.all(bounds.upper >= exact - 1e-5)
  np.testing.assert_array_equal(bounds.value, bounds.lower)
  if config == ot.SemidualConfig():  # The default budget is close to exact.
    assert np.mean(np.abs(bounds.value - exact) / exact) < 0.01
    assert np.median(bounds.gap / exact) < 0.05


def test_certified_emd_is_scale_free_and_default_of_pairwise_emd(general_cost_problem):
  p, q, cost, _ = general_cost_problem
  bounds = ot.certified_emd(p, q, cost)
  scaled = ot.certified_emd(p, q, cost * 100)
  # Epsilon is relative to the cost: the same iterations up to float32 rounding.
  np.testing.assert_allclose(scaled.lower, bounds.lower * 100, rtol=5e-3)
  np.testing.assert_allclose(scaled.upper, bounds.upper * 100, rtol=2e-2)
  np.testing.assert_allclose(ot.pairwise_emd(jnp.asarray(p), jnp.asarray(q), cost),
                             bounds.value, rtol=1e-6)
  # Items in several chunks and queries in several blocks give the same bounds.
  chunked = ot.certified_emd(p, q, cost, ot.SemidualConfig(item_chunk=7, pairs_per_block=14))
  np.testing.assert_allclose(chunked.lower, bounds.lower, rtol=1e-5)


def test_certified_topk_is_exact_and_refines_only_the_straddling_pairs(general_cost_problem):
  p, q, cost, exact = general_cost_problem
  calls = []
  def exact_fn(rows, cols):
    calls.append(len(rows))
    return exact[rows, cols]
  top = ot.certified_topk(ot.certified_emd(p, q, cost), exact_fn, k=5)
  brute = np.argsort(exact, 1, kind="stable")[:, :5]
  assert [set(a) for a in top.indices] == [set(b) for b in brute]
  np.testing.assert_allclose(top.distances[top.exact], exact[
      np.arange(len(p))[:, None].repeat(5, 1)[top.exact], top.indices[top.exact]])
  assert top.refined == sum(calls) < exact.size
  # Useless bounds: everything straddles, everything is solved, still exact.
  useless = ot.EMDBounds(value=np.zeros_like(exact), lower=np.zeros_like(exact),
                         upper=np.full_like(exact, 10.0))
  top = ot.certified_topk(useless, exact_fn, k=5)
  np.testing.assert_array_equal(top.indices, brute)
  assert top.refined == exact.size and top.exact.all()


def test_exact_emd_without_pot_uses_highs(general_cost_problem, monkeypatch):
  p, q, cost, exact = general_cost_problem
  rows, cols = np.array([0, 3, 7]), np.array([1, 29, 4])
  np.testing.assert_allclose(ot.exact_emd(p[rows], q[cols], cost), exact[rows, cols], rtol=1e-6)
  monkeypatch.setitem(__import__("sys").modules, "ot", None)  # `import ot` now fails.
  np.testing.assert_allclose(ot.exact_emd(p[rows], q[cols], cost), exact[rows, cols], rtol=1e-6)


def test_semidual_config_is_validated():
  with pytest.raises(ValueError, match="decrease"):
    ot.SemidualConfig(epsilons=(0.05, 0.1))
  with pytest.raises(ValueError, match="overflow"):
    ot.SemidualConfig(epsilons=(0.1, 0.005))
  with pytest.raises(ValueError, match="one positive count per epsilon"):
    ot.SemidualConfig(newton_steps=(1, 2))
  with pytest.raises(TypeError, match="SemidualConfig"):
    ot.pairwise_emd(jnp.ones((1, 3)) / 3, jnp.ones((1, 2)) / 2, jnp.ones((3, 2)),
                    ot.SinkhornConfig(), solver="certified")


def test_exact_plan_has_the_marginals_and_the_exact_cost():
  rng = np.random.default_rng(0)
  p, q = rng.dirichlet(np.ones(7)), rng.dirichlet(np.ones(4))
  cost = rng.random((7, 4))
  plan = ot.exact_plan(p, q, cost)
  np.testing.assert_allclose(plan.sum(1), p, atol=1e-9)
  np.testing.assert_allclose(plan.sum(0), q, atol=1e-9)
  assert plan.min() >= -1e-12
  np.testing.assert_allclose(np.sum(plan * cost), pot.emd2(p, q, cost), rtol=1e-7)
