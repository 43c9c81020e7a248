r"""Trains and evaluates DBRC (Hu, Nie, Li 2019), deep binary reconstruction hashing.

  python -m experiments.dbrc --dataset=wikipedia --config.bits=32

Reports the test-vs-test MAP of every method and the hashing protocol (test
queries against the training items, by Hamming distance) in results.json's
`hashing`. `--help` lists every flag and every config field.
"""

from experiments import cli

if __name__ == "__main__":
  cli.main(["dbrc"])
