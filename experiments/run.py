r"""Runs any registered method, your own included.

  python -m experiments.run --method=scm --dataset=wikipedia
  python -m experiments.run --import_modules=my_method --method=mine

`--help` lists every flag, every registered method and its config fields.
"""

from experiments import cli

if __name__ == "__main__":
  cli.main()
