"""Closed-form cross-modal baselines: CCA, CFA, KCCA, semantic matching, SCM.

Each `fit_*` takes the training pairs and returns a `Projection`: a pair of
functions mapping image and text features into a common space in which the two
modalities are compared by a similarity (`cosine` or `normalized_correlation`).

- CCA (Hotelling 1936), regularised: maximise corr(X a, Z b); solved by
  whitening each modality with (C + r I)^(-1/2) and an SVD of the whitened
  cross-covariance.
- CFA, cross-modal factor analysis (Li et al. 2003): minimise
  ||X A - Z B||_F with orthonormal A, B; the SVD of X^T Z.
- KCCA (polynomial or RBF kernel): CCA in a Nystroem feature space (m
  landmarks), the usual low-rank solution, so that it scales past a few
  thousand items.
- SM, semantic matching (Rasiwasia et al. 2010): per-modality multinomial
  logistic regression; items are compared by the normalised correlation of
  their class-probability vectors.
- SCM, semantic correlation matching: CCA first, then SM on the CCA space.

The family is data: `VARIANTS` maps each method name to its `LinearVariant`
(how it fits, whether it has a ridge to choose), and one `fit` serves all of
them; every variant is registered from this module.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Literal

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import data as data_lib
from cmjax import devices, preprocess, runner
from cmjax import similarity as similarity_lib
from cmjax.configs.linear import LinearConfig
from cmjax.methods import registry
from cmjax.precision import float32_matmuls

__all__ = [
    "LinearConfig",
    "LinearVariant",
    "METHODS",
    "Projection",
    "VARIANTS",
    "fit",
    "fit_cca",
    "fit_cfa",
    "fit_kcca",
    "fit_scm",
    "fit_sm",
    "similarity",
]

Similarity = similarity_lib.Similarity


@dataclasses.dataclass(frozen=True)
class Projection:
  """Maps both modalities into one space.

  Attributes:
    image: `[n, d_image] -> [n, k]`.
    text: `[n, d_text] -> [n, k]`.
    similarity: how two projected items are compared.
    correlations: `[k]` canonical correlations on train, where defined.
  """

  image: Callable[[jax.Array], jax.Array]
  text: Callable[[jax.Array], jax.Array]
  similarity: Similarity = "cosine"
  correlations: np.ndarray | None = None

  def validation(self, split: data_lib.Split) -> runner.Validation:
    """These projections on a validation split (they have no parameters to pass)."""
    model = runner.Model(encode_image=lambda params, v: self.image(v),
                         encode_text=lambda params, v: self.text(v),
                         score=lambda params, a, b: similarity_lib.pairwise(self.similarity, a, b))
    return runner.Validation(model, split.image, split.text, split.labels)

  def fitted(self, **kwargs) -> runner.Fitted:
    """The runner's view: these projections are the encoders (on device, in blocks),
    their similarity the block scorer; `kwargs` are further `runner.Fitted` fields."""
    blocks = lambda fn: functools.partial(runner.in_blocks, jax.jit(fn))
    return runner.Fitted(encode_image=blocks(self.image), encode_text=blocks(self.text),
                         score=functools.partial(similarity_lib.pairwise, self.similarity),
                         **kwargs)


def _affine(mean: np.ndarray, matrix: np.ndarray) -> Callable[[jax.Array], jax.Array]:
  """`v [n, d] -> (v - mean) @ matrix` on device: a map fitted in float64 on the host,
  uploaded once and applied in float32 at full precision (traceable)."""
  mean, matrix = devices.put((np.float32(mean), np.float32(matrix)))
  return float32_matmuls(lambda v: (jnp.asarray(v, jnp.float32) - mean) @ matrix)


def similarity(a: np.ndarray, b: np.ndarray, kind: Similarity) -> np.ndarray:
  """`[Q, k] x [N, k] -> [Q, N]` cosine or normalised (centred) correlation, as NumPy."""
  return np.asarray(similarity_lib.pairwise(kind, a, b))


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh(c)
  return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


def _center(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mean = x.mean(0)
  return x - mean, mean


def fit_cca(x: np.ndarray, z: np.ndarray, k: int, reg: float = 1e-3) -> Projection:
  """Regularised CCA.

  Args:
    x: `[n, d_x]` image features; z: `[n, d_z]` text features (paired rows).
    k: number of canonical directions kept (at most min(d_x, d_z)).
    reg: ridge added to each covariance, relative to its mean eigenvalue.

  Returns:
    projections onto the top-k canonical directions; `correlations` holds the
    k canonical correlations.
  """
  x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
  xc, mx = _center(x)
  zc, mz = _center(z)
  n = x.shape[0]
  cxx, czz, cxz = xc.T @ xc / n, zc.T @ zc / n, xc.T @ zc / n
  cxx += reg * np.trace(cxx) / len(cxx) * np.eye(len(cxx))
  czz += reg * np.trace(czz) / len(czz) * np.eye(len(czz))
  wx, wz = _inverse_sqrt(cxx), _inverse_sqrt(czz)
  u, s, vt = np.linalg.svd(wx @ cxz @ wz)
  k = min(k, len(s))
  a, b = wx @ u[:, :k], wz @ vt[:k].T
  return Projection(image=_affine(mx, a), text=_affine(mz, b), correlations=s[:k])


def fit_cfa(x: np.ndarray, z: np.ndarray, k: int) -> Projection:
  """Cross-modal factor analysis: orthonormal A, B minimising ||X A - Z B||_F."""
  x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
  xc, mx = _center(x)
  zc, mz = _center(z)
  u, _, vt = np.linalg.svd(xc.T @ zc, full_matrices=False)
  k = min(k, u.shape[1])
  a, b = u[:, :k], vt[:k].T
  return Projection(image=_affine(mx, a), text=_affine(mz, b))


def _kernel(kind: str, a: np.ndarray, b: np.ndarray, gamma: float, degree: int,
            xp=np) -> np.ndarray:
  """`[n, d] x [m, d] -> [n, m]` kernel values, in NumPy or (`xp=jnp`) JAX."""
  if kind == "poly":
    return (gamma * a @ b.T + 1.0) ** degree
  if kind == "rbf":
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return xp.exp(-gamma * xp.maximum(d2, 0))
  raise ValueError(f"unknown kernel {kind!r}")


def _nystroem(x: np.ndarray, kind: str, landmarks: int, degree: int,
              rng) -> tuple[Callable, Callable]:
  """Nystroem feature map phi with phi(a) . phi(b) ~ k(a, b); gamma = 1 / (d * var):
  `(phi on the host in float64, for fitting; phi on device in float32, traceable)`."""
  gamma = 1.0 / (x.shape[1] * max(x.var(), 1e-12))
  centres = x[rng.choice(x.shape[0], min(landmarks, x.shape[0]), replace=False)]
  inv_sqrt = _inverse_sqrt(_kernel(kind, centres, centres, gamma, degree)
                           + 1e-8 * np.eye(len(centres)))
  host = lambda v: _kernel(kind, np.asarray(v, np.float64), centres, gamma, degree) @ inv_sqrt
  centres_dev, inv_sqrt_dev = devices.put((np.float32(centres), np.float32(inv_sqrt)))
  device = float32_matmuls(lambda v: _kernel(kind, jnp.asarray(v, jnp.float32), centres_dev,
                                             gamma, degree, jnp) @ inv_sqrt_dev)
  return host, device


def fit_kcca(x: np.ndarray, z: np.ndarray, k: int, kernel: Literal["poly", "rbf"],
             landmarks: int = 512, reg: float = 1e-2, degree: int = 2, seed: int = 0) -> Projection:
  """Kernel CCA, low-rank: CCA in a Nystroem feature space of each modality."""
  rng = np.random.default_rng(seed)
  phi_x, phi_x_dev = _nystroem(np.asarray(x, np.float64), kernel, landmarks, degree, rng)
  phi_z, phi_z_dev = _nystroem(np.asarray(z, np.float64), kernel, landmarks, degree, rng)
  cca = fit_cca(phi_x(x), phi_z(z), k, reg)
  return Projection(image=lambda v: cca.image(phi_x_dev(v)),
                    text=lambda v: cca.text(phi_z_dev(v)), correlations=cca.correlations)


def _fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float,
                  steps: int) -> Callable[[np.ndarray], np.ndarray]:
  """Multinomial logistic regression (full-batch L-BFGS); returns `x -> [n, C]` probs."""
  mean, std = x.mean(0), x.std(0) + 1e-6
  xs = jnp.asarray((x - mean) / std, jnp.float32)
  target = jnp.asarray(y if y.ndim == 2 else np.eye(num_classes)[y], jnp.float32)
  target = target / target.sum(1, keepdims=True)
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}

  def loss(p):
    logits = xs @ p["w"] + p["b"]
    return jnp.mean(optax.softmax_cross_entropy(logits, target)) + l2 * jnp.sum(p["w"] ** 2)

  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def step(p, state):
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=loss)
    return optax.apply_updates(p, updates), state

  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  scale = _affine(mean, np.asarray(params["w"]) / std[:, None])
  b = params["b"]
  return lambda v: jax.nn.softmax(scale(v) + b)


def fit_sm(x: np.ndarray, z: np.ndarray, labels: np.ndarray, num_classes: int,
           l2: float = 1e-3, steps: int = 200) -> Projection:
  """Semantic matching: class posteriors per modality, normalised correlation."""
  return Projection(image=_fit_logistic(x, labels, num_classes, l2, steps),
                    text=_fit_logistic(z, labels, num_classes, l2, steps),
                    similarity="normalized_correlation")


def fit_scm(x: np.ndarray, z: np.ndarray, labels: np.ndarray, num_classes: int, k: int,
            reg: float = 1e-3, l2: float = 1e-3, steps: int = 200) -> Projection:
  """Semantic correlation matching: SM on the CCA projections."""
  cca = fit_cca(x, z, k, reg)
  sm = fit_sm(np.asarray(cca.image(x), np.float64), np.asarray(cca.text(z), np.float64),
              labels, num_classes, l2, steps)
  return Projection(image=lambda v: sm.image(cca.image(v)), text=lambda v: sm.text(cca.text(v)),
                    similarity="normalized_correlation", correlations=cca.correlations)


# ---------------------------------------------------------------------------
# The family as data, and its one fit.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LinearVariant:
  """One closed-form baseline.

  Attributes:
    fit: `(train split, num_classes, config, ridge, seed) -> Projection`.
    has_ridge: its covariance ridge is chosen from `reg_grid` on validation.
    description: one line for `--help` and reports.
    published: dataset -> published (I->T, T->I) MAP (ANCHORS.md).
  """

  fit: Callable[[data_lib.Split, int, LinearConfig, float, int], Projection]
  has_ridge: bool
  description: str
  published: dict = dataclasses.field(default_factory=dict)


def _kcca(kernel: str) -> Callable:
  return lambda s, num_classes, c, reg, seed: fit_kcca(
      s.image, s.text, c.dims, kernel, c.landmarks, reg, c.degree, seed)


VARIANTS = {
    "cca": LinearVariant(
        lambda s, num_classes, c, reg, seed: fit_cca(s.image, s.text, c.dims, reg),
        has_ridge=True, description="CCA (Hotelling 1936), ridge chosen on validation.",
        published={"wikipedia": (0.2549, 0.1846)}),
    "cfa": LinearVariant(
        lambda s, num_classes, c, reg, seed: fit_cfa(s.image, s.text, c.dims),
        has_ridge=False, description="Cross-modal factor analysis (Li et al. 2003)."),
    "kcca_poly": LinearVariant(_kcca("poly"), has_ridge=True,
                               description="Kernel CCA, polynomial kernel, Nystroem low-rank."),
    "kcca_rbf": LinearVariant(_kcca("rbf"), has_ridge=True,
                              description="Kernel CCA, RBF kernel, Nystroem low-rank."),
    "sm": LinearVariant(
        lambda s, num_classes, c, reg, seed: fit_sm(s.image, s.text, s.labels, num_classes,
                                                    c.l2),
        has_ridge=False, description="Semantic matching (Rasiwasia et al. 2010).",
        published={"wikipedia": (0.225, 0.223)}),
    "scm": LinearVariant(
        lambda s, num_classes, c, reg, seed: fit_scm(s.image, s.text, s.labels, num_classes,
                                                     c.dims, reg, c.l2),
        has_ridge=True, description="Semantic correlation matching (Rasiwasia et al. 2010).",
        published={"wikipedia": (0.277, 0.226)}),
}
METHODS = tuple(VARIANTS)


def _select_reg(variant: LinearVariant, prepared: preprocess.Prepared, num_classes: int,
                config: LinearConfig, seed: int) -> tuple[float, dict[float, float]]:
  """The ridge of `reg_grid` with the best validation avg MAP (and all scores)."""
  if not variant.has_ridge or len(config.reg_grid) == 1 or len(prepared.val) == 0:
    return config.reg_grid[0], {}
  scores = {}
  for k, reg in enumerate(config.reg_grid):
    start = time.time()
    projection = variant.fit(prepared.train, num_classes, config, reg, seed)
    scores[reg] = runner.validation_map(projection.validation(prepared.val), None)["avg"]
    logging.info("ridge %d of %d (%g): validation avg MAP %.4f in %.0f s", k + 1,
                 len(config.reg_grid), reg, scores[reg], time.time() - start)
  return max(scores, key=scores.get), scores


def fit(variant: LinearVariant, config: LinearConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Chooses the ridge on the validation split, then refits on all of train
  (`prepared.full_train`)."""
  num_classes = prepared.num_classes
  reg, val_scores = _select_reg(variant, prepared, num_classes, config, context.seed)
  projection = variant.fit(prepared.full_train, num_classes, config, reg, context.seed)
  return projection.fitted(extras={
      "selected_reg": reg, "val_avg_map_by_reg": {str(k): v for k, v in val_scores.items()}})


for _name, _variant in VARIANTS.items():
  registry.register(registry.MethodSpec(
      name=_name, description=_variant.description, config_class=LinearConfig,
      config_module="cmjax.configs.linear", fit=functools.partial(fit, _variant),
      published=_variant.published))
