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
import os
import time
from typing import Callable, Literal

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import data as data_lib
from cmjax import console, devices, preprocess, runner
from cmjax import similarity as similarity_lib
from cmjax.configs.linear import LinearConfig
from cmjax.methods import registry
from cmjax.precision import float32_matmuls

__all__ = [
    "Affine",
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
    on_host: the maps run on the host in float64 (KCCA's Nystroem map, SCM's two
      maps in a row), their encodings uploaded; else JAX functions on device
      (traceable).
  """

  image: Callable[[jax.Array], jax.Array]
  text: Callable[[jax.Array], jax.Array]
  similarity: Similarity = "cosine"
  correlations: np.ndarray | None = None
  on_host: bool = False

  def validation(self, split: data_lib.Split) -> runner.Validation:
    """These projections on a validation split (they have no parameters to pass; host
    projections encode it here, once)."""
    image, text = split.image, split.text
    encode_image, encode_text = (lambda params, v: self.image(v)), (lambda params, v: self.text(v))
    if self.on_host:
      image, text = np.float32(self.image(image)), np.float32(self.text(text))
      encode_image = encode_text = lambda params, v: v
    model = runner.Model(encode_image=encode_image, encode_text=encode_text,
                         score=lambda params, a, b: similarity_lib.pairwise(self.similarity, a, b))
    return runner.Validation(model, image, text, split.labels)

  def fitted(self, **kwargs) -> runner.Fitted:
    """The runner's view: these projections are the encoders (on device, in blocks;
    host projections' encodings are uploaded), their similarity the block scorer;
    `kwargs` are further `runner.Fitted` fields."""
    blocks = lambda fn: fn if self.on_host else functools.partial(runner.in_blocks, jax.jit(fn))
    return runner.Fitted(encode_image=blocks(self.image), encode_text=blocks(self.text),
                         score=functools.partial(similarity_lib.pairwise, self.similarity),
                         **kwargs)


class Affine:
  """`v [n, d] -> (v - mean) @ matrix`, fitted in float64 on the host.

  Called, it runs on device in float32 at full precision (uploaded once;
  traceable); `host(v)` applies it in float64 on the host (to fit what comes
  after it, e.g. SCM's logistic regressions, exactly as before).
  """

  def __init__(self, mean: np.ndarray, matrix: np.ndarray):
    self.mean, self.matrix = np.asarray(mean, np.float64), np.asarray(matrix, np.float64)
    self._mean, self._matrix = devices.put((np.float32(mean), np.float32(matrix)))

  @float32_matmuls
  def __call__(self, v: jax.Array) -> jax.Array:
    return (jnp.asarray(v, jnp.float32) - self._mean) @ self._matrix

  def host(self, v: np.ndarray) -> np.ndarray:
    return (np.asarray(v, np.float64) - self.mean) @ self.matrix


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
  return Projection(image=Affine(mx, a), text=Affine(mz, b), correlations=s[:k])


def fit_cfa(x: np.ndarray, z: np.ndarray, k: int) -> Projection:
  """Cross-modal factor analysis: orthonormal A, B minimising ||X A - Z B||_F."""
  x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
  xc, mx = _center(x)
  zc, mz = _center(z)
  u, _, vt = np.linalg.svd(xc.T @ zc, full_matrices=False)
  k = min(k, u.shape[1])
  a, b = u[:, :k], vt[:k].T
  return Projection(image=Affine(mx, a), text=Affine(mz, b))


def _kernel(kind: str, a: np.ndarray, b: np.ndarray, gamma: float, degree: int,
            xp=np) -> np.ndarray:
  """`[n, d] x [m, d] -> [n, m]` kernel values, in NumPy or (`xp=jnp`) JAX."""
  if kind == "poly":
    return (gamma * a @ b.T + 1.0) ** degree
  if kind == "rbf":
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return xp.exp(-gamma * xp.maximum(d2, 0))
  raise ValueError(f"unknown kernel {kind!r}")


class _Nystroem:
  """Nystroem feature map phi with phi(a) . phi(b) ~ k(a, b) (gamma = 1 / (d * var)),
  in float64 on the host: the kernel's inverse square root is ill-conditioned, and in
  float32 the encodings move by 1e-4 relative (enough to reorder near ties)."""

  def __init__(self, x: np.ndarray, kind: str, landmarks: int, degree: int, rng):
    self.kind, self.degree = kind, degree
    self.gamma = 1.0 / (x.shape[1] * max(x.var(), 1e-12))
    self.centres = x[rng.choice(x.shape[0], min(landmarks, x.shape[0]), replace=False)]
    self.inv_sqrt = _inverse_sqrt(_kernel(kind, self.centres, self.centres, self.gamma, degree)
                                  + 1e-8 * np.eye(len(self.centres)))

  def __call__(self, v: np.ndarray) -> np.ndarray:
    return _kernel(self.kind, np.asarray(v, np.float64), self.centres, self.gamma,
                   self.degree) @ self.inv_sqrt


def fit_kcca(x: np.ndarray, z: np.ndarray, k: int, kernel: Literal["poly", "rbf"],
             landmarks: int = 512, reg: float = 1e-2, degree: int = 2, seed: int = 0) -> Projection:
  """Kernel CCA, low-rank: CCA in a Nystroem feature space of each modality (encoded on
  the host in float64, see `_Nystroem`)."""
  rng = np.random.default_rng(seed)
  phi_x = _Nystroem(np.asarray(x, np.float64), kernel, landmarks, degree, rng)
  phi_z = _Nystroem(np.asarray(z, np.float64), kernel, landmarks, degree, rng)
  cca = fit_cca(phi_x(x), phi_z(z), k, reg)
  return Projection(image=lambda v: cca.image.host(phi_x(v)),
                    text=lambda v: cca.text.host(phi_z(v)), correlations=cca.correlations,
                    on_host=True)


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
  return _Logistic(Affine(mean, np.asarray(params["w"]) / std[:, None]), params["b"])


class _Logistic:
  """Class posteriors `softmax((v - mean) / std @ w + b)`: called, on device in float32;
  `host(v)`, the logits in float64 on the host (for SCM, whose CCA inputs are)."""

  def __init__(self, scale: Affine, bias: jax.Array):
    self.scale, self.bias = scale, bias

  def __call__(self, v: jax.Array) -> jax.Array:
    return jax.nn.softmax(self.scale(v) + self.bias)

  def host(self, v: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(self.scale.host(v) + np.asarray(self.bias)))


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
  sm = fit_sm(cca.image.host(x), cca.text.host(z), labels, num_classes, l2, steps)
  # On the host in float64: in float32 the two maps' rounding compounds enough to move
  # the test MAP (Wikipedia, 3 seeds: I->T 0.3006 -> 0.3002; see
  # reports/leaderboard_reproduction_device_resident.md).
  return Projection(image=lambda v: sm.image.host(cca.image.host(v)),
                    text=lambda v: sm.text.host(cca.text.host(v)),
                    similarity="normalized_correlation", correlations=cca.correlations,
                    on_host=True)


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
                config: LinearConfig, seed: int, label: str) -> tuple[float, dict[float, float]]:
  """The ridge of `reg_grid` with the best validation avg MAP (and all scores); a
  progress bar `label` over the ridges where bars are on, else a line each."""
  if not variant.has_ridge or len(config.reg_grid) == 1 or len(prepared.val) == 0:
    return config.reg_grid[0], {}
  scores = {}
  bar = console.progress_bar(len(config.reg_grid), f"{label}: ridge on validation",
                             unit="ridge")
  for k, reg in enumerate(config.reg_grid):
    start = time.time()
    projection = variant.fit(prepared.train, num_classes, config, reg, seed)
    scores[reg] = runner.validation_map(projection.validation(prepared.val), None)["avg"]
    if bar is None:
      logging.info("%s: ridge %d of %d (%g): validation avg MAP %.4f in %.0f s", label, k + 1,
                   len(config.reg_grid), reg, scores[reg], time.time() - start)
    else:
      bar.set_postfix(ridge=f"{reg:g}", val_avg_map=f"{scores[reg]:.4f}", refresh=False)
      bar.update(1)
  if bar is not None:
    bar.close()
  return max(scores, key=scores.get), scores


def fit(variant: LinearVariant, config: LinearConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  """Chooses the ridge on the validation split, then refits on all of train
  (`prepared.full_train`)."""
  num_classes = prepared.num_classes
  reg, val_scores = _select_reg(variant, prepared, num_classes, config, context.seed,
                                os.path.basename(os.path.abspath(context.workdir)))
  projection = variant.fit(prepared.full_train, num_classes, config, reg, context.seed)
  return projection.fitted(extras={
      "selected_reg": reg, "val_avg_map_by_reg": {str(k): v for k, v in val_scores.items()}})


for _name, _variant in VARIANTS.items():
  registry.register(registry.MethodSpec(
      name=_name, description=_variant.description, config_class=LinearConfig,
      config_module="cmjax.configs.linear", fit=functools.partial(fit, _variant),
      published=_variant.published))
