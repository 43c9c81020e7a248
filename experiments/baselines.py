r"""Runs one baseline of the UNCSM paper's comparison on the shared data and protocol.

  python -m experiments.baselines --method=cca --dataset=wikipedia
  python -m experiments.baselines --method=corr_full_ae --dataset=web_news --seed=1

Each run writes the same workdir files as experiments.uncsm and resumes from
its workdir. `--help` lists every flag and every config field.
"""

from cmjax.methods import deep, linear
from experiments import cli

if __name__ == "__main__":
  cli.main(linear.METHODS + deep.METHODS)
