"""The nightly catalog run: ``python -m jobs.catalog --config FILE [--run-id ID] [--dry-run] [--full]``.

Each night takes the lease on ``{output}`` (:mod:`jobs.lease`), lists the catalog (``source``),
plans which (input, style) pairs need rendering against the ledger under ``{output}/_catalog/``
(:mod:`jobs.catalog_plan`), settles what dead nights left, checks the deletion guard, journals and
renders only those pairs with the batch job (:func:`jobs.batch.driver.run`), streaming its rows to the
commit (:mod:`jobs.catalog_commit`), and records the night in ``{output}/_runs/{run_id}.json``,
the run-history table and its report.

Exit status: 0 when the night's error rate is within ``max_error_rate``, 1 when not, 2 when it did
not run (missing source or checkpoint, bad config, the lease held by another night or lost, the
deletion guard tripped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from stylize_core.file_errors import FileUnusable, unusable

from jobs.batch import driver as batch
from jobs.batch.settings import JobSettings
from jobs.common.masks import mask_rel_path
from jobs.catalog import ledger as L
from jobs.catalog import quarantine as Q
from jobs.catalog import report as catalog_report
from jobs.catalog.commit import NightRows, commit
from jobs.catalog.lease import Lease, LeaseError
from jobs.catalog.plan import AmbiguousInputs, NightPlan, build_plan, describe_plan, listed_sources, listing_table
from jobs.catalog.settings import CatalogOptions, CatalogSettings, catalog_options, parse_args
from jobs.common.checkpoints import input_unusable, read_checkpoint, read_file, stop
from jobs.common.listing import list_images
from jobs.common.outcome import JobError, error_rate, plain_output
from jobs.common.storage import InputFile, StorageOptions, join_uri, redact, redact_text, write_bytes_atomic
from jobs.common.storage_batch import existing_files


def _log(msg: str) -> None:
    print(f"[catalog] {redact_text(msg)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- planning (reads only)


def style_digests(settings: JobSettings, options: StorageOptions) -> dict[str, str]:
    """Each style's model id: sha256 of its checkpoint bytes (of its style image for optimize-only
    styles); for a --mix selection of a multi-style checkpoint, the selection's own id, so changing a
    blend's weights re-renders it; for a regions style, the id the actors derive from its parts'
    (stylize_core.region_identity), so changing a part re-renders it."""
    from stylize_core.region_identity import region_style_id  # torch-free

    if settings.method == "adain":
        out = adain_digests(settings, options)
    elif settings.method == "predict":
        out = predictor_digests(settings, options)
    else:
        out = _checkpoint_digests(settings, options)
    for name, parts in settings.regions.items():
        out[name] = region_style_id(settings.method, [out[p] for p in parts])
    return out


def _checkpoint_digests(settings: JobSettings, options: StorageOptions) -> dict[str, str]:
    out = {}
    for name in settings.label_styles:
        if name in settings.styles:  # unusable bytes stop the night here, before anything is planned
            uri, data = settings.styles[name], read_checkpoint(name, settings.styles[name], options)
        else:
            uri = settings.style_images[name]
            data = read_file("style image", uri, options, f"style {name!r}")
        out[name] = hashlib.sha256(data).hexdigest()
        if name in settings.mixes:
            from stylize_core.builder import SetupError, load_checkpoints  # torch: only for multi-style configs

            try:
                out[name] = load_checkpoints({name: uri}, lambda u: data, settings.mixes)[name].model_id
            except SetupError as exc:
                raise stop(str(exc)) from None
    return out


def adain_digests(settings: JobSettings, options: StorageOptions) -> dict[str, str]:
    """AdaIN styles' ids as the actors record them (stylize_core.adain_identity): the style images'
    hashes with the encoder + decoder's model id and alpha, so changing any re-renders the style."""
    from stylize_core.adain_identity import adain_model_id, adain_style_id

    encoder = read_file("AdaIN encoder", settings.encoder, options) if settings.encoder else None
    dec = adain_model_id(read_file("AdaIN decoder", settings.decoder, options), encoder)
    return _style_image_ids(settings, options, lambda parts: adain_style_id(dec, settings.alpha, parts))


def predictor_digests(settings: JobSettings, options: StorageOptions) -> dict[str, str]:
    """Predicted styles' ids as the actors record them (stylize_core.predictor_identity): the style
    images' hashes with the predictor checkpoint's id and alpha, so changing any re-renders the style."""
    from stylize_core.predictor_identity import predictor_model_id, predictor_style_id

    model = predictor_model_id(read_file("style predictor", settings.predictor, options))
    return _style_image_ids(settings, options, lambda parts: predictor_style_id(model, settings.alpha, parts))


def _style_image_ids(settings: JobSettings, options: StorageOptions,
                     style_id: Callable[[list[tuple[str, float]]], str]) -> dict[str, str]:
    """``style_id([(image sha256, weight), ...])`` for every style image alone and every --mix of them."""
    from stylize_core.style_mix import style_image_parts

    images = {name: hashlib.sha256(read_file("style image", uri, options, f"style {name!r}")).hexdigest()
              for name, uri in settings.style_images.items()}
    try:
        styles = style_image_parts(list(images), settings.mixes)
    except ValueError as exc:
        raise stop(str(exc)) from None
    return {name: style_id([(images[n], w) for n, w in parts]) for name, parts in styles.items()}


def probe_outputs(output: str, options: StorageOptions, ledger: pa.Table) -> Callable[[Sequence[str]], tuple[dict, set]]:
    """The planner's window on storage: provenance records and existence of some outputs."""
    styles = ledger.group_by("style").aggregate([([], "count_all")]).to_pylist() if ledger.num_rows else []
    prefixes = {join_uri(output, r["style"]): r["count_all"] for r in styles}

    def probe(uris: Sequence[str]) -> tuple[dict, set]:
        under, root = dict(prefixes), join_uri(output) + "/"
        for u in uris:  # a dead night's outputs sit beside the ledger's: count them in
            style = join_uri(output, u[len(root):].split("/", 1)[0])
            under[style] = under.get(style, 0) + 1
        return L.read_provenance(output, uris, options), existing_files(uris, options, prefixes=under)
    return probe


def plan_night(settings: JobSettings, copts: CatalogOptions, *, ledger: pa.Table, quarantine: pa.Table,
               journals: dict[str, pa.Table]) -> tuple[NightPlan, pa.Table, dict[str, str]]:
    """List the catalog and hash the checkpoints, then plan; returns (plan, listing, {redacted input
    uri: uri} for the inputs whose URI carries a secret). Writes nothing."""
    opts = settings.storage_options
    try:
        inputs = list_images(settings.input, opts)
        sources = listed_sources(inputs)
    except FileNotFoundError:
        # An empty S3 prefix looks missing; treating it as empty would delete every output.
        raise stop(FileUnusable("input", settings.input, "not found", "not found, or an empty prefix",
                                "check --source (an empty prefix is refused: taken as an empty catalog, it would "
                                "delete every output)")) from None
    except AmbiguousInputs as exc:
        raise JobError(str(exc)) from None
    except (OSError, ValueError) as exc:  # denied, not listable, not images
        raise input_unusable(settings.input, exc) from None
    listing = listing_table(inputs, _with_masks(settings, inputs, L.input_versions(inputs, opts)))
    journal = pa.concat_tables(list(journals.values())) if journals else None
    plan = build_plan(settings, listing, style_digests(settings, opts), ledger, quarantined=Q.held(quarantine),
                      journal=None if copts.full else journal, probe=probe_outputs(settings.output, opts, ledger),
                      full=copts.full, max_delete_fraction=copts.max_delete_fraction,
                      max_delete_floor=copts.max_delete_floor)
    return plan, listing, sources


def _with_masks(settings: JobSettings, inputs: Sequence[InputFile], versions: dict[str, str]) -> dict[str, str]:
    """With ``mask_prefix``, each input's version extended by its mask's (the mask file's version, or
    ``none``) and the mask settings, so the ledger re-renders an input whose mask was added, changed or
    removed, and every input when ``mask_mode`` or ``mask_feather`` changes; ``versions`` as they are
    without masks (a ledger made before keeps matching)."""
    if not settings.mask_prefix:
        return versions
    opts = settings.storage_options
    try:
        masks = list_images(settings.mask_prefix, opts, extensions=(".png",))
    except FileNotFoundError:  # no mask yet under the prefix: every input's rows are mask_error rows
        masks = []
    except (OSError, ValueError) as exc:  # denied, not listable: which masks changed cannot be known
        raise stop(unusable("mask prefix", settings.mask_prefix, exc)) from None
    listed = {f.rel_path: f.version for f in masks}
    stated = L.input_versions([f for f in masks if not f.version], opts)
    listed |= {f.rel_path: stated.get(f.uri, "") for f in masks if not f.version}
    settings_id = f"{settings.mask_mode};{settings.mask_feather:g}"
    return {f.uri: f"{versions.get(f.uri) or f.version or ''}|mask={listed.get(mask_rel_path(f.rel_path)) or 'none'};"
                   f"{settings_id}" for f in inputs}


# ---------------------------------------------------------------- rendering


def _with_sources(todo: pa.Table, sources: dict[str, str]) -> pa.Table:
    """``todo`` naming each input by its real URI again (the plan names it redacted), to render it;
    :class:`NightRows` redacts the rows that come back."""
    if not sources:
        return todo
    names = todo.column("input_uri").to_pylist()
    real = pa.array([sources.get(n, n) for n in names], pa.string())
    return todo.set_column(todo.column_names.index("input_uri"), "input_uri", real)


def _render(settings: JobSettings, todo: pa.Table, on_rows: Callable[[pa.Table], None]) -> dict:
    """Run the batch job on exactly these pairs, streaming its rows to ``on_rows``; returns its summary."""
    styles = set(pc.unique(todo.column("style")).to_pylist())  # no work tonight: no model load, no rows
    if settings.styles_are_images:  # adain, predict: a mix needs its style images loaded, rendered tonight or not
        sub = settings.replace(mixes={s: m for s, m in settings.mixes.items() if s in styles or any(
                                   s in parts for parts in settings.regions.values())},
                               rendered_styles=[s for s in settings.style_names if s in styles])
    elif settings.mask_mode == "labels":  # label k names the k-th style, and a regions style needs its parts
        sub = settings.replace(rendered_styles=[s for s in settings.style_names if s in styles])
    else:
        sub = settings.replace(styles={s: u for s, u in settings.styles.items() if s in styles},
                               style_images={s: u for s, u in settings.style_images.items() if s in styles})
    pairs: dict[str, list[str]] = {}
    inputs: dict[str, InputFile] = {}
    for r in todo.select(["input_uri", "rel_path", "style"]).to_pylist():
        pairs.setdefault(r["input_uri"], []).append(r["style"])
        inputs.setdefault(r["input_uri"], InputFile(r["input_uri"], r["rel_path"], None, None))
    return batch.run(sub, inputs=list(inputs.values()), todo=pairs, on_rows=on_rows)


# ---------------------------------------------------------------- one night


def run_night(settings: JobSettings, copts: CatalogOptions | None = None) -> dict:
    """Plan, render, commit one night; returns its summary (also ``{output}/_runs/{run_id}.json``)."""
    copts = copts or CatalogOptions()
    opts = settings.storage_options
    plain_output(settings.output)  # the ledger names outputs to delete: they must be the real objects
    settings = settings.replace(skip_existing=False)  # the ledger decides, not existence
    if copts.dry_run:
        return _dry_run(settings, copts, opts)
    lease = Lease(settings.output, settings.run_id, opts, ttl_s=copts.lease_ttl_s).acquire(break_lease=copts.break_lease)
    try:
        return _night(settings, copts, opts, lease)
    finally:
        lease.release()


def _read_state(settings: JobSettings, copts: CatalogOptions, opts: StorageOptions) -> tuple:
    out = settings.output
    quarantine, released = Q.release(Q.read(out, opts), copts.release, copts.release_all)
    return L.read_ledger(out, opts), quarantine, released, L.read_journals(out, opts)


def _dry_run(settings: JobSettings, copts: CatalogOptions, opts: StorageOptions) -> dict:
    ledger, quarantine, released, journals = _read_state(settings, copts, opts)
    plan, _, _ = plan_night(settings, copts, ledger=ledger, quarantine=quarantine, journals=journals)
    return {"run_id": settings.run_id, "dry_run": True, "to_render": plan.todo.num_rows, "plan": plan.counts(),
            "guard_tripped": plan.guard.tripped, "released": released,
            "would_delete": plan.deleted.column("output_uri").to_pylist(), "plan_text": describe_plan(plan)}


def _night(settings: JobSettings, copts: CatalogOptions, opts: StorageOptions, lease: Lease) -> dict:
    out, run_id = settings.output, settings.run_id
    started, t0 = L.now_utc(), time.time()
    ledger, quarantine, released, journals = _read_state(settings, copts, opts)
    plan, listing, sources = plan_night(settings, copts, ledger=ledger, quarantine=quarantine, journals=journals)
    if plan.guard.tripped and not copts.allow_mass_delete:
        raise JobError(f"deletion guard: {plan.guard.describe()}; nothing was changed. If the catalog really "
                       "shrank, rerun with --allow-mass-delete")
    timings = {"plan_s": time.time() - t0, "render_s": 0.0, "commit_s": 0.0}
    _log(describe_plan(plan))
    history = {"run_id": run_id, "full": copts.full, "started_at": started, "inputs": plan.inputs,
               "styles": len(settings.style_names)}
    pipeline = None
    try:
        if released:
            Q.write(out, quarantine, opts)
        own_journal = None
        rows = NightRows(out, plan.todo, run_id, opts)
        if plan.todo.num_rows:
            own_journal = L.write_journal(out, run_id, plan.todo, opts)
            # A record that outlived its output's overwrite would vouch for the wrong bytes.
            L.remove_provenance(out, plan.todo.column("output_uri").to_pylist(), opts)
            t = time.time()
            pipeline = _render(settings, _with_sources(plan.todo, sources), rows.add)
            timings["render_s"] = time.time() - t
        t = time.time()
        counts = commit(settings, plan, rows.table(), ledger, journals, own_journal, check_lease=lease.check,
                        options=opts, quarantine=quarantine, listing_uris=listing.column("input_uri"),
                        quarantine_after=copts.quarantine_after)
        timings["commit_s"] = time.time() - t
    except BaseException as exc:
        _record_failure(settings, history, timings, t0, exc, opts)
        raise
    skipped, held = plan.total("unchanged"), plan.total("quarantined")
    rate = error_rate({"ok": counts["processed"], "error": counts["errors"], "skipped": skipped})
    timings["wall_s"] = time.time() - t0
    runs = join_uri(out, "_runs")
    summary = {
        "run_id": run_id, "source": settings.input, "output": out, "full": copts.full, "inputs": plan.inputs,
        "plan": plan.counts(), "style_sha256": plan.style_sha256, **counts,
        "status": "ok", "dry_run": False, "skipped": skipped, "recovered": plan.total("recovered"),
        "quarantined": held, "released": released, "guard": dataclasses.asdict(plan.guard) | {"tripped": plan.guard.tripped, "overridden": plan.guard.tripped},
        "error_rate": rate, "max_error_rate": settings.max_error_rate, "passed": rate <= settings.max_error_rate,
        "images_per_s": round(counts["processed"] / timings["render_s"], 3) if timings["render_s"] else None,
        "started_at": started.isoformat(), "finished_at": L.now_utc().isoformat(),
        "timings": {k: round(v, 3) for k, v in timings.items()}, "pipeline": pipeline,
        "contact_sheet": (pipeline or {}).get("contact_sheet"),
        "summary_uri": join_uri(runs, f"{run_id}.json"),
    }
    summary = redact(summary, keys=False)
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True, default=str).encode(), opts)
    table = L.append_history(out, history | timings | {k: summary[k] for k in (
        "processed", "skipped", "deleted", "errors", "quarantined", "recovered", "removed_outputs", "error_rate",
        "images_per_s", "contact_sheet")} | {"status": "ok", "finished_at": L.now_utc(), "error": None}, opts)
    try:
        summary["report"] = catalog_report.write_report(out, table, opts)
    except Exception as exc:  # a picture must not fail a night that committed
        _log(f"could not write the report: {type(exc).__name__}: {exc}")
    return summary


def _record_failure(settings: JobSettings, history: dict, timings: dict, t0: float, exc: BaseException,
                    opts: StorageOptions) -> None:
    """Best effort: a night that fails in-process still leaves a history row saying so."""
    try:
        L.append_history(settings.output, history | timings | {
            "status": "failed", "finished_at": L.now_utc(), "wall_s": time.time() - t0,
            "error": redact_text(f"{type(exc).__name__}: {exc}")[:2000]}, opts)
    except Exception as inner:  # the store may be what failed; the original error matters more
        _log(f"could not record the failure in the history: {inner}")


def main(settings: CatalogSettings) -> int:
    try:
        summary = run_night(settings, catalog_options(settings))
    except (JobError, LeaseError) as exc:
        _log(f"error: {exc}")
        return 2
    if summary["dry_run"]:
        print(redact_text(summary["plan_text"]))
        return 0
    print(redact_text(
        f"night {summary['run_id']}: processed {summary['processed']}, skipped {summary['skipped']}, "
        f"deleted {summary['deleted']}, recovered {summary['recovered']}, errors {summary['errors']}, "
        f"quarantined {summary['quarantined']} in {summary['timings']['wall_s']:.1f}s; summary {summary['summary_uri']}"))
    return 0 if summary["passed"] else 1


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))

