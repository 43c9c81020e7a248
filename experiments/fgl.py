r"""Trains and evaluates FGL (Xu et al. 2019).

  python -m experiments.fgl --dataset=web_news        # GCN text path on the word graph
  python -m experiments.fgl --dataset=wikipedia       # MLP text path on the LDA features
  python -m experiments.fgl --dataset=web_news --config=cmjax/configs/fgl.py:binary

`--help` lists every flag and every config field (`--config.<field>=...`).
"""

from experiments import cli

if __name__ == "__main__":
  cli.main(["fgl"])
