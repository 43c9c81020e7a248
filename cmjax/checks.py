"""The leaf of cmjax: the config error and the field checks every layer uses.

`ConfigError` and the `check_*` helpers validate typed settings (method
configs, data view options, loop settings). This module imports nothing of
cmjax, so the data layer, preprocessing and the training loop use it without
importing upward into `cmjax.configs` (which re-exports all of it).
"""

from __future__ import annotations

import functools
import typing
from typing import Any, Iterable

__all__ = [
    "MissingPackageError",
    "UserError",
    "ConfigError",
    "MAX_BATCH_SIZE",
    "check_batch_size",
    "check_choice",
    "check_fraction",
    "check_literals",
    "check_nonempty",
    "check_non_negative",
    "check_positive",
]


class UserError(Exception):
  """The base of the project's own errors: what a user's input, installation or a
  run's state causes, with a one-line message that names the cause. A command ends
  on one with that line (exit 1); any other exception is a bug and keeps its
  traceback."""


class ConfigError(UserError, ValueError):
  """An invalid config: the message names the field and the problem."""


class MissingPackageError(UserError, ImportError):
  """An optional package a feature needs is not installed; says what to install."""


# ---------------------------------------------------------------------------
# Validation helpers, called from the config classes' `__post_init__`.
# ---------------------------------------------------------------------------


def _values(config: Any, names: Iterable[str]):
  for name in names:
    value = getattr(config, name)
    for item in value if isinstance(value, tuple) else (value,):
      yield name, item


def check_positive(config: Any, *names: str) -> None:
  """Every named field (or every element of a tuple field) is > 0."""
  for name, value in _values(config, names):
    if not value > 0:
      raise ConfigError(f"config field '{name}' must be > 0, got {getattr(config, name)!r}")


def check_non_negative(config: Any, *names: str) -> None:
  """Every named field is >= 0."""
  for name, value in _values(config, names):
    if not value >= 0:
      raise ConfigError(f"config field '{name}' must be >= 0, got {getattr(config, name)!r}")


def check_fraction(config: Any, *names: str) -> None:
  """Every named field is in [0, 1)."""
  for name, value in _values(config, names):
    if not 0.0 <= value < 1.0:
      raise ConfigError(f"config field '{name}' must be in [0, 1), got {value!r}")


def check_choice(config: Any, name: str, choices: Iterable[Any]) -> None:
  """The named field is one of `choices`."""
  choices = tuple(choices)
  value = getattr(config, name)
  if value not in choices:
    raise ConfigError(f"config field '{name}' must be one of {', '.join(map(str, choices))}; "
                      f"got {value!r}")


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def check_literals(config: Any) -> None:
  """Every `Literal[...]`-typed field holds one of its values."""
  for name, hint in _hints(type(config)).items():
    if typing.get_origin(hint) is typing.Literal:
      check_choice(config, name, typing.get_args(hint))


def check_nonempty(config: Any, *names: str) -> None:
  """Every named tuple field has at least one element (a network needs a layer)."""
  for name in names:
    if not getattr(config, name):
      raise ConfigError(f"config field '{name}' needs at least one value, got "
                        f"{getattr(config, name)!r}")


# Largest batch of any stage: its rows are gathered on every device at once.
MAX_BATCH_SIZE = 1 << 16


def check_batch_size(config: Any, *names: str) -> None:
  """Every named batch-size field is in [1, MAX_BATCH_SIZE]."""
  check_positive(config, *names)
  for name in names:
    if getattr(config, name) > MAX_BATCH_SIZE:
      raise ConfigError(f"config field '{name}' must be at most {MAX_BATCH_SIZE:,} (rows "
                        f"gathered per step), got {getattr(config, name):,}")
