"""Cross-modal hashing baselines that need no deep features, registered as methods.

Each learns a K-bit code for both modalities from the paired training items
(no labels) and hashes new items by the sign of linear functions of their
features, centred on the training items:

- `cvh`, cross-view hashing (Kumar & Udupa 2011): on paired views, the
  generalised eigenproblem [0 C_xz; C_zx 0] w = lambda diag(C_xx, C_zz) w, i.e.
  the top canonical directions; past min(d_x, d_z) bits the remaining
  eigenvalues are 0 and those bits carry no cross-modal information (the
  known drop of CVH with longer codes on Wikipedia's 10-d text).
- `cca_itq`, CCA + iterative quantisation (Gong & Lazebnik 2011): the same K
  directions scaled by their correlations, then the orthogonal rotation R
  minimising ||B - V R||^2 over both modalities' projections V, B = sign(V R),
  by alternating `itq_iterations` times.
- `cmfh`, collective matrix factorisation hashing (Ding, Guo, Zhou 2014):
  X1 ~ U1 V, X2 ~ U2 V with one latent V (K x N) for both modalities, and hash
  projections V ~ P_m X_m; closed-form alternating least squares,
  lambda ||X1 - U1 V||^2 + (1 - lambda) ||X2 - U2 V||^2
  + mu sum_m ||V - P_m X_m||^2 + gamma (||U||^2 + ||V||^2 + ||P||^2).
- `imh`, inter-media hashing (Song et al. 2013), on paired data: one code Y for
  both views of an item, smooth on each modality's kNN graph (Laplacians L_m)
  and reachable by ridge regressions from both modalities:
  Y = the K eigenvectors of lambda (L_1 + L_2) + sum_m (I - H_m) with the smallest
  eigenvalues, H_m the ridge hat matrix; then W_m = ridge(X_m -> Y).
- `lssh`, latent semantic sparse hashing (Zhou, Ding, Guo 2014): images are
  sparse-coded on a learned dictionary (X1 ~ B S, L1 penalty), texts factorised
  (X2 ~ U A, K factors), and the sparse codes mapped to the text factors
  (A ~ R S); alternating minimisation of
  ||X1 - B S||^2 + lambda |S|_1 + mu ||X2 - U A||^2 + gamma ||A - R S||^2, the
  sparse codes by ISTA. Image codes: sign(R s(x)), s(x) the sparse code of x;
  text codes: sign(a(z)), a(z) the ridge fit of z on U.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import devices, hashing, preprocess, runner
from cmjax.configs.hashing_baselines import HashingBaselineConfig
from cmjax.methods import registry
from cmjax.methods.linear import Affine
from cmjax.precision import float32_matmuls

__all__ = [
    "HashingBaselineConfig", "HashingVariant", "VARIANTS", "fit", "fit_cca_itq", "fit_cmfh",
    "fit_cvh", "fit_imh", "fit_lssh", "sign_encoder",
]

# A fitted baseline: centred linear maps of each modality to K real values.
Linear = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (mean_x, W_x, mean_z, W_z)


def _centre(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  mean = x.mean(0)
  return x - mean, mean


def _inverse_sqrt(c: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh(c)
  return (vectors / np.sqrt(np.maximum(values, 1e-12))) @ vectors.T


def _canonical(x: np.ndarray, z: np.ndarray, bits: int, reg: float):
  """Centred data, means, K canonical direction pairs (zero text columns past
  min(d_x, d_z)) and their correlations."""
  xc, mx = _centre(x)
  zc, mz = _centre(z)
  n = len(xc)
  cxx, czz, cxz = xc.T @ xc / n, zc.T @ zc / n, xc.T @ zc / n
  cxx += reg * np.trace(cxx) / len(cxx) * np.eye(len(cxx))
  czz += reg * np.trace(czz) / len(czz) * np.eye(len(czz))
  wx, wz = _inverse_sqrt(cxx), _inverse_sqrt(czz)
  u, s, vt = np.linalg.svd(wx @ cxz @ wz)  # u: [d_x, d_x], vt: [d_z, d_z].
  a = wx @ u[:, :min(bits, u.shape[1])]
  b = np.zeros((zc.shape[1], a.shape[1]))
  shared = min(len(s), a.shape[1])
  b[:, :shared] = wz @ vt[:shared].T
  correlations = np.zeros(a.shape[1])
  correlations[:shared] = s[:shared]
  if a.shape[1] < bits:  # More bits than image dimensions: constant bits.
    a = np.pad(a, ((0, 0), (0, bits - a.shape[1])))
    b = np.pad(b, ((0, 0), (0, bits - b.shape[1])))
    correlations = np.pad(correlations, (0, bits - len(correlations)))
  return xc, zc, mx, mz, a, b, correlations


def fit_cvh(x: np.ndarray, z: np.ndarray, config: HashingBaselineConfig) -> Linear:
  """CVH: the top-K canonical directions of the paired views."""
  _, _, mx, mz, a, b, _ = _canonical(x, z, config.bits, config.reg)
  return mx, a, mz, b


def fit_cca_itq(x: np.ndarray, z: np.ndarray, config: HashingBaselineConfig,
                seed: int) -> Linear:
  """CCA directions scaled by their correlations, then the ITQ rotation."""
  xc, zc, mx, mz, a, b, correlations = _canonical(x, z, config.bits, config.reg)
  a, b = a * correlations, b * correlations
  v = np.concatenate([xc @ a, zc @ b])  # Both modalities' projections.
  rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(config.bits,) * 2))[0]
  for _ in range(config.itq_iterations):
    codes = np.where(v @ rotation >= 0, 1.0, -1.0)
    left, _, right = np.linalg.svd(v.T @ codes)
    rotation = left @ right
  return mx, a @ rotation, mz, b @ rotation


def fit_cmfh(x: np.ndarray, z: np.ndarray, config: HashingBaselineConfig,
             seed: int) -> Linear:
  """CMFH by alternating closed-form least squares (features as columns)."""
  xc, mx = _centre(x)
  zc, mz = _centre(z)
  x1, x2 = xc.T, zc.T  # [d1, N], [d2, N].
  lam, mu, gamma, k = config.cmfh_lambda, config.cmfh_mu, config.cmfh_gamma, config.bits
  v = np.random.default_rng(seed).normal(size=(k, x1.shape[1]))
  ridge = lambda m, r: np.linalg.inv(m + r * np.eye(len(m)))
  hat1 = ridge(x1 @ x1.T, gamma / mu)
  hat2 = ridge(x2 @ x2.T, gamma / mu)
  for _ in range(config.cmfh_iterations):
    p1, p2 = v @ x1.T @ hat1, v @ x2.T @ hat2
    u1 = x1 @ v.T @ ridge(v @ v.T, gamma / lam)
    u2 = x2 @ v.T @ ridge(v @ v.T, gamma / (1 - lam))
    lhs = lam * u1.T @ u1 + (1 - lam) * u2.T @ u2 + (2 * mu + gamma) * np.eye(k)
    v = np.linalg.solve(lhs, lam * u1.T @ x1 + (1 - lam) * u2.T @ x2
                        + mu * (p1 @ x1 + p2 @ x2))
  p1, p2 = v @ x1.T @ hat1, v @ x2.T @ hat2
  # Threshold each bit at its training mean (balanced bits).
  return mx, p1.T, mz, p2.T


def _knn_laplacian(x: np.ndarray, k: int) -> np.ndarray:
  """Normalised Laplacian of the symmetric kNN graph (heat-kernel weights)."""
  sq = np.sum(x**2, 1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0)
  np.fill_diagonal(d2, np.inf)
  nearest = np.argpartition(d2, k, axis=1)[:, :k]
  sigma2 = np.mean(np.take_along_axis(d2, nearest, 1))
  w = np.zeros_like(d2)
  rows = np.repeat(np.arange(len(x)), k)
  w[rows, nearest.ravel()] = np.exp(-d2[rows, nearest.ravel()] / sigma2)
  w = np.maximum(w, w.T)
  inv_sqrt = 1 / np.sqrt(np.maximum(w.sum(1), 1e-12))
  return np.eye(len(x)) - w * inv_sqrt[:, None] * inv_sqrt[None, :]


def fit_imh(x: np.ndarray, z: np.ndarray, config: HashingBaselineConfig) -> Linear:
  """IMH on paired data: a graph-smooth code reachable from both modalities."""
  xc, mx = _centre(x)
  zc, mz = _centre(z)
  n = len(xc)
  ridge_hat = lambda m: m @ np.linalg.solve(m.T @ m + config.imh_beta * np.eye(m.shape[1]), m.T)
  matrix = (config.imh_lambda * (_knn_laplacian(xc, config.imh_neighbors)
                                 + _knn_laplacian(zc, config.imh_neighbors))
            + 2 * np.eye(n) - ridge_hat(xc) - ridge_hat(zc))
  _, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  y = vectors[:, :config.bits] * np.sqrt(n)
  regress = lambda m: np.linalg.solve(m.T @ m + config.imh_beta * np.eye(m.shape[1]), m.T @ y)
  return mx, regress(xc), mz, regress(zc)


def _ista_step_size(dictionary: np.ndarray) -> float:
  """1 / the Lipschitz constant of the gradient of ||target - D S||^2."""
  return 1.0 / (2 * np.linalg.norm(dictionary, 2) ** 2 + 1e-12)


def _ista(dictionary, target, l1: float, steps: int, start, step_size: float, xp=np):
  """Sparse codes S minimising ||target - D S||^2 + l1 |S|_1 (columns are items):
  `steps` proximal gradient steps from `start`, in NumPy or (`xp=jnp`) JAX."""
  codes = start
  for _ in range(steps):
    codes = codes - step_size * 2 * dictionary.T @ (dictionary @ codes - target)
    codes = xp.sign(codes) * xp.maximum(xp.abs(codes) - step_size * l1, 0.0)
  return codes


class _SparseCodeMap:
  """LSSH's image map `v [n, d] -> (R s(v - mean))^T [n, K]`, s the ISTA sparse code
  on the dictionary D, fitted in float64 on the host.

  Called, it runs on device in float32 at full precision (uploaded once;
  traceable); `host(v)` applies it in float64 on the host.
  """

  def __init__(self, mean: np.ndarray, dictionary: np.ndarray, rotation: np.ndarray,
               l1: float, steps: int):
    self.mean, self.dictionary, self.rotation = mean, dictionary, rotation
    self.l1, self.steps, self.step_size = l1, steps, _ista_step_size(dictionary)
    self._mean, self._dictionary, self._rotation = devices.put(
        (np.float32(mean), np.float32(dictionary), np.float32(rotation)))

  @float32_matmuls
  def __call__(self, v: jax.Array) -> jax.Array:
    target = (jnp.asarray(v, jnp.float32) - self._mean).T
    start = jnp.zeros((self.dictionary.shape[1], target.shape[1]), jnp.float32)
    codes = _ista(self._dictionary, target, self.l1, self.steps, start, self.step_size, jnp)
    return (self._rotation @ codes).T

  def host(self, v: np.ndarray) -> np.ndarray:
    target = (np.asarray(v, np.float64) - self.mean).T
    start = np.zeros((self.dictionary.shape[1], target.shape[1]))
    return (self.rotation @ _ista(self.dictionary, target, self.l1, self.steps, start,
                                  self.step_size)).T


# A modality's real-valued map `[n, d] -> [n, K]` whose signs are the codes: called, on
# device in float32; `.host(v)`, the same map in float64 on the host.
Map = Affine | _SparseCodeMap


def fit_lssh(x: np.ndarray, z: np.ndarray, config: HashingBaselineConfig,
             seed: int) -> tuple[Map, Map]:
  """LSSH by alternating minimisation; returns the real-valued maps of both modalities."""
  xc, mx = _centre(x)
  zc, mz = _centre(z)
  x1, x2 = xc.T, zc.T  # [d1, N], [d2, N].
  rng = np.random.default_rng(seed)
  k, atoms, eps = config.bits, config.lssh_atoms, 1e-6
  unit_columns = lambda m: m / np.maximum(np.linalg.norm(m, axis=0, keepdims=True), 1.0)
  b = unit_columns(x1[:, rng.choice(x1.shape[1], atoms, replace=x1.shape[1] < atoms)])
  l1 = config.lssh_lambda * np.abs(x1).mean() * x1.shape[0]
  s = np.zeros((atoms, x1.shape[1]))
  u = unit_columns(rng.normal(size=(x2.shape[0], k)))
  a = np.linalg.lstsq(u, x2, rcond=None)[0]
  r = rng.normal(size=(k, atoms)) * 0.01
  ridge = lambda m: np.linalg.inv(m + eps * np.eye(len(m)))
  root_gamma = np.sqrt(config.lssh_gamma)
  for _ in range(config.lssh_iterations):
    joint = np.concatenate([b, root_gamma * r])
    s = _ista(joint, np.concatenate([x1, root_gamma * a]), l1, config.lssh_ista_steps, s,
              _ista_step_size(joint))
    b = unit_columns(x1 @ s.T @ ridge(s @ s.T))
    u = unit_columns(x2 @ a.T @ ridge(a @ a.T))
    a = np.linalg.solve(config.lssh_mu * u.T @ u + config.lssh_gamma * np.eye(k),
                        config.lssh_mu * u.T @ x2 + config.lssh_gamma * r @ s)
    r = a @ s.T @ ridge(s @ s.T)
  text_map = np.linalg.solve(u.T @ u + eps * np.eye(k), u.T)  # [K, d2].
  return _SparseCodeMap(mx, b, r, l1, config.lssh_ista_steps), Affine(mz, text_map.T)


def sign_encoder(real_map: Map, train: np.ndarray) -> Callable[[np.ndarray], jax.Array]:
  """`v [n, d] -> [n, K]` codes in {-1, +1}: the sign of `real_map(v)` about its mean
  over the training items `train` [N, d] (fitted in float64 on the host), on device in
  blocks (float32)."""
  mean = devices.put(np.float32(real_map.host(train).mean(0)))
  codes = jax.jit(lambda v: jnp.where(real_map(v) >= mean, 1.0, -1.0))
  return functools.partial(runner.in_blocks, codes)


def _fitted(image_map: Map, text_map: Map, prepared: preprocess.Prepared) -> runner.Fitted:
  """Encoders: the sign of each modality's real-valued map, thresholded at its
  training mean; scorer: minus the Hamming distance."""
  return runner.Fitted(encode_image=sign_encoder(image_map, prepared.train.image),
                       encode_text=sign_encoder(text_map, prepared.train.text),
                       score=hashing.codes_score)


def _linear_maps(linear: Linear) -> tuple[Affine, Affine]:
  mx, wx, mz, wz = linear
  return Affine(mx, wx), Affine(mz, wz)


@dataclasses.dataclass(frozen=True)
class HashingVariant:
  """One hashing baseline.

  Attributes:
    maps: `(image train [n, d_x], text train [n, d_z], config, seed) -> (image map,
      text map)`, real-valued functions of features whose signs (about their
      training mean) are the codes.
    description: one line for `--help` and reports.
    published: mAP@50 (I->T, T->I) on Wikipedia at 16, 32, 64, 128 bits.
  """

  maps: Callable[[np.ndarray, np.ndarray, HashingBaselineConfig, int], tuple[Map, Map]]
  description: str
  published: tuple | None = None


def fit(variant: HashingVariant, config: HashingBaselineConfig, prepared: preprocess.Prepared,
        context: runner.FitContext) -> runner.Fitted:
  return _fitted(*variant.maps(prepared.train.image, prepared.train.text, config, context.seed),
                 prepared)


# Published: DJSRH's re-run (ICCV 2019), Wikipedia, mAP@50 at 16/32/64/128 bits; ANCHORS.md.
VARIANTS = {
    "cvh": HashingVariant(
        lambda x, z, c, seed: _linear_maps(fit_cvh(x, z, c)),
        "CVH, cross-view hashing (Kumar & Udupa 2011).",
        ((0.179, 0.252), (0.162, 0.235), (0.153, 0.171), (0.149, 0.154))),
    "cca_itq": HashingVariant(
        lambda x, z, c, seed: _linear_maps(fit_cca_itq(x, z, c, seed)),
        "CCA + ITQ (Gong & Lazebnik 2011)."),
    "cmfh": HashingVariant(
        lambda x, z, c, seed: _linear_maps(fit_cmfh(x, z, c, seed)),
        "CMFH, collective matrix factorisation hashing (Ding, Guo, Zhou 2014).",
        ((0.251, 0.595), (0.253, 0.601), (0.259, 0.616), (0.263, 0.622))),
    "imh": HashingVariant(
        lambda x, z, c, seed: _linear_maps(fit_imh(x, z, c)),
        "IMH, inter-media hashing (Song et al. 2013).",
        ((0.201, 0.467), (0.203, 0.478), (0.204, 0.453), (0.195, 0.456))),
    "lssh": HashingVariant(
        fit_lssh, "LSSH, latent semantic sparse hashing (Zhou, Ding, Guo 2014).",
        ((0.197, 0.569), (0.208, 0.593), (0.199, 0.593), (0.195, 0.595))),
}
for _name, _variant in VARIANTS.items():
  registry.register(registry.MethodSpec(
      name=_name, description=_variant.description, config_class=HashingBaselineConfig,
      config_module="cmjax.configs.hashing_baselines", fit=functools.partial(fit, _variant),
      hashing=True,
      published_hashing={"wikipedia": dict(zip((16, 32, 64, 128), _variant.published))}
      if _variant.published else {}))
