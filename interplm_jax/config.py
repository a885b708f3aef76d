"""YAML configs -> frozen dataclasses, and click options from the same dataclasses.

A config class is a frozen dataclass whose fields are made with :func:`option`, which records
the help text; defaults are written once, in the dataclass. Validation lives in the class's
``__post_init__`` (raise ``ValueError``); :func:`from_dict` turns any problem into an
:class:`~interplm_jax.errors.InputError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from interplm_jax.errors import InputError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A dataclass field carrying its help text (used by :func:`click_options` and the docs)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple (or default_factory) for collection defaults")
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Coerce YAML scalars to the annotated type (YAML 1.1 reads ``1e-4`` as a string)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except InputError:
                continue
        raise InputError(f"{where}: {value!r} is not a valid {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or origin is typing.Literal:
        if origin is typing.Literal and value not in args:
            raise InputError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise InputError(f"{where}: {value!r} is not a number") from None
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InputError(f"{where}: {value!r} is not an integer")
        try:
            as_float = float(value)
        except ValueError:
            raise InputError(f"{where}: {value!r} is not an integer") from None
        if as_float != int(as_float):
            raise InputError(f"{where}: {value!r} is not an integer")
        return int(as_float)
    if hint is bool and not isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not true/false")
    if hint is str and not isinstance(value, str):
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build the dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: {e}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (named errors when absent or malformed)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def load_yaml(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Read a YAML file (optionally one top-level ``section`` of it) into ``cls``."""
    data = read_yaml(path)
    where = str(path)
    if section is not None:
        data = data.get(section, {})
        where = f"{path}:{section}"
    return from_dict(cls, data, where)


def to_dict(obj: Any) -> dict[str, Any]:
    """The dataclass as plain YAML-able data (tuples become lists)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text, for CLIs and docs."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
