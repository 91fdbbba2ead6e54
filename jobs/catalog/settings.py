"""The nightly catalog's settings: the batch job's, plus the catalog's own options."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

from jobs.batch.settings import JobSettings
from jobs.catalog import quarantine as Q
from jobs.catalog.lease import DEFAULT_TTL_S
from jobs.common import cli_settings
from jobs.common.cli_settings import option


@dataclass(frozen=True)
class CatalogOptions:
    """The catalog's own options (beside the batch job's settings)."""

    full: bool = False
    dry_run: bool = False
    allow_mass_delete: bool = False
    max_delete_fraction: float = 0.1
    max_delete_floor: int = 2
    quarantine_after: int = Q.DEFAULT_AFTER
    release: tuple[str, ...] = ()
    release_all: bool = False
    break_lease: bool = False
    lease_ttl_s: float = DEFAULT_TTL_S


_NIGHT = "nightly catalog"


class CatalogSettings(JobSettings):
    """The batch job's settings (every option works here too) plus the catalog's own."""

    input: str | None = option(None, "catalog prefix URI (the job's --input; `source:` in YAML)", flag="--source",
                               group=_NIGHT, min_length=1)
    output: str | None = option(None, "output prefix URI: outputs, _metrics/, _runs/ and the _catalog/ ledger",
                                group=_NIGHT, min_length=1)
    dry_run: bool = option(False, "print the plan per style, what would be deleted and the deletion guard's "
                           "verdict; write nothing", group=_NIGHT)
    full: bool = option(False, "re-render every input x style", group=_NIGHT)
    max_delete_fraction: float = option(0.1, "refuse a night that would delete the outputs of more than this share "
                                        "of the ledger's inputs", group=_NIGHT, ge=0, le=1)
    max_delete_floor: int = option(2, "a night may always delete the outputs of this many inputs, whatever the share",
                                   group=_NIGHT, ge=0)
    allow_mass_delete: bool = option(False, "let this night through the deletion guard (the catalog really shrank)",
                                     group=_NIGHT)
    quarantine_after: int = option(Q.DEFAULT_AFTER, "quarantine an input after this many nights in a row failing with "
                                   "the same permanent error (empty, truncated, unidentified, corrupt, too_large, "
                                   "unsafe_path)", group=_NIGHT, ge=1)
    release: list[str] = option([], "take this input out of quarantine and retry it tonight (repeatable)",
                                metavar="INPUT_URI", group=_NIGHT)
    release_all: bool = option(False, "take every input out of quarantine", group=_NIGHT)
    break_lease: bool = option(False, "take the lease even if another night holds it (only when that night is known "
                               "dead)", group=_NIGHT)
    lease_ttl_s: float = option(DEFAULT_TTL_S, "the lease's expiry in seconds, renewed every third of it while the "
                                "night runs", group=_NIGHT, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            missing = [n for n, k in (("source", "input"), ("output", "output")) if not data.get(k)]
            if not (data.get("styles") or data.get("style_images")):
                missing.append("styles")
            if missing:
                raise ValueError(f"the nightly catalog needs {', '.join(missing)} (in --config or as flags)")
            if data.get("skip_existing"):
                print("[catalog] ignoring skip_existing: the ledger decides what to render", file=sys.stderr, flush=True)
                data = {**data, "skip_existing": False}
        return data


def catalog_options(settings: CatalogSettings) -> CatalogOptions:
    """The catalog's own options, as the night's functions take them."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(CatalogOptions)}
    return CatalogOptions(**{**values, "release": tuple(values["release"])})


def build_parser() -> argparse.ArgumentParser:
    return cli_settings.build_parser(
        CatalogSettings, "python -m jobs.catalog",
        "Nightly incremental run: render only new or changed (input, style) pairs of the catalog under --source, "
        "remove outputs of deleted inputs, keep a ledger under {output}/_catalog/. A YAML --config takes every "
        "option with underscores, `source` and `styles: {name: uri}`.\n\nexit status: 0 the night's error rate is "
        "within --max-error-rate; 1 above it; 2 it could not run (missing source or checkpoint, bad config, lease "
        "held by another night, deletion guard tripped).")


def parse_args(argv: Sequence[str] | None = None) -> CatalogSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(CatalogSettings, argv, build_parser())


