r"""Trains and evaluates UNCSM (Qi, Huang, Peng 2017).

With no flags it runs the default preset on the embedded synthetic data:

  python -m experiments.uncsm

On the Wikipedia benchmark, the paper's recipe as written, one field changed:

  python -m experiments.uncsm --dataset=wikipedia \
      --config=cmjax/configs/uncsm.py:paper --config.pretrain=False

The workdir receives config.json, checkpoints/, logs/ (TensorBoard),
results.json, pr_curves.png and test_scores.npy; running again in the same
workdir resumes. `--help` lists every flag and every config field.
"""

from experiments import cli

if __name__ == "__main__":
  cli.main(["uncsm"])
