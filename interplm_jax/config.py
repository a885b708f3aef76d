"""YAML configs -> frozen dataclasses, and click options from the same dataclasses.

A config class is a frozen dataclass whose fields are made with :func:`option`, which records
the help text; defaults are written once, in the dataclass. Validation lives in the class's
``__post_init__`` (raise ``ValueError``); :func:`from_dict` turns any problem into an
:class:`~interplm_jax.errors.InputError` naming the file and the key. :func:`config_options`
gives a script ``--config`` and one option per field, and hands the command the resolved
dataclass (file values, then the options given).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import click
import yaml

from interplm_jax.errors import InputError

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs) -> Any:
    """A dataclass field carrying its help text (used by :func:`config_options` and the docs)."""
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
    """Read a YAML file (optionally one ``section`` of it, dotted for a sub-section such as
    ``analysis.umap``) into ``cls``."""
    data = read_yaml(path)
    where = str(path)
    for key in section.split(".") if section else ():
        data = data.get(key) or {}
        where = f"{where}:{key}" if where == str(path) else f"{where}.{key}"
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
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


_NONE_WORDS = ("null", "none")


def _click_type(hint: Any) -> tuple[Any, str | None]:
    """(click type, metavar) of a field's type hint; type None when not a command-line value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    names = {int: "INTEGER", float: "FLOAT", str: "TEXT"}
    if origin is typing.Literal:
        return click.Choice([str(a) for a in args]), None
    if hint in names:
        return {int: click.INT, float: click.FLOAT, str: click.STRING}[hint], None
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and inner[0] in names:
            return click.STRING, f"{names[inner[0]]}|null"
    if origin is tuple and args and args[0] in names:
        return click.STRING, f"{names[args[0]]},..."
    return None, None


def _flag(name: str) -> str:
    return "--" + name.rsplit(".", 1)[-1].replace("_", "-")


def _field(cls: type, name: str) -> tuple[dataclasses.Field, Any]:
    """The field ``name`` of ``cls`` (dotted for a nested config's field) and its type hint."""
    head, _, rest = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if head not in fields:
        raise TypeError(f"{cls.__name__} has no field {head!r}")
    hint = typing.get_type_hints(cls)[head]
    return _field(hint, rest) if rest else (fields[head], hint)


def config_options(cls: type, section: str, *names: str, skip: tuple[str, ...] = ()):
    """Click decorator: ``--config`` and one option per field of the config dataclass ``cls``.

    The command receives ``cfg``: the ``section`` of ``--config`` (dotted for a sub-section;
    the dataclass defaults without ``--config``) with the options given on top. Options default
    to None (not given keeps the file's value); booleans are ``--name/--no-name``, tuples
    comma-separated (``A,B,...``), optional values take ``null``. Help is the field's, with its
    default. Put it below ``@command`` so that a bad value is a named error (exit status 2).

    Args:
      names: the fields offered, dotted for a field of a nested config (``llm.model`` gives
        ``--model``); default: every field with a command-line type, minus ``skip``.
    """
    explicit = bool(names)
    names = [n for n in names or (f.name for f in dataclasses.fields(cls)) if n not in skip]
    offered = [click.option(
        "--config", "config", type=click.Path(dir_okay=False), default=None,
        help=f"YAML config; its {section}: section gives the values of the options below "
             "(an option given on the command line wins).")]
    dests = {}  # click parameter name -> field name
    for name in names:
        f, hint = _field(cls, name)
        kind, metavar = (None, None) if hint is bool else _click_type(hint)
        if hint is not bool and kind is None:
            if explicit:
                raise TypeError(f"{cls.__name__}.{name}: no command-line form for {hint}")
            continue  # nested configs, mappings: the config file only
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (",".join(map(str, default)) if isinstance(default, tuple)
                 else "null" if default is None else default)
        help_ = f"{f.metadata.get('help', '')} [default: {shown}]"
        flag, dest = _flag(name), name.replace(".", "__")
        dests[dest] = name
        if hint is bool:
            offered.append(click.option(f"{flag}/--no-{flag[2:]}", dest, default=None, help=help_))
        else:
            offered.append(click.option(flag, dest, type=kind, default=None, metavar=metavar,
                                        help=help_))

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, config: str | None = None, **kwargs):
            given = {dests[d]: kwargs.pop(d) for d in list(kwargs) if d in dests}
            return fn(*args, cfg=resolve(cls, section, config, given), **kwargs)

        for add in reversed(offered):  # click lists options in decorator order, top down
            wrapper = add(wrapper)
        return wrapper
    return deco


def resolve(cls: type[T], section: str, config: str | Path | None,
            options: Mapping[str, Any]) -> T:
    """``cls`` from the ``section`` of the YAML file ``config`` (defaults without one), with
    the ``options`` (field name, dotted for a nested field -> value) that are not None on top;
    each option's value is checked under its flag."""
    cfg = load_yaml(cls, config, section) if config else cls()
    data = to_dict(cfg)
    given = []
    for name, value in options.items():
        if value is None:
            continue
        hint = _field(cls, name)[1]
        if isinstance(value, str) and typing.get_origin(hint) is tuple:
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif (isinstance(value, str) and value.lower() in _NONE_WORDS
              and type(None) in typing.get_args(hint)):
            value = None
        *path, leaf = name.split(".")
        node = data
        for key in path:
            node = node[key]
        node[leaf] = _coerce(value, hint, _flag(name))
        given.append(_flag(name))
    if not given:
        return cfg
    flags = ", ".join(given)
    return from_dict(cls, data, f"{config}:{section} with {flags}" if config else flags)
