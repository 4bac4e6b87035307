"""Checked reading of the plain values stored in run files (config.json, checkpoints).

Run files are data a user can edit or receive from someone else: every value is checked
for its type before it is used, and a wrong one is one error naming the file and key
(``config.json: 'split' is missing``), never a ``KeyError`` or ``TypeError`` later on.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from dynvae.errors import ConfigError

_DATA_SPEC = {"data": str, "dataset": str, "options": dict, "id_col": str, "time_col": str,
              "value_cols": list, "input_cols": list, "date_format": str}


def fail(error: type[Exception], where: str, message: str):
    """Raise ``error`` with ``where: message`` (``where`` names the file and key)."""
    raise error(f"{where}: {message}")


def field(mapping: Mapping, key: str, kind: type | tuple[type, ...], where: str,
          error: type[Exception] = ConfigError, optional: bool = False) -> Any:
    """``mapping[key]`` checked to be an instance of ``kind`` (bool is not an int)."""
    if key not in mapping:
        if optional:
            return None
        fail(error, where, f"{key!r} is missing")
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(_type_name(k) for k in kinds)
        fail(error, where, f"{key!r} must be {names}, got {_type_name(type(value))} "
             f"{_short(value)}")
    return value


def mapping_of(value: Any, where: str, error: type[Exception] = ConfigError) -> dict:
    if not isinstance(value, Mapping):
        fail(error, where, f"expected a mapping of names to values, got "
             f"{_type_name(type(value))} {_short(value)}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        fail(error, where, f"keys must be strings, got {_short(bad[0])}")
    return dict(value)


def dataclass_from(cls: type, values: Any, where: str,
                   error: type[Exception] = ConfigError) -> Any:
    """An instance of the dataclass ``cls`` from saved ``values``: unknown keys and values
    of the wrong type are errors naming the key; missing keys take their defaults, but
    for the keys of ``cls.SAVED_BEFORE`` (a field added with a default that changes the
    model: the value that a config saved before the field existed meant)."""
    values = mapping_of(values, where, error)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        fail(error, where, f"unknown key {unknown[0]!r} (known keys: {sorted(fields)})")
    hints = typing.get_type_hints(cls)
    checked = {key: _coerce(value, hints[key], f"{where}: {key!r}", error)
               for key, value in values.items()}
    for key, value in getattr(cls, "SAVED_BEFORE", {}).items():
        checked.setdefault(key, value)
    try:
        return cls(**checked)
    except (ConfigError, ValueError, TypeError) as err:
        fail(error, where, str(err))


def _coerce(value: Any, kind: Any, where: str, error: type[Exception]) -> Any:
    """``value`` as the annotated type ``kind`` (bool, int, float, str, tuple[X, ...],
    X | None); JSON lists become tuples, integers are accepted as floats."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(value, option, where, error)
            except error:
                continue
        raise error(f"{where} must be {' or '.join(_type_name(a) for a in args)}, got "
                    f"{_short(value)}")
    if typing.get_origin(kind) is tuple and args and args[-1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise error(f"{where} must be a list, got {_short(value)}")
        return tuple(_coerce(v, args[0], where, error) for v in value)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise error(f"{where} must be a finite number, got {value}")
        return float(value)
    if kind in (bool, int, str):
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise error(f"{where} must be {_type_name(kind)}, got {_short(value)}")
    if kind is Any:
        return value
    raise error(f"{where}: values of type {kind} cannot be read from a run file")


def check_data_spec(spec: Any, where: str, error: type[Exception] = ConfigError) -> dict:
    """A saved data source: ``{"dataset": name, "options": {...}}`` or ``{"data": file,
    "id_col": ..., "time_col": ..., "value_cols": [...], "input_cols": [...],
    "date_format": ...}`` (column entries may be null)."""
    spec = mapping_of(spec, where, error)
    unknown = sorted(set(spec) - set(_DATA_SPEC))
    if unknown:
        fail(error, where, f"unknown key {unknown[0]!r} (known keys: {sorted(_DATA_SPEC)})")
    if ("data" in spec) == ("dataset" in spec):
        fail(error, where, "needs exactly one of 'data' (a file) and 'dataset' (a name)")
    for key, kind in _DATA_SPEC.items():
        if spec.get(key) is not None:
            field(spec, key, kind, where, error)
    for key in ("value_cols", "input_cols"):
        if spec.get(key) is not None and not all(isinstance(c, str) for c in spec[key]):
            fail(error, where, f"{key!r} must be a list of column names")
    if spec.get("options") is not None:
        mapping_of(spec["options"], f"{where} 'options'", error)
    return spec


def _type_name(kind: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
             float: "a number", bool: "true or false", type(None): "null"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
