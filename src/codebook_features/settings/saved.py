"""Reading back files we wrote: lenient about what a newer version added, strict elsewhere.

A saved model, checkpoint or results file may come from a newer version of this library, with
settings this version does not know. Such files still load: unknown keys are dropped, and one
``SavedFileWarning`` names the version that wrote the file and what was dropped. What a user
types (YAML files, command-line options: ``configs.from_dict``) stays strict, so a typo is an
error rather than a warning.
"""

from __future__ import annotations

import dataclasses
import re
import typing
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from codebook_features._version import __version__

T = TypeVar("T")

VERSION_KEY = "codebook_features_version"
"""The key that stamps a saved file with the version of the library that wrote it."""

Schema = type | Mapping[str, Any] | None
"""What a saved value should hold: a dataclass (its fields, nested dataclasses followed
through ``X | None``, ``list[X]`` and ``dict[str, X]``), a mapping from key to the schema of
its value, or ``None`` for a value taken as it is. A dataclass may define a classmethod
``saved_schema(data)`` when its file layout is not its fields."""


class SavedFileWarning(UserWarning):
    """A saved file came from a newer version, or held keys this version does not know."""


def stamp(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with this library's version under :data:`VERSION_KEY`, last."""
    return {**data, VERSION_KEY: __version__}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def is_newer(version: str | None) -> bool:
    """Whether ``version`` is a later release than this library's (``None``: unknown, no)."""
    if not isinstance(version, str):
        return False
    try:
        return _version_tuple(version) > _version_tuple(__version__)
    except ValueError:
        return False


def known_part(schema: Schema, data: Any, dropped: list[str], where: str = "") -> Any:
    """A copy of ``data`` without the keys ``schema`` does not know; their dotted names are
    appended to ``dropped``."""
    if schema is None or not isinstance(data, dict):
        return data
    if hasattr(schema, "saved_schema"):
        schema = schema.saved_schema(data)
    if dataclasses.is_dataclass(schema) and isinstance(schema, type):
        hints = typing.get_type_hints(schema)
        schema = {f.name: hints[f.name] for f in dataclasses.fields(schema) if f.init}
    kept = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in schema:
            dropped.append(name)
            continue
        kept[key] = _known_value(schema[key], value, dropped, name)
    return kept


def _known_value(kind: Any, value: Any, dropped: list[str], where: str) -> Any:
    if kind is None or isinstance(kind, Mapping) or _is_dataclass_type(kind):
        return known_part(kind, value, dropped, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and args and isinstance(value, list):
        return [_known_value(args[0], v, dropped, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _known_value(args[1], v, dropped, f"{where}.{k}") for k, v in value.items()}
    inner = [a for a in args if _is_dataclass_type(a)]  # X | None
    if inner and isinstance(value, dict):
        return known_part(inner[0], value, dropped, where)
    return value


def _is_dataclass_type(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def read_saved(
    data: dict[str, Any], schema: Schema, source: str, version: str | None = None
) -> dict[str, Any]:
    """What this version can read of ``data``, a dict loaded from the file ``source``.

    ``version`` is the version that wrote it (default: ``data``'s own stamp). A file from a
    newer version, or one holding keys ``schema`` does not know, gives one
    :class:`SavedFileWarning` that names the version and the dropped keys.
    """
    if version is None and isinstance(data, dict):
        version = data.get(VERSION_KEY)
    dropped: list[str] = []
    kept = known_part(schema, data, dropped)
    if VERSION_KEY in dropped:  # the stamp is understood even where the schema omits it
        dropped.remove(VERSION_KEY)
    if dropped or is_newer(version):
        written = f"version {version}" if isinstance(version, str) else "an unknown version"
        message = f"{source} was written by codebook-features {written} (this is {__version__})"
        if dropped:
            message += f"; ignoring what this version does not know: {', '.join(dropped)}"
        message += "; upgrade codebook-features to read all of it"
        warnings.warn(message, SavedFileWarning, stacklevel=2)
    return kept


def build(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from a dict of its fields, building nested dataclasses (through ``X | None``,
    ``list[X]`` and ``dict[str, X]``) with their own ``from_dict`` when they have one."""
    hints = typing.get_type_hints(cls)
    return cls(**{key: _build_value(hints[key], value) for key, value in data.items()})


def _build_value(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    if _is_dataclass_type(kind):
        maker: Callable[[dict[str, Any]], Any] = getattr(kind, "from_dict", None) or (
            lambda d: build(kind, d)
        )
        return maker(value)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list and args:
        return [_build_value(args[0], v) for v in value]
    if origin is dict and len(args) == 2:
        return {k: _build_value(args[1], v) for k, v in value.items()}
    inner = [a for a in args if _is_dataclass_type(a)]
    if inner:
        return _build_value(inner[0], value)
    return value


class Record:
    """A dataclass of results that turns into plain JSON-ready values and back."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return build(cls, data)


def config_from_saved(
    cls: type[T], data: dict[str, Any], source: str, version: str | None = None
) -> T:
    """A configuration dataclass from a saved file: unknown keys dropped with a warning
    (:func:`read_saved`), then built and validated as ``configs.from_dict`` does."""
    from codebook_features.settings.configs import from_dict

    return from_dict(cls, read_saved(data, cls, source, version))
