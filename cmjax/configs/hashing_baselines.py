r"""Presets of the hashing baselines (cvh, cca_itq, cmfh, imh, lssh).

  python -m experiments.run --method=cmfh --dataset=wikipedia --config.bits=32

- `default`: 64 bits; each method's parameters as its paper recommends
  (CMFH: lambda 0.5, mu 100, gamma 0.01).
- `quick`: 16 bits, fewer iterations (smoke runs).
"""

from __future__ import annotations

import dataclasses

from cmjax import configs


@dataclasses.dataclass(frozen=True)
class HashingBaselineConfig:
  """Settings of the hashing baselines; presets in `cmjax/configs/hashing_baselines.py`.

  Attributes:
    bits: code length K.
    prepare: the transform of both modalities' features; its validation
      split is unused (the baselines have no selection step) and kept 0.
    reg: ridge of the covariances (cvh, cca_itq), relative to their mean eigenvalue.
    itq_iterations: alternations of cca_itq's rotation.
    cmfh_lambda: cmfh: weight of the image factorisation (1 - lambda: text).
    cmfh_mu: cmfh: weight of the hash-projection terms.
    cmfh_gamma: cmfh: ridge of all factors.
    cmfh_iterations: cmfh: alternating least-squares rounds.
    imh_neighbors: imh: k of each modality's kNN graph.
    imh_lambda: imh: weight of the graph smoothness.
    imh_beta: imh: ridge of the hash regressions.
    lssh_atoms: lssh: dictionary size of the image sparse coding.
    lssh_lambda: lssh: L1 weight of the sparse codes (relative to the data's scale).
    lssh_mu: lssh: weight of the text factorisation.
    lssh_gamma: lssh: weight of the link A ~ R S.
    lssh_iterations: lssh: alternating rounds.
    lssh_ista_steps: lssh: ISTA steps per sparse-coding solve.
  """

  bits: int = 64
  prepare: configs.PrepareConfig = configs.PrepareConfig(validation_fraction=0.0)
  reg: float = 1e-3
  itq_iterations: int = 50
  cmfh_lambda: float = 0.5
  cmfh_mu: float = 100.0
  cmfh_gamma: float = 0.01
  cmfh_iterations: int = 30
  imh_neighbors: int = 10
  imh_lambda: float = 1.0
  imh_beta: float = 1.0
  lssh_atoms: int = 256
  lssh_lambda: float = 0.05
  lssh_mu: float = 1.0
  lssh_gamma: float = 1.0
  lssh_iterations: int = 10
  lssh_ista_steps: int = 30

  def __post_init__(self):
    configs.check_literals(self)
    configs.check_positive(self, "bits", "reg", "itq_iterations", "cmfh_mu", "cmfh_gamma",
                           "cmfh_iterations", "imh_neighbors", "imh_beta", "lssh_atoms",
                           "lssh_lambda", "lssh_mu", "lssh_gamma", "lssh_iterations",
                           "lssh_ista_steps")
    configs.check_non_negative(self, "imh_lambda")
    if not 0.0 < self.cmfh_lambda < 1.0:
      raise configs.ConfigError(f"config field 'cmfh_lambda' must be in (0, 1), got "
                                f"{self.cmfh_lambda}")


PRESETS = {
    "default": {},
    "quick": dict(bits=16, itq_iterations=10, cmfh_iterations=5, lssh_atoms=64,
                  lssh_iterations=3, lssh_ista_steps=10),
}


# What `python -m experiments.tune` samples, over the default preset (the code
# length is the table's column, not tuned): each method's own weights.
SEARCH_SPACES = {
    "cvh": {"reg": configs.Float(1e-5, 1e-1, log=True)},
    "cca_itq": {"reg": configs.Float(1e-5, 1e-1, log=True),
                "itq_iterations": configs.Int(10, 100, log=True)},
    "cmfh": {"cmfh_lambda": configs.Float(0.1, 0.9), "cmfh_mu": configs.Float(1.0, 1000.0, log=True),
             "cmfh_gamma": configs.Float(1e-4, 1.0, log=True)},
    "imh": {"imh_neighbors": configs.Int(5, 50, log=True),
            "imh_lambda": configs.Float(0.01, 10.0, log=True),
            "imh_beta": configs.Float(0.01, 10.0, log=True)},
    "lssh": {"lssh_atoms": configs.Choice((64, 128, 256, 512)),
             "lssh_lambda": configs.Float(0.005, 0.5, log=True),
             "lssh_mu": configs.Float(0.1, 10.0, log=True),
             "lssh_gamma": configs.Float(0.1, 10.0, log=True)},
}


def get_config(preset: str = "default"):
  return configs.preset_config(HashingBaselineConfig, PRESETS, preset, __file__)
