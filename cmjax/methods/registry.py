"""The method registry: name -> `MethodSpec`.

A method is one `MethodSpec` registered from its own module; the CLIs, the
runner, the leaderboard, the reports and the tests iterate over the registry
and never branch on method names. Adding a method is one file:

  from cmjax import runner
  from cmjax.methods import registry

  @dataclasses.dataclass(frozen=True)
  class MyConfig: ...                       # typed, documented, validated

  PRESETS = {"default": {}, "quick": {...}}  # this module is its config file
  def get_config(preset="default"): ...

  def fit(config, prepared, context) -> runner.Fitted:
    ...                                      # train on prepared.train
    return runner.Fitted(encode_image=..., encode_text=..., score=...)

  registry.register(registry.MethodSpec(
      name="mine", description="...", config_class=MyConfig,
      config_module=__name__, fit=fit))

and `python -m experiments.run --import_modules=my_module --method=mine` runs
it, as does `python -m experiments.leaderboard --import_modules=my_module`.
The built-in methods keep their config class and presets in
`cmjax/configs/<family>.py`, which imports no method module.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
from typing import Any, Callable, Mapping

from cmjax import configs
from cmjax import data as data_lib
from cmjax import preprocess, runner

__all__ = [
    "MethodSpec",
    "features_view",
    "fit",
    "get",
    "import_modules",
    "load_data",
    "view_options",
    "make_config",
    "names",
    "register",
    "run",
]

# Modules that register the built-in methods (imported on first use).
BUILTIN_MODULES = ("cmjax.methods.uncsm", "cmjax.methods.emd_cnn", "cmjax.methods.fgl",
                   "cmjax.methods.dbrc", "cmjax.methods.linear", "cmjax.methods.deep",
                   "cmjax.methods.hashing_baselines")

# view(config, dataset_name) -> the view config to load (`cmjax.data.ViewOptions`:
# which view, and its options, a field of the method's config).
ViewFn = Callable[[Any, str], data_lib.ViewOptions]


def features_view(config: Any, dataset: str) -> data_lib.ViewOptions:
  """Every method that reads feature vectors: the `features` view."""
  del config, dataset
  return data_lib.FeaturesOptions()


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """Everything the runner and the CLIs need to know of a method.

  Attributes:
    name: registry key, CLI `--method` value and results' `method`.
    description: one line for `--help` and reports.
    config_class: the typed (frozen dataclass) config.
    config_module: module with `PRESETS` and `get_config(preset)` (the config
      file; `--config=<its path>:<preset>`).
    fit: `(config, prepared, context) -> runner.Fitted`.
    prepare: `(config, dataset, seed) -> preprocess.Prepared`; default: the
      config's validation split and input transform.
    view: which data view the method reads, see `ViewFn`.
    fixed: config values this name implies (e.g. a control row's distance);
      they override the preset, and an override that contradicts them is an error.
    published: dataset -> published (I->T, T->I) MAP, shown in the leaderboard.
    family: methods of one family get a "best of" line in the leaderboard.
    hashing: a hashing method (its config has `bits`; `fit` returns codes and the
      runner adds the hashing protocol's metrics).
    published_hashing: dataset -> bits -> published (I->T, T->I) mAP@50.
  """

  name: str
  description: str
  config_class: type
  config_module: str
  fit: Callable[[Any, preprocess.Prepared, runner.FitContext], runner.Fitted]
  prepare: Callable[[Any, data_lib.Dataset, int], preprocess.Prepared] = runner.default_prepare
  view: ViewFn = features_view
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  published: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
  family: str | None = None
  hashing: bool = False
  published_hashing: Mapping[str, Mapping[int, tuple[float, float]]] = dataclasses.field(
      default_factory=dict)

  @property
  def config_file(self) -> str:
    """The path of the config file (for `--config=<path>:<preset>`)."""
    return importlib.util.find_spec(self.config_module).origin

  @property
  def presets(self) -> tuple[str, ...]:
    return tuple(importlib.import_module(self.config_module).PRESETS)

  @property
  def search_space(self) -> dict[str, configs.Param]:
    """What `cmjax.tune` samples: `SEARCH_SPACES[name]` of the config file ({}: none)."""
    return configs.search_space(self.config_module, self.name)


_REGISTRY: dict[str, MethodSpec] = {}
_loaded = False


def _origin(fn: Callable) -> tuple:
  """Where a fit function is defined (the same after its file is executed again)."""
  args = ()
  if isinstance(fn, functools.partial):
    fn, args = fn.func, fn.args
  return fn.__qualname__, fn.__code__.co_filename, args


def register(spec: MethodSpec) -> MethodSpec:
  """Adds `spec`; a name can be registered once.

  The same file executed again (as `ml_collections` does with a config file
  that is also the method's module) keeps the first registration.
  """
  old = _REGISTRY.get(spec.name)
  if old is not None:
    if _origin(old.fit) != _origin(spec.fit):
      raise ValueError(f"method {spec.name!r} is registered already (by "
                       f"{_origin(old.fit)[1]})")
    return old
  _REGISTRY[spec.name] = spec
  return spec


def import_modules(modules: list[str] | tuple[str, ...]) -> None:
  """Imports modules that register methods (e.g. a user's own method file)."""
  for module in modules:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise configs.ConfigError(f"cannot import method module {module!r}: {e}") from None


def _load_builtins() -> None:
  global _loaded
  if not _loaded:
    _loaded = True
    import_modules(BUILTIN_MODULES)


def names() -> tuple[str, ...]:
  """Every registered method, in registration order."""
  _load_builtins()
  return tuple(_REGISTRY)


def get(name: str) -> MethodSpec:
  """The spec of `name`.

  Raises:
    ConfigError: unknown name (the message lists the known ones).
  """
  _load_builtins()
  if name not in _REGISTRY:
    raise configs.ConfigError(f"unknown method {name!r}; choose from {', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def make_config(spec: MethodSpec, values: Mapping[str, Any] | str = "default",
                **overrides: Any) -> Any:
  """The typed config of `spec` from a preset name or a (ConfigDict) mapping, with
  field `overrides`, strictly (`cmjax.configs.from_dict`, as the CLI converts).

  A nested section is overridden field by field, by a mapping
  (`training=dict(batch_size=8)`) or by dotted paths
  (`**{"training.batch_size": 8}`, as search spaces and tuned files name them).

  Raises:
    configs.ConfigError: unknown preset or field, a value of the wrong type or
      invalid, or a value that contradicts the method's fixed settings.
  """
  if isinstance(values, str):
    if values not in spec.presets:
      raise configs.ConfigError(f"unknown preset {values!r} for method {spec.name}; choose "
                                f"from {', '.join(spec.presets)}")
    values = importlib.import_module(spec.config_module).get_config(values)
  clash = {k: v for k, v in overrides.items() if k in spec.fixed and v != spec.fixed[k]}
  if clash:
    raise configs.ConfigError(f"method {spec.name} fixes {clash} differently: "
                              f"{dict(spec.fixed)}")
  return configs.from_dict(spec.config_class, configs.merge(values, overrides, spec.fixed))


def view_options(spec: MethodSpec, config: Any, dataset: str,
              features: data_lib.FeatureChoice = data_lib.FeatureChoice()
              ) -> data_lib.ViewOptions:
  """The view config `spec` reads of `dataset`, with the feature choice applied."""
  return data_lib.with_features(spec.view(config, dataset), features)


def load_data(spec: MethodSpec, config: Any, dataset: str, data_dir: str | None = None,
              features: data_lib.FeatureChoice = data_lib.FeatureChoice()) -> data_lib.Dataset:
  """The data view `spec` reads of `dataset` (see `cmjax.data.load_dataset`), with
  the image/text feature choice applied (`cmjax.data.with_features`)."""
  view = view_options(spec, config, dataset, features)
  return data_lib.load_dataset(dataset, data_dir, view=view)


def fit(name: str, dataset: data_lib.Dataset, workdir: str, seed: int = 0,
        preset: str = "default", **overrides: Any):
  """Fits method `name` as `run` would (same workdir: a finished run is not
  trained again) and returns `(runner.Fitted, preprocess.Prepared)`, to look
  inside the model in a notebook (see `cmjax.runner.fit`)."""
  spec = get(name)
  return runner.fit(spec, make_config(spec, preset, **overrides), dataset, workdir, seed)


def run(name: str, dataset: data_lib.Dataset, workdir: str, seed: int = 0,
        preset: str = "default", **overrides: Any) -> dict:
  """Runs method `name` on `dataset` with its `preset` and field `overrides`.

  The notebook form of `python -m experiments.run --method=NAME`; returns the
  `results.json` dict (see `cmjax.runner.run`). The overrides convert as the
  CLI's `--config.<field>` do: a bad value is one `ConfigError` before any work.
  """
  spec = get(name)
  config = make_config(spec, preset, **overrides)
  return runner.run(spec, config, dataset, workdir, seed, preset=preset)
