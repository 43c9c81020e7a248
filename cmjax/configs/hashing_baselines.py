r"""Presets of the hashing baselines (cvh, cca_itq, cmfh, imh, lssh).

  python -m experiments.run --method=cmfh --dataset=wikipedia --config.bits=32

- `default`: 64 bits; each method's parameters as its paper recommends
  (CMFH: lambda 0.5, mu 100, gamma 0.01).
- `quick`: 16 bits, fewer iterations (smoke runs).
"""

from cmjax import configs
from cmjax.methods.hashing_baselines import HashingBaselineConfig

PRESETS = {
    "default": {},
    "quick": dict(bits=16, itq_iterations=10, cmfh_iterations=5, lssh_atoms=64,
                  lssh_iterations=3, lssh_ista_steps=10),
}


def get_config(preset: str = "default"):
  return configs.to_config_dict(HashingBaselineConfig(**configs.preset_values(PRESETS, preset, __file__)))
