"""Closed-form baselines: CCA against scipy, every baseline beats chance."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg

from cmjax import data, evaluation
from cmjax.methods import linear

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cca_matches_scipy_generalized_eigenproblem():
  rng = np.random.default_rng(0)
  shared = rng.normal(size=(500, 3))
  x = shared @ rng.normal(size=(3, 6)) + rng.normal(size=(500, 6))
  z = shared @ rng.normal(size=(3, 4)) + rng.normal(size=(500, 4))
  cca = linear.fit_cca(x, z, k=4, reg=0.0)
  xc, zc = x - x.mean(0), z - z.mean(0)
  cxx, czz, cxz = xc.T @ xc / 500, zc.T @ zc / 500, xc.T @ zc / 500
  # rho^2 are the eigenvalues of Cxx^-1 Cxz Czz^-1 Czx (symmetric-definite form).
  rho2 = scipy.linalg.eigh(cxz @ np.linalg.solve(czz, cxz.T), cxx, eigvals_only=True)[::-1]
  np.testing.assert_allclose(cca.correlations, np.sqrt(np.maximum(rho2[:4], 0)), rtol=1e-6)
  # The projections are uncorrelated with unit variance and pairwise correlation rho.
  a, b = cca.image(x), cca.text(z)
  np.testing.assert_allclose(np.corrcoef(a.T, b.T)[:4, 4:], np.diag(cca.correlations), atol=1e-6)


@pytest.mark.parametrize("method", ["cca", "cfa", "kcca_poly", "kcca_rbf", "sm", "scm"])
def test_baselines_beat_chance_on_synthetic(method):
  d = data.make_synthetic(num_train=600, num_test=200, difficulty=0.7)
  x, z, y = d.train.image, d.train.text, d.train.labels
  fit = {
      "cca": lambda: linear.fit_cca(x, z, 9),
      "cfa": lambda: linear.fit_cfa(x, z, 9),
      "kcca_poly": lambda: linear.fit_kcca(x, z, 9, "poly", landmarks=200),
      "kcca_rbf": lambda: linear.fit_kcca(x, z, 9, "rbf", landmarks=200),
      "sm": lambda: linear.fit_sm(x, z, y, 10),
      "scm": lambda: linear.fit_scm(x, z, y, 10, 9),
  }[method]()
  s = linear.similarity(fit.image(d.test.image), fit.text(d.test.text), fit.similarity)
  m = evaluation.cross_modal_metrics(s, s.T, d.test.labels, d.test.labels)
  assert min(m["i2t"].map, m["t2i"].map) > 0.3  # Chance is about 0.1.


def test_baselines_cli_on_wikipedia(wikipedia_dir, tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.baselines", "--method=cca", "--dataset=wikipedia",
       f"--data_dir={wikipedia_dir}", f"--workdir={tmp_path}"],
      cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
  results = __import__("json").loads((tmp_path / "results.json").read_text())
  # Published CCA on these features (LCFS 2013): 0.2549 / 0.1846, avg 0.2198.
  assert abs(results["map"]["avg"] - 0.2198) < 0.02, out.stdout


def test_choosing_the_ridge_shows_a_bar_where_bars_are_on(tmp_path, capsys):
  from cmjax import console, data  # pylint: disable=g-import-not-at-top
  from cmjax.methods import registry  # pylint: disable=g-import-not-at-top
  try:
    console.setup_logging(progress_bars=True)
    registry.run("cca", data.load_dataset("synthetic"), str(tmp_path / "cca_run"))
  finally:
    console.setup_logging(progress_bars=False)
  out = capsys.readouterr().out
  assert "cca_run: ridge on validation: 100%" in out and "5/5" in out and "val_avg_map=" in out
