"""YAML config files merged under command-line flags.

A config file holds the same keys as the flags, with underscores (``max_error_rate: 0.05``).
Flags given on the command line win; unknown keys are an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import yaml


def _read_yaml(path: str) -> dict[str, Any]:
    # Local import keeps jobs.config importable where storage deps are absent (e.g. a parser test).
    from .storage import read_bytes

    try:
        data = yaml.safe_load(read_bytes(path).decode("utf-8")) or {}
    except FileNotFoundError:
        raise SystemExit(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"config file {path} must hold a mapping of option names to values")
    return data


def apply_config_defaults(parser: argparse.ArgumentParser, values: dict[str, Any], source: str) -> None:
    """Make ``values`` the parser's defaults, validating names and normalising list-valued options."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    unknown = sorted(k for k in values if k.replace("-", "_") not in actions)
    if unknown:
        raise SystemExit(f"{source}: unknown option(s) {unknown}; valid: {sorted(actions)}")
    defaults: dict[str, Any] = {}
    for key, value in values.items():
        action = actions[key.replace("-", "_")]
        if isinstance(action, argparse._AppendAction) and isinstance(value, dict):
            value = [f"{k}={v}" for k, v in value.items()]  # `style: {name: uri}` reads naturally in YAML
        elif isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        defaults[action.dest] = value
    parser.set_defaults(**defaults)


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; when ``--config FILE`` is given, its keys become defaults under the flags.

    Append-type options (``--style``) given on the command line replace the file's list rather
    than extending it, so a flag always means exactly what it says.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        apply_config_defaults(parser, _read_yaml(known.config), known.config)
        file_defaults = {a.dest: a.default for a in parser._actions if isinstance(a, argparse._AppendAction)}
        # argparse appends to a list default; start each append option from empty and restore after.
        for dest in file_defaults:
            parser.set_defaults(**{dest: None})
        args = parser.parse_args(argv)
        for dest, default in file_defaults.items():
            if getattr(args, dest) is None:
                setattr(args, dest, default)
        return args
    return parser.parse_args(argv)
