"""One validated settings model per command, for command-line flags and YAML config files alike.

Each command declares a pydantic model whose fields carry their flag metadata (:func:`option`).
:func:`parse` builds the argparse command line from the model, reads ``--config FILE`` (YAML, any
URI), lets flags given on the command line override the file's keys, and validates the merged values
with pydantic: types, choices and ranges are checked the same way wherever a value came from. Any
problem is one line on stderr and exit status 2, naming the option and where its value came from:

    python -m jobs.stylize: error: --max-error-rate 5 (from job.yaml): Input should be less than or equal to 1

Unknown YAML keys are refused with the closest valid name. argparse only shapes the command line
(flag names, help, repetition); it parses every value as a string and pydantic converts it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, Field, ValidationError

M = TypeVar("M", bound=BaseModel)
_NOT_GIVEN: Any = argparse.SUPPRESS


class SettingsError(ValueError):
    """Settings cannot be used as given; the message is the one line to print."""


_BYTE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
               "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(value: Any) -> int:
    """A memory size: a number of bytes, or ``512MiB``, ``2GiB``, ``1.5GB``, ``800M`` (K/M/G/T alone
    are binary) -> bytes. 0 stays 0 (an option's "not set"); anything else not positive is an error."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _BYTE_UNITS:
            raise ValueError(f"not a size: {value!r} (write bytes, or e.g. 512MiB, 2GiB, 1.5GB)")
        size = int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])
    if size < 0:
        raise ValueError(f"a memory size cannot be negative, got {value!r}")
    return size


def option(
    default: Any = None,
    help: str = "",  # noqa: A002 - argparse's name for it
    *,
    flag: str | None = None,
    short: str | None = None,
    group: str | None = None,
    metavar: str | None = None,
    positional: bool = False,
    negate: str | None = None,
    cli: bool = True,
    **constraints: Any,
) -> Any:
    """A settings field and how it appears on the command line.

    ``flag`` overrides the ``--field-name`` derived from the field; ``negate`` makes a default-True
    bool a ``--no-x`` switch (YAML accepts both ``x: false`` and ``no_x: true``); ``positional``
    makes a list field the command's positional arguments; ``cli=False`` keeps a field off the
    command line and out of YAML (derived state). ``constraints`` are pydantic's (``ge``, ``le``, ...).
    """
    extra = {"flag": flag, "short": short, "group": group, "metavar": metavar, "positional": positional,
             "negate": negate, "cli": cli}
    return Field(default, description=help, json_schema_extra={"cli_option": extra}, **constraints)


def _meta(field: pydantic.fields.FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return dict(extra.get("cli_option") or {"cli": True})


def _flag(name: str, meta: dict[str, Any]) -> str:
    return meta.get("negate") or meta.get("flag") or "--" + name.replace("_", "-")


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(annotation: Any) -> str:
    base = _unwrap(annotation)
    origin = typing.get_origin(base)
    if base is bool:
        return "bool"
    if origin is dict:
        return "mapping"
    if origin in (list, tuple):
        return "list"
    return "value"


def cli_fields(model: type[BaseModel]) -> dict[str, pydantic.fields.FieldInfo]:
    """The model's fields that are options (on the command line and in YAML)."""
    return {name: f for name, f in model.model_fields.items() if _meta(f).get("cli", True)}


def _default_text(field: pydantic.fields.FieldInfo, kind: str) -> str:
    if field.is_required():  # its default is pydantic's PydanticUndefined sentinel: say "required" instead
        said = (field.description or "").rstrip(" .").lower().endswith("required")
        return "" if said else " (required)"
    if "default:" in (field.description or "").lower():  # the help says it better ("default: one per GPU; ...")
        return ""
    default = field.default
    if kind == "bool" or default in (None, "", [], {}, ()) or field.default_factory is not None:
        return ""
    return f" (default: {default})"


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # argparse prints usage + message: make it one line
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(model: type[BaseModel], prog: str, description: str = "", epilog: str | None = None,
                 *, config: bool = True) -> argparse.ArgumentParser:
    """The command line for ``model``: one flag per option field, every default suppressed, so the
    namespace holds only what was given (the model supplies defaults after merging with YAML)."""
    p = _OneLineParser(prog=prog, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=_NOT_GIVEN)
    groups: dict[str | None, Any] = {None: p}
    for name, field in cli_fields(model).items():
        meta, kind = _meta(field), _kind(field.annotation)
        group = meta.get("group")
        if group not in groups:
            groups[group] = p.add_argument_group(group)
        target = groups[group]
        help_text = (field.description or "") + _default_text(field, kind)
        choices = typing.get_args(_unwrap(field.annotation)) if typing.get_origin(_unwrap(field.annotation)) is typing.Literal else ()
        metavar = meta.get("metavar") or ("{" + ",".join(map(str, choices)) + "}" if choices else None)
        if meta.get("positional"):
            target.add_argument(name, nargs="+", metavar=metavar or name.upper(), help=help_text)
            continue
        names = [n for n in (meta.get("short"), _flag(name, meta)) if n]
        if kind == "bool":
            action = "store_false" if meta.get("negate") else "store_true"
            target.add_argument(*names, dest=name, action=action, help=help_text)
        elif kind in ("mapping", "list"):
            target.add_argument(*names, dest=name, action="append", metavar=metavar, help=help_text)
        else:
            target.add_argument(*names, dest=name, metavar=metavar, help=help_text)
    if config:
        p.add_argument("--config", metavar="FILE", dest="config",
                       help="YAML file (local path or URI) with any of these options as keys (flag names with "
                       "underscores); flags given on the command line override it")
    return p


def _yaml_keys(model: type[BaseModel]) -> dict[str, tuple[str, bool]]:
    """YAML key -> (field, invert): field names, flag spellings and ``no_x`` for negated switches."""
    keys: dict[str, tuple[str, bool]] = {}
    for name, field in cli_fields(model).items():
        meta = _meta(field)
        keys[name] = (name, False)
        if meta.get("flag"):
            keys[meta["flag"].lstrip("-").replace("-", "_")] = (name, False)
        if meta.get("negate"):
            keys[meta["negate"].lstrip("-").replace("-", "_")] = (name, True)
    return keys


def read_config(path: str, model: type[BaseModel]) -> dict[str, Any]:
    """A YAML config file's values keyed by field name; unknown keys refused with the closest name."""
    from jobs.common.storage import read_bytes  # storage pulls fsspec: only when a file is given

    try:
        data = yaml.safe_load(read_bytes(path).decode("utf-8")) or {}
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of option names to values")
    keys = _yaml_keys(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        norm = str(key).replace("-", "_")
        if norm not in keys:
            close = difflib.get_close_matches(norm, list(keys), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "; --help lists the options"
            raise SettingsError(f"{path}: unknown option {key!r}{hint}")
        name, invert = keys[norm]
        if _kind(model.model_fields[name].annotation) == "list" and isinstance(value, (str, int, float)):
            value = [value]  # `style_image: a.jpg` means the one-item list a repeated flag would give
        out[name] = (not value) if invert and isinstance(value, bool) else value
    return out


def _describe_error(exc: ValidationError, model: type[BaseModel], values: dict[str, Any],
                    sources: dict[str, str]) -> str:
    err = exc.errors(include_url=False)[0]
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    loc = [str(part) for part in err.get("loc", ())]
    if not loc or loc[0] not in model.model_fields:
        return msg
    name = loc[0]
    field = model.model_fields[name]
    meta = _meta(field)
    label = name if meta.get("positional") else _flag(name, meta)
    shown = values.get(name, err.get("input"))
    detail = ".".join(loc[1:])
    where = sources.get(name, "")
    return f"{label}{'[' + detail + ']' if detail else ''} {shown!r}{where}: {msg}"


def validate(model: type[M], values: dict[str, Any], sources: dict[str, str] | None = None) -> M:
    """``model`` from plain values; SettingsError with one line naming the option on failure."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_describe_error(exc, model, values, sources or {})) from None


def parse(model: type[M], argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> M:
    """Flags over ``--config`` YAML over the model's defaults, validated; exit 2 with one line on error."""
    args = vars(parser.parse_args(argv))
    config = args.pop("config", None)
    try:
        values = read_config(config, model) if config else {}
        sources = {k: f" (from {config})" for k in values}
        values.update(args)
        sources.update({k: "" for k in args})
        return validate(model, values, sources)
    except SettingsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


def pairs_to_mapping(value: Any, what: str = "NAME=VALUE") -> Any:
    """``["a=x", "b=y"]`` (repeated flags) -> ``{"a": "x", "b": "y"}``; mappings pass through."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value
    out: dict[str, str] = {}
    for item in value:
        name, sep, rest = str(item).partition("=")
        if not sep or not name or not rest:
            raise ValueError(f"expected {what}, got {item!r}")
        out[name] = rest
    return out


def split_csv(value: Any) -> Any:
    """``"a,b"`` or ``["a,b", "c"]`` -> ``("a", "b", "c")``; other values pass through."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(p.strip() for v in value for p in v.split(",") if p.strip())
    return value


def parse_selection(value: Any) -> Any:
    """A style selection of a multi-style checkpoint from the command line or YAML.

    ``"3"`` or ``"wave"`` -> that style; ``"3:0.5,wave:0.5"`` -> a blend ``{3: 0.5, "wave": 0.5}``
    (weights are normalised to sum to one when the checkpoint is loaded). Indices become ints;
    mappings and ints (YAML) pass through with digit keys made ints.
    """
    def key(k: Any) -> Any:
        return int(k) if isinstance(k, str) and k.strip().isdigit() else k

    if isinstance(value, dict):
        return {key(k): v for k, v in value.items()}
    if not isinstance(value, str):
        return value
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if len(parts) == 1 and ":" not in parts[0]:
        return key(parts[0])
    blend: dict[Any, float] = {}
    for part in parts:
        name, sep, weight = part.rpartition(":")
        if not sep or not name:
            raise ValueError(f"expected STYLE or STYLE:WEIGHT,STYLE:WEIGHT (STYLE an index or a name), got {value!r}")
        try:
            blend[key(name)] = float(weight)
        except ValueError:
            raise ValueError(f"weight {weight!r} of style {name!r} is not a number") from None
    return blend
