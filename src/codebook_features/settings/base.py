"""One declarative base for every settings type and saved record: :class:`Settings`.

Fields carry their constraints (the types below), and the docstring under a field is its
description (``--help`` on the command line). Two ways in:

- what a person writes (YAML, JSON, options, Python calls) is strict: an unknown key, a wrong
  type or a value out of range is a :class:`~codebook_features.errors.CodebookError` of one line
  that names the setting;
- a file this library saved (:meth:`Settings.from_saved`) may come from a newer version: keys
  this version does not know are dropped, with one :class:`SavedFileWarning` that names the
  version that wrote the file and what was dropped.
"""

from __future__ import annotations

import json
import math
import re
import types
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from typing_extensions import Self

from codebook_features._version import __version__
from codebook_features.errors import CodebookError

VERSION_KEY = "codebook_features_version"
"""The key that stamps a saved file with the version of the library that wrote it."""


_VALIDATING: ContextVar[bool] = ContextVar("validating", default=False)
"""Set while a validation runs, so that the settings it builds inside (nested settings types,
whose ``__init__`` pydantic calls) leave their errors to it."""


class SavedFileWarning(UserWarning):
    """A saved file came from a newer version, or held keys this version does not know."""


# ---------------------------------------------------------------------- field types
def _integer(value: Any) -> Any:
    """Whole numbers only: ``True`` is not 1, and ``"1e3"`` (YAML's reading of 1e3) is 1000."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true or false")
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number) and number.is_integer():
            return int(number)
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


Int = Annotated[int, BeforeValidator(_integer)]
"""A whole number (never a bool)."""
PositiveInt = Annotated[Int, Field(ge=1)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
"""A finite number (never a bool)."""
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(ge=0, le=1)]
"""A share: a number from 0 to 1."""
OpenFraction = Annotated[Number, Field(gt=0, lt=1)]
"""A share strictly between 0 and 1 (both parts of a split non-empty)."""
Text = Annotated[str, Field(min_length=1)]
"""A non-empty string (a path, a name, a pattern)."""
Device = Literal["auto", "cpu", "cuda"]
"""Where to run a model (``auto``: a GPU when there is one)."""


# ---------------------------------------------------------------------- the base
class Settings(BaseModel):
    """A validated, documented group of settings (or a saved record): see the module docstring."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        arbitrary_types_allowed=True,
        protected_namespaces=(),
        ser_json_inf_nan="constants",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_loosely(cls, data: Any) -> Any:
        """What files and options write for lists and empty values: ``none`` (or ``null``) is
        ``None`` for an optional setting and ``[]`` for a list; one value is a one-item list.
        Nested settings given in part complete the field's own default (the steering
        evaluation's ``generation: {samples: 4}`` keeps its 200 tokens)."""
        if not isinstance(data, dict):
            return data
        read = {}
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None:
                read[name] = value
                continue
            value = loose_value(field.annotation, value)
            default = field.get_default(call_default_factory=True)
            if isinstance(value, Mapping) and isinstance(default, BaseModel):
                value = {**dict(default), **value}
            read[name] = value
        return read

    def __init__(self, /, **data: Any) -> None:
        if _VALIDATING.get():  # inside another validation, which reports the errors
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise CodebookError(describe_errors(error, type(self))) from None
        finally:
            _VALIDATING.reset(token)

    @classmethod
    def _validate(cls, data: dict[str, Any]) -> Self:
        """``model_validate`` with pydantic's own errors (not yet one line)."""
        token = _VALIDATING.set(True)
        try:
            return cls.model_validate(data)
        finally:
            _VALIDATING.reset(token)

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> Self:
        """Settings from a mapping a person wrote: unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise CodebookError(f"{where or cls.__name__} must be a mapping, got {data!r}")
        try:
            return cls._validate(dict(data))
        except ValidationError as error:
            raise CodebookError(describe_errors(error, cls, where)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Settings from a YAML or JSON file a person wrote (strict, as :meth:`from_dict`)."""
        return cls.from_dict(load_file(path))

    @classmethod
    def from_saved(cls, data: Any, source: str, version: str | None = None) -> Self:
        """Settings from a file this library saved: keys that a newer version added are
        dropped with one :class:`SavedFileWarning` (``version``: the version that wrote it,
        by default the file's own stamp)."""
        if not isinstance(data, Mapping):
            raise CodebookError(f"{source} is damaged: expected a JSON object")
        data = dict(data)
        stamped = data.pop(VERSION_KEY, None)
        version = version if version is not None else stamped
        dropped: list[str] = []
        while True:  # each round drops what one validation found unknown
            try:
                result = cls._validate(data)
                break
            except ValidationError as error:
                unknown = [e["loc"] for e in error.errors() if e["type"] == "extra_forbidden"]
                removed = []
                for loc in unknown:
                    data, path = _drop(data, loc)
                    if path is not None:
                        removed.append(".".join(map(str, path)))
                if not removed:
                    raise CodebookError(f"{source}: {describe_errors(error, cls)}") from None
                dropped += removed
        if dropped or is_newer(version):
            written = f"version {version}" if isinstance(version, str) else "an unknown version"
            message = f"{source} was written by codebook-features {written} (this is {__version__})"
            if dropped:
                message += f"; ignoring what this version does not know: {', '.join(dropped)}"
            if is_newer(version):
                message += "; upgrade codebook-features to read all of it"
            warnings.warn(message, SavedFileWarning, stacklevel=2)
        return result

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON- and YAML-ready values."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new one."""
        return type(self)(**(dict(self) | changes))


class Record(Settings):
    """A record of results a command saves (metrics, a demo's results): the same base, read
    back with :meth:`~Settings.from_saved`."""


def loose_value(annotation: Any, value: Any) -> Any:
    """``value`` as :meth:`Settings._read_loosely` reads it for a field of ``annotation``."""
    kinds = field_kinds(annotation)
    lists = [k for k in kinds if is_list(k)]
    if isinstance(value, str) and value.lower() in ("none", "null"):
        if type(None) in kinds:
            return None
        if lists and str not in kinds:
            return []
    if lists and not isinstance(value, (list, tuple, dict, set)) and value is not None:
        scalars = [k for k in kinds if not is_list(k) and k is not type(None)]
        literals = [a for k in scalars if get_origin(k) is Literal for a in get_args(k)]
        if len(literals) == len(scalars) and value not in literals:
            return [value]
    return value


def field_kinds(annotation: Any) -> list[Any]:
    """The types a field accepts: the members of a union (``Annotated`` unwrapped; a
    ``Literal`` kept whole)."""
    if get_origin(annotation) is Annotated:
        return field_kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [kind for arg in get_args(annotation) for kind in field_kinds(arg)]
    return [annotation]


def is_list(kind: Any) -> bool:
    return get_origin(kind) in (list, tuple) or kind in (list, tuple)


def is_mapping(kind: Any) -> bool:
    return get_origin(kind) is dict or kind is dict


def _drop(data: Any, loc: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...] | None]:
    """``data`` without the value at ``loc`` (keys and list indices), and the path it had in
    ``data``; a part of ``loc`` that ``data`` lacks is one a validator added (a union's tag, a
    wrapper key) and is skipped. ``None`` when nothing was found to drop."""
    if not loc:
        return data, None
    head, *rest = loc
    if isinstance(data, Mapping):
        if head not in data:
            return _drop(data, tuple(rest))
        if not rest:
            return {k: v for k, v in data.items() if k != head}, (head,)
        inner, path = _drop(data[head], tuple(rest))
        return (data, None) if path is None else ({**data, head: inner}, (head, *path))
    if isinstance(data, list) and isinstance(head, int) and 0 <= head < len(data):
        inner, path = _drop(data[head], tuple(rest))
        if path is None:
            return data, None
        return [inner if i == head else v for i, v in enumerate(data)], (head, *path)
    return _drop(data, tuple(rest)) if rest else (data, None)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON settings file (a mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CodebookError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise CodebookError(f"could not parse {path}: {str(error).splitlines()[0]}") from error
    except UnicodeDecodeError as error:
        raise CodebookError(f"{path} is not a text file: give a YAML or JSON file") from error
    if not isinstance(data, dict):
        raise CodebookError(f"{path} must hold a mapping of settings")
    return data


def stamp(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with this library's version under :data:`VERSION_KEY`, last."""
    return {**data, VERSION_KEY: __version__}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def is_newer(version: Any) -> bool:
    """Whether ``version`` is a later release than this library's (not a string: no)."""
    if not isinstance(version, str):
        return False
    try:
        return _version_tuple(version) > _version_tuple(__version__)
    except ValueError:
        return False


# ---------------------------------------------------------------------- one-line errors
def describe_errors(error: ValidationError, cls: type, where: str = "") -> str:
    """One line for all of a validation's errors, each naming its setting (``training.steps``).

    A :class:`CodebookError` raised by a validator keeps its own message."""
    parts = []
    prefix = f"{where}." if where else ""
    for item in error.errors(include_url=False):
        name = prefix + ".".join(str(p) for p in item["loc"] if not _is_union_tag(p))
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, CodebookError):
            message = str(cause)
            parts.append(message if not name or name in message else f"{name}: {message}")
            continue
        kind = item["type"]
        if kind == "extra_forbidden":
            known = _known_names(cls, item["loc"][:-1])
            message = f"unknown setting {name}" + (f"; known: {', '.join(known)}" if known else "")
        elif kind == "missing":
            message = f"{name} is required"
        else:
            text = item["msg"].removeprefix("Value error, ")
            text = text[:1].lower() + text[1:]
            if " got " not in text:
                text += f", got {item['input']!r}"
            message = f"{name}: {text}" if name else text
        parts.append(message)
    parts.sort(key=lambda part: not part.startswith("unknown setting"))  # a typo explains more
    return "; ".join(dict.fromkeys(parts))


def _is_union_tag(part: Any) -> bool:
    """Whether a location part names a union member (``list[int]``, ``literal['all']``) rather
    than a field or an index."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _known_names(cls: type, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) settings type at ``loc``, when it is one (followed
    through ``X | None``, lists and mappings of settings)."""
    parts = list(loc)
    while parts:
        field = getattr(cls, "model_fields", {}).get(parts.pop(0))
        if field is None:
            return []
        annotation = field.annotation
        while True:  # list[X] and dict[str, X]: their index or key comes next in ``loc``
            inner = [k for k in field_kinds(annotation) if is_list(k) or is_mapping(k)]
            if not inner or not parts:
                break
            annotation, parts = get_args(inner[0])[-1], parts[1:]
        nested = _settings_type(annotation)
        if nested is None:
            return []
        cls = nested
    return list(getattr(cls, "model_fields", {}))


def _settings_type(annotation: Any) -> type | None:
    """The settings type a field holds, directly or as ``X | None``."""
    for kind in field_kinds(annotation):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None
