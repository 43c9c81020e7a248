"""Typed method configs, their named presets, and strict conversion.

Every method's settings are one frozen dataclass (e.g. `UNCSMConfig`): its
field defaults, its `Attributes:` docstring (shown by `--help`) and its
validation (`__post_init__`, through the `check_*` helpers of `cmjax.checks`,
re-exported here) live there.
The class and its named presets live in one config file beside this module,
one per method family, in the big_vision / scenic style; a config file
imports no method module (the methods import their config classes from it).
`cmjax/configs/uncsm.py` has `get_config("paper")`, and the command line picks
and overrides it:

  python -m experiments.uncsm --config=cmjax/configs/uncsm.py:paper \
      --config.training.learning_rate=0.01

The settings every method shares live once, in nested sections: `prepare`
(`PrepareConfig`: the input transform and the validation split, all methods)
and `training` (`TrainingConfig`: learning rate, weight decay, batch size,
validation cadence and patience, the trained methods). A config class declares
its own defaults for them (`training: TrainingConfig = TrainingConfig(...)`).
Presets, overrides, search spaces and tuned files address a nested field by its
dotted path (`"training.learning_rate"`), as the command line does; a nested
mapping is applied field by field over the class's default for that section.

A config file returns an `ml_collections.ConfigDict` (so that
`ml_collections.config_flags` can override it field by field); `from_dict`
turns it into the typed config strictly: an unknown key, a value of the wrong
type or an invalid value is a `ConfigError` naming the field, before any work.

Beside its presets a config file declares the search space of each of its
methods, `SEARCH_SPACES = {method: {path: Float(...) | Int(...) | Choice(...)}}`:
the fields a user of that method would tune, with their ranges
(`python -m experiments.tune`, `cmjax.tune`; listed by `--help`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import os
import re
import typing
from typing import Any, Iterable, Literal, Mapping, TypeVar

import ml_collections

from cmjax.checks import (  # noqa: F401  (re-exported)
    MAX_BATCH_SIZE, ConfigError, _hints, check_batch_size, check_choice, check_fraction,
    check_literals, check_non_negative, check_nonempty, check_positive)

__all__ = [
    "ConfigError",
    "MAX_BATCH_SIZE",
    "check_batch_size",
    "check_choice",
    "check_fraction",
    "check_literals",
    "check_nonempty",
    "check_non_negative",
    "check_positive",
    "Choice",
    "Float",
    "InputTransform",
    "Int",
    "PrepareConfig",
    "TrainingConfig",
    "check_search_space",
    "config_file",
    "field_docs",
    "field_paths",
    "flatten",
    "from_dict",
    "help_text",
    "load_preset",
    "merge",
    "nest",
    "preset_config",
    "preset_values",
    "presets",
    "replace",
    "search_space",
    "space_help",
    "to_config_dict",
    "unknown_field_message",
]

T = TypeVar("T")
CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# The sections every method shares.
# ---------------------------------------------------------------------------


# What `cmjax.preprocess` can fit on the training features.
InputTransform = Literal["none", "standardize", "sqrt_standardize", "l2"]


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """How the training split is prepared before a fit (every method; the runner's
  `prepare` reads it).

  Attributes:
    input_transform: feature transform fitted on train: none, standardize,
      sqrt_standardize (Hellinger map then standardise, for histograms), l2.
      Pixels, character ids and graph signals are never transformed.
    validation_fraction: share of train carved out (stratified) for model
      selection and early stopping (the closed-form methods: to choose their
      ridge); 0 disables. The test split is never used.
  """

  input_transform: InputTransform = "sqrt_standardize"
  validation_fraction: float = 0.15

  def __post_init__(self):
    check_literals(self)
    check_fraction(self, "validation_fraction")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """The optimiser and validation settings of a trained method's stages.

  Attributes:
    learning_rate: learning rate of every stage the method trains with its
      optimiser.
    weight_decay: weight decay (decoupled for Adam(W); an L2 gradient term
      for SGD and RMSProp).
    batch_size: rows (pairs, triplets, documents) a step, over all devices:
      split over them, so it must be divisible by their number.
    eval_every: steps between validation evaluations.
    patience: stop after this many evaluations without improvement (0: never).
  """

  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  batch_size: int = 128
  eval_every: int = 250
  patience: int = 4

  def __post_init__(self):
    check_positive(self, "learning_rate", "batch_size", "eval_every")
    check_non_negative(self, "weight_decay", "patience")
    check_batch_size(self, "batch_size")


# ---------------------------------------------------------------------------
# Strict conversion.
# ---------------------------------------------------------------------------


def nest(values: Mapping[str, Any]) -> dict:
  """`values` with every dotted key as nested mappings, later keys applied over
  earlier ones field by field: `{"training": {"batch_size": 8, "patience": 4},
  "training.batch_size": 16}` is `{"training": {"batch_size": 16, "patience": 4}}`.
  A dataclass value (a nested config) counts as the mapping of its fields."""
  out: dict = {}
  for key, value in values.items():
    head, _, rest = key.partition(".")
    if rest:
      value = {rest: value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
      value = dataclasses.asdict(value)
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    if isinstance(value, Mapping):
      value = nest(value)
      if isinstance(out.get(head), Mapping):
        value = merge(out[head], value)
    out[head] = value
  return out


def merge(*layers: Mapping[str, Any]) -> dict:
  """`layers` applied in order, each over the ones before field by field (keys as
  dotted paths or nested mappings; a ConfigDict or dataclass value counts as its
  fields): `merge({"training": {"batch_size": 8, "patience": 4}},
  {"training": {"batch_size": 16}})` keeps the patience."""
  flat: dict = {}
  for layer in layers:
    flat.update(flatten(nest(layer)))
  return nest(flat)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict:
  """The leaves of nested `values` by dotted path (the inverse of `nest`)."""
  out = {}
  for key, value in values.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def field_paths(cls: type) -> tuple[str, ...]:
  """Every field of `cls` by dotted path, a nested config's fields as
  `section.field` (the names `--config.<path>`, presets and search spaces use)."""
  hints, paths = _hints(cls), []
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      paths.extend(f"{f.name}.{p}" for p in field_paths(hints[f.name]))
    else:
      paths.append(f.name)
  return tuple(paths)


def _coerce(name: str, hint: Any, value: Any) -> Any:
  """`value` as the type `hint` of field `name`, or a ConfigError."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  wrong = lambda: ConfigError(
      f"config field '{name}' must be {_type_name(hint)}, got {value!r} "
      f"({type(value).__name__})")
  if origin is typing.Literal:
    if value not in args:
      raise ConfigError(f"config field '{name}' must be one of "
                        f"{', '.join(map(str, args))}; got {value!r}")
    return value
  if origin is tuple:
    if isinstance(value, str) or not isinstance(value, Iterable):
      raise wrong()
    items = tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(name, args[0], v) for v in items)
    if len(items) != len(args):
      raise ConfigError(f"config field '{name}' needs {len(args)} values, got {value!r}")
    return tuple(_coerce(name, a, v) for a, v in zip(args, items))
  if hint is bool:
    if not isinstance(value, bool):
      raise wrong()
    return value
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, int):
      raise wrong()
    return value
  if hint is float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise wrong()
    return float(value)
  if hint is str:
    if not isinstance(value, str):
      raise wrong()
    return value
  if origin is typing.Union and type(None) in args:  # Optional[X].
    return None if value is None else _coerce(name, args[0], value)
  if dataclasses.is_dataclass(hint):  # A nested config: a mapping of its fields.
    if isinstance(value, hint):
      return value
    if not isinstance(value, Mapping):
      raise wrong()
    return from_dict(hint, value, prefix=f"{name}.")
  return value


def _type_name(hint: Any) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Literal:
    return "one of " + ", ".join(map(str, args))
  if origin is tuple:
    if len(args) == 2 and args[1] is Ellipsis:
      return f"a list of {_type_name(args[0])}"
    return f"{len(args)} values"
  return getattr(hint, "__name__", str(hint))


def unknown_field_message(cls: type, field: str, prefix: str = "") -> str:
  """"unknown config field 'f' for Cls; did you mean 'g'? known fields: ...".

  `field` may be a dotted path into a nested section (the message then names
  that section's class and fields); the hint is the closest field by name,
  by its dotted path (`learning_rate` -> `training.learning_rate`)."""
  head, _, rest = field.partition(".")
  hints = _hints(cls)
  if rest and head in hints and dataclasses.is_dataclass(hints[head]):
    return unknown_field_message(hints[head], rest, f"{prefix}{head}.")
  leaves: dict[str, str] = {}
  for path in field_paths(cls):
    leaves.setdefault(path.rsplit(".", 1)[-1], path)
  close = difflib.get_close_matches(field.rsplit(".", 1)[-1], list(leaves), n=1)
  hint = f"did you mean '{prefix}{leaves[close[0]]}'? " if close else ""
  known = [f.name for f in dataclasses.fields(cls)]
  return (f"unknown config field '{prefix}{field}' for {cls.__name__}; {hint}known fields: "
          f"{', '.join(known)}")


def from_dict(cls: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
  """The typed config `cls(**values)`, checked strictly. Keys may be dotted paths
  (`nest`); a field whose type is a dataclass (a nested config) takes a mapping
  of its own fields, applied over `cls`'s default for that field.

  Raises:
    ConfigError: an unknown key (naming the known ones), a value of the wrong
      type, or a value the class's validation rejects (naming the field by its
      dotted path).
  """
  values = nest(values)
  hints = _hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigError(unknown_field_message(cls, unknown[0], prefix))
  for name, value in values.items():
    default = fields[name].default
    if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
      values[name] = merge(dataclasses.asdict(default), value)
  typed = {k: _coerce(prefix + k, hints[k], v) for k, v in values.items()}
  try:
    return cls(**typed)
  except ConfigError as e:  # The class's own checks name the field without its section.
    if not prefix:
      raise
    raise ConfigError(str(e).replace("config field '", f"config field '{prefix}", 1)) from None


def replace(config: T, **overrides: Any) -> T:
  """A copy of the typed `config` with `overrides` (fields, nested mappings such as
  `training=dict(batch_size=8)`, or dotted paths), converted strictly.

  Raises:
    ConfigError: as `from_dict`.
  """
  return from_dict(type(config), merge(dataclasses.asdict(config), overrides))


def preset_values(presets: Mapping[str, Mapping[str, Any]], name: str,
                  config_file: str) -> Mapping[str, Any]:
  """`presets[name]`, or a `ConfigError` listing the presets of `config_file`."""
  if name not in presets:
    raise ConfigError(f"unknown preset '{name}' in {config_file}; choose from "
                      f"{', '.join(presets)}")
  return presets[name]


def preset_config(cls: type, presets: Mapping[str, Mapping[str, Any]], name: str,
                  config_file: str) -> ml_collections.ConfigDict:
  """A config file's `get_config(name)`: `presets[name]` over `cls`'s defaults,
  converted strictly (`from_dict`), as an overridable ConfigDict."""
  return to_config_dict(from_dict(cls, preset_values(presets, name, config_file)))


def to_config_dict(config: Any) -> ml_collections.ConfigDict:
  """A typed config as an (overridable) ConfigDict; tuples stay tuples."""
  return ml_collections.ConfigDict(dataclasses.asdict(config))


def config_file(family: str) -> str:
  """The path of the config file `cmjax/configs/<family>.py`."""
  return os.path.join(CONFIG_DIR, f"{family}.py")


@functools.lru_cache(maxsize=None)
def _module(family: str):
  return importlib.import_module(f"cmjax.configs.{family}")


def presets(family: str) -> tuple[str, ...]:
  """The preset names of a config file."""
  return tuple(_module(family).PRESETS)


def load_preset(family: str, preset: str, cls: type[T]) -> T:
  """`get_config(preset)` of `cmjax/configs/<family>.py`, as the typed `cls`."""
  if preset not in presets(family):
    raise ConfigError(f"unknown preset '{preset}' in {config_file(family)}; "
                      f"choose from {', '.join(presets(family))}")
  return from_dict(cls, _module(family).get_config(preset))


# ---------------------------------------------------------------------------
# Search spaces (what `cmjax.tune` samples).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Float:
  """A float field tuned in `[low, high]`, on a log scale if `log`."""

  low: float
  high: float
  log: bool = False

  def __str__(self) -> str:
    return f"float in [{self.low:g}, {self.high:g}]" + (", log scale" if self.log else "")


@dataclasses.dataclass(frozen=True)
class Int:
  """An int field tuned in `[low, high]` by `step`, on a log scale if `log`."""

  low: int
  high: int
  log: bool = False
  step: int = 1

  def __str__(self) -> str:
    return (f"int in [{self.low}, {self.high}]" + (f" by {self.step}" if self.step != 1 else "")
            + (", log scale" if self.log else ""))


@dataclasses.dataclass(frozen=True)
class Choice:
  """A field tuned among `values` (any field type: tuples of widths too)."""

  values: tuple

  def __str__(self) -> str:
    return "one of " + ", ".join(map(repr, self.values))


Param = Float | Int | Choice


def search_space(config_module: str, method: str) -> dict[str, Param]:
  """`SEARCH_SPACES[method]` of a config module (`{}`: the method declares none)."""
  module = importlib.import_module(config_module)
  return dict(getattr(module, "SEARCH_SPACES", {}).get(method, {}))


def check_search_space(cls: type, space: Mapping[str, Param], base: Mapping[str, Any],
                       where: str) -> None:
  """Every field of `space` is a field of `cls` (by dotted path, `field_paths`),
  every range is ordered, and each end of every range (each choice) makes a
  valid config over `base`.

  Raises:
    ConfigError: naming `where` (the config file), the field and the problem.
  """
  known = set(field_paths(cls))
  for field, param in space.items():
    if field not in known:
      raise ConfigError(f"{where}: search space names '{field}', not a field of "
                        f"{cls.__name__}")
    if isinstance(param, (Float, Int)):
      if not param.low < param.high or (param.log and param.low <= 0):
        raise ConfigError(f"{where}: search space of '{field}' needs 0 < low < high on a "
                          f"log scale, low < high otherwise; got {param}")
      if isinstance(param, Int) and (param.step < 1 or (param.log and param.step != 1)):
        raise ConfigError(f"{where}: search space of '{field}' needs a step >= 1, and 1 on "
                          f"a log scale; got {param}")
      ends = (param.low, param.high)
    elif isinstance(param, Choice) and param.values:
      ends = param.values
    else:
      raise ConfigError(f"{where}: search space of '{field}' is {param!r}, not a Float, "
                        "Int or non-empty Choice")
    for value in ends:
      try:
        from_dict(cls, {**base, field: value})
      except ConfigError as e:
        raise ConfigError(f"{where}: search space of '{field}' allows {value!r}: {e}") from None


def space_help(space: Mapping[str, Param]) -> str:
  """One line per tuned field: `field: float in [a, b], log scale`."""
  return "\n".join(f"    {field}: {param}" for field, param in space.items())


# ---------------------------------------------------------------------------
# Documentation (for --help).
# ---------------------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
  """`{field: description}` from the `Attributes:` section of `cls`'s docstring."""
  doc = cls.__doc__ or ""
  section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
  docs, current = {}, None
  for line in section.splitlines():
    match = re.match(r"^\s{2,4}(\w+):\s*(.*)$", line)
    if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
      current = match.group(1)
      docs[current] = match.group(2).strip()
    elif current and line.strip():
      docs[current] += " " + line.strip()
    elif not line.strip():
      current = None
  return docs


def help_text(cls: type, defaults: Any, prefix: str = "") -> str:
  """One line per field: `name (type, default ...): description`; a nested config's
  fields as `name.field`."""
  docs, hints = field_docs(cls), _hints(cls)
  lines = []
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      lines.append(f"  {prefix}{f.name}: {docs.get(f.name, 'undocumented')}")
      lines.append(help_text(hints[f.name], getattr(defaults, f.name), f"{prefix}{f.name}."))
      continue
    lines.append(f"  {prefix}{f.name} ({_type_name(hints[f.name])}, default "
                 f"{getattr(defaults, f.name)!r}): {docs.get(f.name, 'undocumented')}")
  return "\n".join(lines)
