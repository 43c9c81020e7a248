r"""Compares a leaderboard table with a reference one, cell by cell.

  python -m experiments.compare_leaderboards --reference=reports/leaderboard.md \
      --table=/tmp/board.md --output=reports/leaderboard_reproduction.md

For every row of `--table` that `--reference` also has: are its I->T, T->I,
Avg and pair ROC AUC cells (mean ± std over seeds, 4 decimals) the same.
"""

from absl import flags

from cmjax import console, reports
from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("reference", "reports/leaderboard.md", "The reference leaderboard table.")
flags.DEFINE_string("table", None, "The leaderboard table to compare with it.", required=True)
flags.DEFINE_string("output", None, "Markdown report to write.")


def main(argv):
  cli.start(argv)
  lines = [f"# {FLAGS.table} against {FLAGS.reference}", "",
           *reports.compare_tables(FLAGS.reference, FLAGS.table)]
  console.write_markdown(lines, FLAGS.output)


if __name__ == "__main__":
  cli.define_loop_flags()
  cli.run_app(main)
