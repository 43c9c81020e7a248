"""The command line shared by every experiment entry point.

`python -m experiments.<method>` (and `experiments.run` for any registered
method) take the same flags:

- `--config=<config file>:<preset>` picks a named preset of the method's config
  file (default: the method's `default`), and `--config.<field>=<value>`
  overrides one field (ml_collections config flags); the result is converted
  strictly into the method's typed config (one-line error on a bad field).
- `--dataset`, `--data_dir`, `--workdir`, `--seed`: what to run on and where.
- `--image_features`, `--text_features`: the features of a raw dataset
  (web_news): colour histograms or EfficientNet-Lite0, character n-grams or
  jieba words.
- `--steps_per_call`, `--checkpoint_every`: how the loop runs; `--fixed_shards`:
  gradients summed in a fixed order (bit-identical on any device count).
- `--import_modules`: modules that register more methods (your own).
- `--coordinator_address`, `--num_processes`, `--process_id`: a multi-process
  run (every process runs the same command).

Flags are defined when `main` runs, not at import, so entry modules can be
imported together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import sys
from typing import Sequence

from absl import app, flags
import jax
from ml_collections import config_flags

from cmjax import checks, configs, data, runner, train
from cmjax.console import setup_logging, write_markdown as write_report
from cmjax.methods import registry

__all__ = ["USER_ERRORS", "exit_with_error", "main", "run_app", "setup_logging",
           "write_report"]

FLAGS = flags.FLAGS
# The project's own errors: what a user's input or a run's state causes. They end
# the command with one line; anything else (a bug) keeps its traceback.
USER_ERRORS = (checks.UserError,)


def exit_with_error(error: Exception | str) -> None:
  """One line on stderr, exit status 1."""
  print(f"error: {error}", file=sys.stderr)
  sys.exit(1)


@contextlib.contextmanager
def flag_errors():
  """Every bad flag (a config override naming no field, an unknown preset, a value
  of the wrong type) ends the command in one line. ml_collections applies
  `--config.<field>` overrides both when the flag is defined and when parsed."""
  try:
    yield
  except flags.Error as e:
    # ml_collections wraps an error of the config file (in a copy whose text holds
    # the whole traceback, then in a flag error): the innermost one is the message.
    chain, cause = [], e
    while cause is not None:
      chain.append(cause)
      cause = cause.__cause__ or cause.__context__
    ours = [c for c in chain if isinstance(c, USER_ERRORS)]
    exit_with_error(ours[-1] if ours else _override_message(str(e).strip().splitlines()[-1]))
  except USER_ERRORS as e:
    exit_with_error(e)
  except (AttributeError, KeyError) as e:  # ml_collections: an override naming no field.
    text = " ".join(str(e).strip("\"'").replace("\\'", "'").split("\\n"))
    known = _config_fields()
    exit_with_error(f"--config: no such config field: {text}"
                    + (f"; known fields: {', '.join(known)}" if known else ""))


def _loaded_config():
  """The config `--config` loaded so far (before the failed override), or None."""
  try:
    return FLAGS["config"].value
  except Exception:  # pylint: disable=broad-except  (no --config flag, or none loaded)
    return None


def _config_fields() -> list[str]:
  config = _loaded_config()
  return sorted(config.keys()) if hasattr(config, "keys") else []


def _override_message(text: str) -> str:
  """ml_collections' message for a `--config.<field>=<value>` it cannot convert, in the
  words of the library's `ConfigError` ("config field 'f' must be bool, got 'no'
  (str)"), as `registry.make_config` says it in a notebook."""
  match = re.fullmatch(r"flag --config\.([\w.]+)=(.*?): (.*)", text)
  config = _loaded_config()
  if not match or config is None:
    return text
  field, value, _ = match.groups()
  try:
    current = functools.reduce(lambda c, name: c[name], field.split("."), config)
  except (KeyError, AttributeError, TypeError):
    return text
  return f"config field '{field}' must be {type(current).__name__}, got {value!r} (str)"


_HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing under `flag_errors`; asking for help exits 0 (absl's own
  help flags exit 1 once the text is printed)."""
  with flag_errors():
    try:
      return FLAGS(argv)
    except SystemExit as e:
      if e.code == 1 and any(arg.split("=")[0] in _HELP_FLAGS for arg in argv[1:]):
        sys.exit(0)
      raise


def run_app(main_fn) -> None:
  """`app.run(main_fn)` with `parse_flags`; the project's errors are one line.

  JAX's own settings are flags too (`--jax_default_matmul_precision=float32`,
  `--jax_enable_compilation_cache`...: `jax.config.config_with_absl`, applied
  once the flags are parsed; `--helpfull` lists them).
  """
  def guarded(argv):
    try:
      main_fn(argv)
    except USER_ERRORS as e:
      exit_with_error(e)
  jax.config.config_with_absl()
  app.run(guarded, flags_parser=parse_flags)


def expand_config_shorthand(argv: Sequence[str]) -> list[str]:
  """`--config=<family>:<preset>` (e.g. `uncsm:paper`) as the path of the config
  file `cmjax/configs/<family>.py`, so that the form works from any directory."""
  out = []
  for arg in argv:
    if arg.startswith("--config="):
      path, _, preset = arg[len("--config="):].partition(":")
      if re.fullmatch(r"\w+", path) and os.path.isfile(configs.config_file(path)):
        path = configs.config_file(path)
      elif not os.path.isfile(path):
        families = sorted(f[:-3] for f in os.listdir(configs.CONFIG_DIR)
                          if f.endswith(".py") and not f.startswith("_"))
        raise configs.ConfigError(f"{arg}: no config file {path!r} (a config family: "
                                  f"{', '.join(families)}; or the path of a config file)")
      arg = f"--config={path}" + (f":{preset}" if preset else "")
    out.append(arg)
  return out


def parse_seeds(values: Sequence[str], flag: str) -> list[int]:
  """`--seeds` values as ints, each a valid seed (`runner.check_seed`)."""
  if not values:
    raise configs.ConfigError(f"--{flag} needs at least one seed")
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    raise configs.ConfigError(f"--{flag} takes integers, got {','.join(values)}") from None
  for seed in seeds:
    runner.check_seed(seed)
  return seeds


def argv_value(name: str, default: str | None = None) -> str | None:
  """The value of `--name=value` or `--name value` in `sys.argv` (before parsing).

  Used only where a flag's default depends on another flag (`--config` on
  `--method`, both on `--import_modules`).
  """
  args = sys.argv[1:]
  for i, arg in enumerate(args):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(args):
      return args[i + 1]
  return default


LOOP_FLAGS = ("steps_per_call", "checkpoint_every", "import_modules", "coordinator_address",
              "num_processes", "process_id", "distributed_timeout_s", "deterministic",
              "fixed_shards")

DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"


def use_deterministic_ops() -> None:
  """Adds XLA's deterministic-ops flag to `XLA_FLAGS`: on GPU, scatter-adds (segment
  sums, `bincount`, the gradients of gathers) then run in a fixed order instead of
  with atomics. XLA reads the variable once, when the backend starts.

  Raises:
    ConfigError: the backend has already started (the flag would be ignored).
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized():
    raise configs.ConfigError("--deterministic must be applied before JAX starts its backend")
  flags_now = os.environ.get("XLA_FLAGS", "")
  if DETERMINISTIC_XLA_FLAG not in flags_now.split():
    os.environ["XLA_FLAGS"] = f"{flags_now} {DETERMINISTIC_XLA_FLAG}".strip()


def define_loop_flags() -> None:
  flags.DEFINE_integer("steps_per_call", 100,
                       "Training steps fused into one jitted device-side loop.")
  flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.")
  flags.DEFINE_list("import_modules", [],
                    "Python modules to import first; they register more methods "
                    "(see cmjax.methods.registry). Importing a module EXECUTES ITS CODE: "
                    "name only modules you trust.")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 in a multi-process run (jax.distributed); "
                      "every process runs the same command with its own --process_id.")
  flags.DEFINE_integer("num_processes", 1, "Processes of a multi-process run.")
  flags.DEFINE_integer("process_id", 0, "This process's index in a multi-process run.")
  flags.DEFINE_bool("deterministic", False,
                    "GPU: run with XLA's deterministic ops (XLA_FLAGS="
                    f"{DETERMINISTIC_XLA_FLAG}), so that a rerun or a resumed run reaches the "
                    "same parameters bit for bit; slower. CPU runs are deterministic without it.")
  flags.DEFINE_integer("fixed_shards", 0,
                       "0: each step's gradient is summed over the devices by XLA (fastest; "
                       "the last bits depend on the device count). V > 0: each batch is cut "
                       "into V shards whose gradients are summed in one fixed order, so the "
                       "run is bit-identical on any device count dividing V (V must divide "
                       "the batch size). Other dropout draws than with 0: other numbers. "
                       "Methods whose losses couple a batch's rows refuse it.")
  flags.DEFINE_float("distributed_timeout_s", 120.0,
                     "A multi-process run stops with one line when not every process has "
                     "reached the coordinator within this many seconds.")


FEATURE_FLAGS = ("image_features", "text_features")


def define_feature_flags() -> None:
  flags.DEFINE_enum("image_features", None, ["color_hist", "efficientnet"],
                    "Image features of a raw dataset (web_news): joint colour histograms, or "
                    "pooled ImageNet EfficientNet-Lite0 features (computed once, then cached in "
                    "$CMJAX_CACHE_DIR, else ~/.cache/cmjax). Default: the method's view's own "
                    "(color_hist).")
  flags.DEFINE_enum("text_features", None, ["char_ngram", "words"],
                    "Text features of a raw dataset (web_news): TF-IDF of character 1-2-grams, "
                    "or of jieba words (the words_graph view: its graph on jieba words). "
                    "Default: the view's own (char_ngram; FGL's graph: character bigrams).")


def define_batch_flags() -> None:
  """The flags of the commands that run many runs (leaderboards, reports, claims,
  tuning): the feature choice and the loop, listed in `--help`."""
  define_feature_flags()
  define_loop_flags()
  show_in_help((*FEATURE_FLAGS, *LOOP_FLAGS))


def define_tuned_flags() -> None:
  flags.DEFINE_bool("tuned", False, "Run each method's tuned config for the dataset where "
                    "--tuned_dir has one (python -m experiments.tune), its preset otherwise; "
                    "the report says which, with the tuning budget.")
  flags.DEFINE_string("tuned_dir", "reports/tuned", "Folder of tuned configs "
                      "(<dataset>/<method>.json).")


def tuned_dir() -> str | None:
  """`--tuned_dir` when `--tuned` is given, else None."""
  return FLAGS.tuned_dir if FLAGS.tuned else None


def tuned_flags_text() -> str:
  """`--tuned --tuned_dir=...` when given (or '')."""
  return f" --tuned --tuned_dir={FLAGS.tuned_dir}" if FLAGS.tuned else ""


def feature_choice() -> data.FeatureChoice:
  """The `--image_features` / `--text_features` choice."""
  return data.FeatureChoice(FLAGS.image_features, FLAGS.text_features)


def feature_flags_text() -> str:
  """The feature flags given, as they are written on a command line (or '')."""
  return "".join(f" --{name}={FLAGS[name].value}" for name in FEATURE_FLAGS
                 if FLAGS[name].value is not None)


def start(argv: Sequence[str]) -> None:
  """Logging, extra method modules and multi-process initialisation."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  setup_logging()
  if FLAGS.deterministic:
    use_deterministic_ops()
  if FLAGS.coordinator_address or FLAGS.num_processes != 1 or FLAGS.process_id != 0:
    train.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                 FLAGS.process_id, FLAGS.distributed_timeout_s)


def loop_config() -> train.LoopConfig:
  if FLAGS.steps_per_call <= 0 or FLAGS.checkpoint_every <= 0:
    raise configs.ConfigError("--steps_per_call and --checkpoint_every must be > 0")
  if FLAGS.fixed_shards < 0:
    raise configs.ConfigError(f"--fixed_shards must be >= 0, got {FLAGS.fixed_shards}")
  return train.LoopConfig(steps_per_call=FLAGS.steps_per_call,
                          checkpoint_every=FLAGS.checkpoint_every,
                          fixed_shards=FLAGS.fixed_shards)


def _config_help(methods: Sequence[str]) -> str:
  classes = {}
  for name in methods:
    spec = registry.get(name)
    classes.setdefault(spec.config_class, spec)
  parts = ["Config file and preset, '<file>:<preset>'; override one field with "
           "--config.<field>=<value> (tuples as '(1,2)'). A config file is Python: loading "
           "it EXECUTES ITS CODE, so name only files you trust. Fields:"]
  for cls, spec in classes.items():
    parts.append(f"{cls.__name__} ({spec.config_file}; presets: {', '.join(spec.presets)})\n"
                 + configs.help_text(cls, registry.make_config(spec, "default")))
  parts.append("Search spaces (python -m experiments.tune; SEARCH_SPACES of the config file):")
  for name in methods:
    space = registry.get(name).search_space
    parts.append(f"  {name}:\n{configs.space_help(space)}" if space
                 else f"  {name}: none declared")
  return "\n".join(parts)


def _define_run_flags(methods: Sequence[str], default_method: str) -> None:
  flags.DEFINE_enum("method", default_method, list(methods),
                    "Method to run: " + "; ".join(
                        f"{m}: {registry.get(m).description}" for m in methods))
  method = argv_value("method", default_method)
  spec = registry.get(method if method in methods else default_method)
  try:
    config_flags.DEFINE_config_file("config", f"{spec.config_file}:default",
                                    _config_help(methods))
  except (AttributeError, KeyError):  # An override naming no field: the library's words.
    known = [field.name for field in dataclasses.fields(spec.config_class)]
    named = [arg.split("=")[0][len("--config."):] for arg in sys.argv
             if arg.startswith("--config.")]
    unknown = [name for name in named if name.split(".")[0] not in known] or named or ["?"]
    raise configs.ConfigError(configs.unknown_field_message(spec.config_class,
                                                            unknown[0])) from None
  flags.DEFINE_enum("dataset", "synthetic", list(data.DATASETS),
                    "Dataset: synthetic (embedded default, generated by code), wikipedia "
                    "(release files), web_news (raw release; features computed by cmjax), "
                    "arrays (your own .npz, see docs/data.md).")
  flags.DEFINE_string("data_dir", None,
                      "Release directory of wikipedia/web_news, or the .npz file of "
                      "--dataset=arrays. Default: $CMJAX_DATA_DIR/<dataset>, else "
                      "../shared/data/<dataset>.")
  flags.DEFINE_string("workdir", None,
                      "Run folder (config.json, checkpoints/, logs/ for TensorBoard, "
                      "results.json, pr_curves.png, test_scores.npy when the test score "
                      "matrix is computed whole, see --max_dense_pairs). Running again in it "
                      "resumes; a finished one is reported as it is. Default: "
                      "/tmp/cmjax/<method>/<dataset>/<preset>/seed<seed>.")
  flags.DEFINE_integer("seed", 0, "Random seed: same config and seed, same numbers.")
  flags.DEFINE_integer("max_dense_pairs", runner.MAX_DENSE_PAIRS,
                       "Test score matrices of up to this many image/text pairs are computed "
                       "whole, written to test_scores.npy and ranked for the exact ROC AUC; "
                       "larger ones are streamed over query blocks (the ROC AUC then ranks an "
                       "evenly spaced subset of image queries).", lower_bound=0)
  define_feature_flags()
  define_loop_flags()
  show_in_help(["method", "config", "dataset", "data_dir", "workdir", "seed", "max_dense_pairs",
                *FEATURE_FLAGS, *LOOP_FLAGS])


def show_in_help(names: Sequence[str]) -> None:
  """Lists the flags defined here in `--help` of the entry point (`sys.argv[0]`)."""
  for name in names:
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def _preset() -> str:
  filename = config_flags.get_config_filename(FLAGS["config"])
  return filename.split(":", 1)[1] if ":" in filename else "default"


def _run() -> tuple[dict, str]:
  """Runs `--method` as the flags say; returns its results and workdir."""
  spec = registry.get(FLAGS.method)
  overrides = config_flags.get_override_values(FLAGS["config"])
  for field, value in spec.fixed.items():
    if field in overrides and overrides[field] != value:
      raise configs.ConfigError(
          f"method {spec.name} fixes config field '{field}' to {value!r}; got "
          f"--config.{field}={overrides[field]!r} (choose the method that has it)")
  config = registry.make_config(spec, FLAGS.config)
  runner.check_seed(FLAGS.seed)
  loop = loop_config()
  preset = _preset()
  features = feature_choice()
  dataset = registry.load_data(spec, config, FLAGS.dataset, FLAGS.data_dir, features)
  workdir = FLAGS.workdir or os.path.join("/tmp/cmjax", spec.name,
                                          FLAGS.dataset + features.suffix, preset,
                                          f"seed{FLAGS.seed}")
  return runner.run(spec, config, dataset, workdir, FLAGS.seed, preset=preset, loop=loop,
                    max_dense_pairs=FLAGS.max_dense_pairs), workdir


def import_method_modules() -> None:
  """The modules of `--import_modules`, imported before the flags that list methods."""
  try:
    registry.import_modules([m for m in (argv_value("import_modules") or "").split(",") if m])
  except configs.ConfigError as e:
    exit_with_error(e)


def main(methods: Sequence[str] | None = None, default_method: str | None = None) -> None:
  """Runs one method: flags, config, data, the runner; prints the test MAP.

  Args:
    methods: the `--method` choices (default: every registered method).
    default_method: `--method`'s default (default: the first choice).
  """
  import_method_modules()
  methods = tuple(methods or registry.names())
  with flag_errors():
    sys.argv[:] = expand_config_shorthand(sys.argv)
    _define_run_flags(methods, default_method or methods[0])

  def _main(argv):
    start(argv)
    out, workdir = _run()
    m = out["map"]
    print(f"{out['method']} on {out['dataset']} seed {out['seed']}: MAP i2t {m['i2t']:.4f} "
          f"t2i {m['t2i']:.4f} avg {m['avg']:.4f}, pair ROC AUC {out['roc_auc']:.4f} "
          f"({out['wall_s']:.0f}s) -> {workdir}")
    for warning in out.get("warnings", []):
      print(f"warning: {warning}")

  run_app(_main)
