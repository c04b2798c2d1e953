"""Typed dataclass configurations <-> dicts, YAML/JSON files and command-line options.

Every field is documented by the string right below it in the class body (read from the
source), and that text is the field's ``--help``. Nested dataclasses become dotted options:
``--training.steps 100``. A file gives the base values, options override them, and the
dataclasses' own validation runs on the result.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from codebook_features.errors import CodebookError

T = TypeVar("T")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written below it, for ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, following in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-ready dict of a (nested) dataclass."""
    return dataclasses.asdict(config)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build ``cls`` from a dict, refusing unknown keys, building nested dataclasses."""
    if not isinstance(data, dict):
        raise CodebookError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise CodebookError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
            f"known: {', '.join(prefix + f for f in fields)}"
        )
    values = {}
    for name, value in data.items():
        kind = hints[name]
        nested = _dataclass_in(kind)
        label = f"{where}.{name}" if where else name
        if nested and value is not None:
            values[name] = from_dict(nested, value, label)
        else:
            values[name] = coerce(kind, value, label)
    try:
        return cls(**values)
    except TypeError as error:
        raise CodebookError(f"{where or cls.__name__}: {error}") from error


def coerce(kind: Any, value: Any, name: str) -> Any:
    """Check a value read from a file against the field's type, converting what is safe
    (``"1e-3"`` or ``1e3`` for numbers, ``"false"`` for a bool, one item for a list)."""
    if value is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        for option in options:  # a value that already has one of the types keeps it
            if _has_type(option, value):
                return coerce(option, value, name)
        for option in sorted(options, key=lambda a: a is str):  # else convert, str last
            try:
                return coerce(option, value, name)
            except CodebookError:
                continue
        raise CodebookError(f"{name}: cannot read {value!r} as {_type_name(kind)}")
    if origin is list:
        if isinstance(value, str):  # one item, or "none" for an empty list
            return convert(kind, [value], name, option=False)
        items = value if isinstance(value, list) else [value]
        return [coerce(args[0] if args else str, item, name) for item in items]
    if isinstance(value, str) and kind is not str:
        return convert(kind, value, name, option=False)
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise CodebookError(f"{name}: expected a mapping, got {value!r}")
        return value
    if origin is Literal:
        if value not in args:
            raise CodebookError(f"{name}: choose one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if kind is bool and not isinstance(value, bool):
        raise CodebookError(f"{name}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise CodebookError(f"{name}: expected a whole number, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CodebookError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _has_type(kind: Any, value: Any) -> bool:
    origin = typing.get_origin(kind)
    if origin is list:
        return isinstance(value, list)
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    if origin is Literal:
        return value in typing.get_args(kind)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def flatten(data: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Mapping-valued settings (``per_site``, ``init``)
    and ``sites`` (metrics per site) are flattened too; non-scalars other than mappings are
    kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON configuration file."""
    path = Path(path)
    if not path.is_file():
        raise CodebookError(f"config file {path} does not exist")
    try:
        data = (
            yaml.safe_load(path.read_text())
            if path.suffix != ".json"
            else json.loads(path.read_text())
        )
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise CodebookError(f"could not parse {path}: {str(error).splitlines()[0]}") from error
    except UnicodeDecodeError as error:
        raise CodebookError(f"{path} is not a text file: give a YAML or JSON file") from error
    if not isinstance(data, dict):
        raise CodebookError(f"{path} must hold a mapping of settings")
    return data


def save_yaml(config: Any, path: str | Path) -> None:
    from codebook_features.persist.files import write_text

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One ``--<prefix>.<field>`` option per (nested) field, documented from the source."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(prefix.rstrip(".")) if prefix else parser
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind, name = hints[f.name], f"{prefix}{f.name}"
        nested = _dataclass_in(kind)
        if nested:
            add_arguments(parser, nested, f"{name}.")
            continue
        default = _default_of(f)
        help_text = docs.get(f.name, "")
        help_text += f" [{_type_name(kind)}; default: {default!r}]".replace("%", "%%")
        group.add_argument(
            f"--{name}",
            dest=name,
            nargs="+" if _takes_list(kind) else None,
            default=argparse.SUPPRESS,
            metavar=_metavar(kind),
            help=help_text,
        )


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Nested dict of the options given on the command line, converted to field types."""
    result: dict[str, Any] = {}
    hints = _flat_hints(cls)
    for name, raw in vars(args).items():
        if name not in hints:
            continue
        node = result
        *parents, leaf = name.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = convert(hints[name], raw, name)
    return result


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def convert(kind: Any, raw: Any, name: str, option: bool = True) -> Any:
    """Turn command-line text (a string, or a list for list options) into a ``kind`` value;
    errors name ``--name`` (an option) or ``name`` (a file setting)."""
    label = f"--{name}" if option else name
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if isinstance(raw, list) and len(raw) == 1 and not any(_takes_list(a) for a in args):
            raw = raw[0]
        for kind_option in sorted(args, key=lambda a: a is str):  # try str last
            if kind_option is type(None):
                if raw in ("none", "None", "null", ["none"], ["None"], ["null"]):
                    return None
                continue
            if isinstance(raw, list) and not _takes_list(kind_option):
                if len(raw) != 1:
                    continue
                candidate = raw[0]
            else:
                candidate = raw
            try:
                return convert(kind_option, candidate, name, option)
            except CodebookError:
                continue
        raise CodebookError(f"{label}: cannot read {raw!r} as {_type_name(kind)}")
    if isinstance(raw, list) and not _takes_list(kind):
        if len(raw) != 1:
            raise CodebookError(f"{label} takes one value, got {raw}")
        raw = raw[0]
    try:
        if origin is list:
            values = raw if isinstance(raw, list) else [raw]
            if values in (["none"], ["[]"]):  # an explicit empty list
                return []
            return [convert(args[0] if args else str, v, name, option) for v in values]
        if origin is dict or kind is dict:
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError("not a mapping")
            return value
        if origin is Literal:
            if raw not in args:
                raise ValueError(f"choose one of {', '.join(map(str, args))}")
            return raw
        if kind is bool:
            lowered = str(raw).lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("use true or false")
            return lowered in ("true", "1", "yes")
        if kind is int:
            number = float(raw)
            if number != int(number):
                raise ValueError("not a whole number")
            return int(number)
        if kind in (float, str):
            return kind(raw)
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CodebookError(
            f"{label}: cannot read {raw!r} as {_type_name(kind)} ({error})"
        ) from error
    return raw


def _flat_hints(cls: type, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, kind in typing.get_type_hints(cls).items():
        nested = _dataclass_in(kind)
        if nested:
            flat.update(_flat_hints(nested, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = kind
    return flat


def _dataclass_in(kind: Any) -> type | None:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return kind
    for arg in typing.get_args(kind):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _takes_list(kind: Any) -> bool:
    if typing.get_origin(kind) is list:
        return True
    return any(typing.get_origin(a) is list for a in typing.get_args(kind))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "required"


def _type_name(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0]) if args else 'str'}"
    if origin is dict or kind is dict:
        return "JSON mapping"
    if kind is type(None):
        return "none"
    return getattr(kind, "__name__", str(kind))


def _metavar(kind: Any) -> str:
    if typing.get_origin(kind) is Literal:
        return "{" + ",".join(map(str, typing.get_args(kind))) + "}"
    return _type_name(kind).split(" ")[0].upper()
