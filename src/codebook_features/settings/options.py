"""Command-line options and settings files, generated from a :class:`~.base.Settings` type.

Every field is one option, ``--<field>`` (a yes/no setting alone means yes: ``--overwrite``, or
``--overwrite false``), and the fields of a nested settings type are dotted
options (``--training.steps 100``, ``--generation.samples 3``), documented by the field's
docstring. ``--config FILE`` (YAML or JSON) gives base values that options override; the result
is validated by the settings type itself, so an option, a file and a Python call are checked
the same way. Option values are text, which the settings' types read (``3``, ``1e-3``,
``true``); a list takes several values (``--sites mlp attn``), ``none`` is the empty value of
an optional setting (or an empty list), and a mapping is JSON (``--codebooks.per_site
'{"mlp": {"k": 4}}'``).
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Mapping
from typing import Any, Literal, NoReturn, TypeVar, Union

from pydantic import BaseModel, TypeAdapter, ValidationError

from codebook_features.errors import CodebookError
from codebook_features.settings.base import field_kinds, is_list, is_mapping, load_file

S = TypeVar("S")

EMPTY = ("none", "null")
"""Option values that mean "no value" (an optional setting) or an empty list."""


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong option reported on one line (and a pointer to ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _common_options() -> Parser:
    """Options every (sub-)command accepts, wherever they are given."""
    parser = Parser(add_help=False)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # given after a sub-command, it keeps the top-level value
        help="show info logs, and tracebacks of errors",
    )
    return parser


def add_subcommand(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A sub-command's parser (``sub``: what ``add_subparsers`` returned), with the common
    options."""
    return sub.add_parser(name, help=help_text, parents=[_common_options()])


def add_options(
    parser: argparse.ArgumentParser,
    cls: type[BaseModel],
    prefix: str = "",
    defaults: BaseModel | None = None,
    description: str | None = None,
) -> None:
    """``--config FILE`` and one ``--<prefix><field>`` option per (nested) field of ``cls``,
    documented from it; ``defaults``: the values a nested section starts from (its field's
    default), ``description``: what the section is (its field's docstring)."""
    if not prefix:
        add_config_option(parser)
    group = parser.add_argument_group(prefix.rstrip("."), description) if prefix else parser
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if defaults is not None:
            default = getattr(defaults, name)
        nested = nested_settings(field.annotation)
        if nested is not None:
            section = default if isinstance(default, nested) else None
            about = (field.description or _summary(nested) or "").replace("``", "")
            add_options(parser, nested, f"{prefix}{name}.", section, " ".join(about.split()))
            continue
        shown = "required" if field.is_required() else f"default: {_shown(default)}"
        help_text = " ".join((field.description or "").replace("``", "").split())
        help_text += f" [{type_name(field.annotation)}; {shown}]"
        if not prefix and (field.json_schema_extra or {}).get("positional"):
            parser.add_argument(
                name,
                nargs="?",
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=f"the same as --{name}",
            )
        flag = field.annotation is bool  # ``--overwrite`` alone, or ``--overwrite false``
        group.add_argument(
            f"--{prefix}{name}",
            dest=f"{prefix}{name}",
            nargs="?" if flag else "+" if takes_list(field.annotation) else None,
            const="true" if flag else None,
            default=argparse.SUPPRESS,
            metavar=_metavar(field.annotation),
            help=help_text.replace("%", "%%"),
        )


POSITIONAL = {"positional": True}
"""``Field(json_schema_extra=POSITIONAL)``: the field may also be given by position (one per
command), as in ``codebook serve STORE``."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or JSON file with the settings; options override it"
    )


def settings_from_args(
    cls: type[S], args: argparse.Namespace, extra: Mapping[str, Any] | None = None
) -> S:
    """``cls`` from ``--config FILE`` (when the parser has it) plus the options given, plus
    ``extra`` (values the command took another way, e.g. a positional argument)."""
    config = getattr(args, "config", None)
    base = load_file(config) if config else {}
    data = merge(base, options_given(args, cls))  # type: ignore[arg-type]
    if extra:
        data = merge(data, dict(extra))
    return cls.from_dict(data)  # type: ignore[attr-defined]


def options_given(args: argparse.Namespace, cls: type[BaseModel]) -> dict[str, Any]:
    """The nested mapping of the options given on the command line, read as their fields'
    types take them (see the module docstring)."""
    fields = flat_fields(cls)
    given: dict[str, Any] = {}
    for name, raw in vars(args).items():
        if name not in fields:
            continue
        node = given
        *parents, leaf = name.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = option_value(fields[name], raw, name)
    return given


def option_value(annotation: Any, raw: Any, name: str) -> Any:
    """Command-line text (a list for list options) as a value for a field of ``annotation``."""
    kinds = field_kinds(annotation)
    if isinstance(raw, list):
        if len(raw) == 1 and raw[0].lower() in EMPTY:
            return None if type(None) in kinds else []
        if len(raw) == 1 and not all(is_list(k) for k in kinds if k is not type(None)):
            try:  # a single value where the field also takes a scalar (``layers all``)
                scalars = Union[tuple(k for k in kinds if not is_list(k))]  # noqa: UP007
                TypeAdapter(scalars).validate_python(raw[0])
                return raw[0]
            except ValidationError:
                pass
        return raw
    if raw.lower() in EMPTY and type(None) in kinds:
        return None
    if any(is_mapping(k) for k in kinds):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise CodebookError(f"--{name} takes a JSON mapping, got {raw!r} ({error})") from None
        if not isinstance(value, dict):
            raise CodebookError(f"--{name} takes a JSON mapping, got {raw!r}")
        return value
    return raw


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(data: Mapping[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (non-empty mappings are followed)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, sep, f"{prefix}{key}{sep}"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------- field types
def flat_fields(cls: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted field name -> annotation, nested settings followed."""
    flat: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        nested = nested_settings(field.annotation)
        if nested is not None:
            flat.update(flat_fields(nested, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = field.annotation
    return flat


def nested_settings(annotation: Any) -> type[BaseModel] | None:
    """The settings type a field holds (directly or as ``X | None``), or ``None``."""
    for kind in field_kinds(annotation):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def takes_list(annotation: Any) -> bool:
    return any(is_list(k) for k in field_kinds(annotation))


def type_name(annotation: Any) -> str:
    kinds = field_kinds(annotation)
    if len(kinds) > 1:
        return " | ".join(type_name(k) for k in kinds)
    kind = kinds[0]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return " | ".join(map(str, args))
    if is_list(kind):
        return f"list of {type_name(args[0]) if args else 'str'}"
    if is_mapping(kind):
        return "JSON mapping"
    if kind is type(None):
        return "none"
    return getattr(kind, "__name__", str(kind))


def _metavar(annotation: Any) -> str:
    kinds = [k for k in field_kinds(annotation) if k is not type(None)]
    if len(kinds) == 1 and typing.get_origin(kinds[0]) is Literal:
        return "{" + ",".join(map(str, typing.get_args(kinds[0]))) + "}"
    return type_name(annotation).split(" ")[0].upper()


def _shown(default: Any) -> str:
    if isinstance(default, BaseModel):
        return "see below"
    return repr(default)


def _summary(cls: type) -> str | None:
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()) or None
