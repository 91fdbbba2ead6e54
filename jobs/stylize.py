"""The batch job: ``python -m jobs.stylize --input URI --output URI --style NAME=CHECKPOINT_URI``.

Lists the inputs, streams them through Ray Data (read/decode tasks -> stylize actor pool ->
encode/write tasks), writes one metrics row per input x style as Parquet, then a run summary and
a contact sheet. Exit status: 0 when the error rate is within --max-error-rate, 1 when it is not,
2 when the job could not run at all (bad input prefix, unloadable checkpoint, ...).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from stylize_core.host import malloc_env

from . import ray_runtime
from .contact_sheet import contact_sheet_png
from .metrics import MetricsWriter, RunCounts, to_table
from .settings import JobSettings, build_parser, parse_args  # noqa: F401  (build_parser: manifests' tests)
from .stages import SETUP_ERROR, encode_write, read_decode, storage_options
from .storage import InputFile, join_uri, list_images, read_bytes, redact, write_bytes_atomic


class JobError(RuntimeError):
    """The job cannot start or finish; the message says why and what to do."""


def _log(msg: str) -> None:
    print(f"[stylize] {msg}", file=sys.stderr, flush=True)


def load_style_blobs(settings: JobSettings) -> dict[str, bytes]:
    """Read every checkpoint once on the driver (fail fast, and actors need not hit storage again)."""
    from stylize_core.builder import SetupError, load_checkpoints  # torch: seconds to import

    opts = storage_options(settings)
    raw: dict[str, bytes] = {}

    def opener(uri: str) -> bytes:
        raw[uri] = read_bytes(uri, opts)
        return raw[uri]

    try:
        load_checkpoints(settings.styles, opener, settings.mixes)
    except SetupError as exc:
        raise JobError(str(exc)) from None
    return {name: raw[uri] for name, uri in settings.styles.items()}


def _raise_setup_error(table: pa.Table) -> None:
    """Actors that could not build their stylizer (weights not staged, ...) answer every row with
    ``setup_error``: the run cannot start, so stop with the actor's message (exit 2)."""
    errors = pc.filter(table.column("error"), pc.equal(table.column("error_type"), SETUP_ERROR))
    if len(errors):
        raise JobError(errors[0].as_py())


def plan_actors(settings: JobSettings) -> tuple[int, float]:
    """(actor count, GPUs per actor): one actor per GPU when the cluster has GPUs, else one CPU actor."""
    gpus = ray_runtime.cluster_gpus()
    per_actor = settings.gpus_per_actor if settings.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    actors = settings.actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    return actors, per_actor


def run(
    settings: JobSettings,
    inputs: Sequence[InputFile] | None = None,
    todo: Mapping[str, Sequence[str]] | None = None,
    on_rows: Callable[[pa.Table], None] | None = None,
) -> dict:
    """Run the job; returns the summary (also written to ``{output}/_runs/{run_id}.json``).

    ``inputs`` replaces the listing of ``settings.input`` (the nightly catalog passes its plan);
    ``todo`` maps an input URI to the styles to render for it (others become ``skipped`` rows);
    ``on_rows`` receives each batch of metrics rows (:data:`jobs.metrics.SCHEMA`) as it is written.
    """
    started = time.time()
    opts = storage_options(settings)

    def prepare() -> tuple[Sequence[InputFile], dict[str, bytes]]:
        try:
            listed = list_images(settings.input, opts) if inputs is None else inputs
        except FileNotFoundError as exc:
            raise JobError(f"input not found: {exc}") from None
        blobs = load_style_blobs(settings)
        from . import stylize_actor  # noqa: F401  (torch, stylize_core: imported here, off the critical path)

        return listed, blobs

    # Listing, fetching checkpoints and importing torch to check them take seconds each: they overlap
    # Ray's start-up. ray.init stays on the main thread, where it installs its signal handlers.
    with ThreadPoolExecutor(1, thread_name_prefix="stylize-prepare") as pool:
        prepared = pool.submit(prepare)
        ray_runtime.init_ray(settings.address, quiet=settings.quiet)
        inputs, blobs = prepared.result()
    styles = settings.style_names
    _log(f"run {settings.run_id}: {len(inputs)} inputs x {len(styles)} style(s) -> {settings.output}")
    ray_runtime.configure_data(progress_bars=not settings.quiet)
    actors, gpus_per_actor = plan_actors(settings)
    settings.actors = actors
    writer = MetricsWriter(settings.output, settings.run_id, opts)
    counts = RunCounts()
    seen: set[bytes] = set()
    expected = len(inputs) * len(styles)
    last_log = time.time()
    fused = settings.stages == "fused" or (settings.stages == "auto" and not gpus_per_actor)
    from .stylize_actor import StylizeActor
    if inputs:
        batches = ray_runtime.stylize_dataset(
            [
                {"uri": f.uri, "rel_path": f.rel_path}
                | ({"todo_styles": ",".join(todo.get(f.uri, ()))} if todo is not None else {})
                for f in inputs
            ],
            read_fn=None if fused else functools.partial(read_decode, settings=settings),
            read_batch_size=settings.read_batch_size,
            actor_cls=StylizeActor,
            # Actors read the checkpoints themselves: megabytes of constructor arguments would go through
            # the object store, which Ray flags as an error for restartable actors.
            actor_kwargs={"settings": settings, "attempts": ray_runtime.attempt_ledger(settings.run_id),
                          "fused": fused},
            actors=actors,
            batch_size=settings.batch_size,
            gpus_per_actor=gpus_per_actor,
            cpus_per_actor=settings.cpus_per_actor,
            write_fn=None if fused else functools.partial(encode_write, settings=settings),
            actor_env=malloc_env(),
        )
        for batch in batches:
            table = to_table(batch)
            _raise_setup_error(table)
            # A retried block must not count twice: keep the first row per (input, style).
            keys = [hashlib.blake2b(f"{u}\0{s}".encode(), digest_size=12).digest()
                    for u, s in zip(table.column("input_uri").to_pylist(), table.column("style").to_pylist())]
            fresh = [i for i, k in enumerate(keys) if k not in seen]
            seen.update(keys)
            if len(fresh) < table.num_rows:
                table = table.take(fresh)
            writer.add(table)
            counts.add(table, keep_examples=settings.contact_sheet)
            if on_rows is not None:
                on_rows(table)
            if not settings.quiet and time.time() - last_log > 10:
                last_log = time.time()
                _log(f"{counts.rows}/{expected} rows, {counts.by_status['error']} errors")
    writer.flush()
    if counts.rows != expected:
        raise JobError(f"accounting mismatch: {expected} input x style pairs listed but {counts.rows} rows came back")

    wall = time.time() - started
    summary = {
        "run_id": settings.run_id,
        "input": settings.input,
        "output": settings.output,
        "inputs": len(inputs),
        "styles": {name: {"checkpoint": settings.styles.get(name), "style_image": settings.style_images.get(name),
                          "sha256": hashlib.sha256(blobs[name]).hexdigest() if name in blobs else None,
                          "counts": dict(counts.by_style.get(name, {}))} for name in styles},
        "rows": counts.rows,
        "counts": dict(counts.by_status),
        "errors_by_type": dict(counts.by_error_type),
        "error_rate": counts.error_rate,
        "max_error_rate": settings.max_error_rate,
        "passed": counts.error_rate <= settings.max_error_rate,
        "wall_s": round(wall, 3),
        "images_per_s": round(counts.by_status["ok"] / wall, 3) if wall else None,
        "stylize_ms_total": round(counts.stylize_ms, 1),
        "metrics_ms_total": round(counts.metrics_ms, 1),
        **counts.forward_summary(),
        # share of the actors' wall time spent in the network and the loss meter (device time on CUDA)
        "actor_busy_fraction": round((counts.stylize_ms + counts.metrics_ms) / (wall * 1000 * actors), 3)
        if wall and actors else None,
        "actors": actors,
        "gpus_per_actor": gpus_per_actor,
        "stages": "fused" if fused else "split",
        "metrics_files": writer.files,
        "config": redact(settings.to_dict()),
    }
    runs = join_uri(settings.output, "_runs")
    sheet = contact_sheet_png(counts.examples, opts) if settings.contact_sheet else None
    if sheet:
        summary["contact_sheet"] = join_uri(runs, f"{settings.run_id}_contact.png")
        write_bytes_atomic(summary["contact_sheet"], sheet, opts)
    summary["summary_uri"] = join_uri(runs, f"{settings.run_id}.json")
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True).encode(), opts)
    return summary


def describe(summary: dict) -> str:
    """A short human summary of a run."""
    counts = summary["counts"]
    lines = [
        f"run {summary['run_id']}: {summary['inputs']} inputs, {summary['rows']} rows in {summary['wall_s']:.1f}s "
        f"({summary['images_per_s']} images/s)",
        "  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    ]
    if summary["errors_by_type"]:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["errors_by_type"].items())))
    lines.append(f"  error rate {summary['error_rate']:.2%} (limit {summary['max_error_rate']:.2%}): "
                 + ("PASS" if summary["passed"] else "FAIL"))
    lines.append(f"  summary: {summary['summary_uri']}")
    if "contact_sheet" in summary:
        lines.append(f"  contact sheet: {summary['contact_sheet']}")
    return "\n".join(lines)


def main(settings: JobSettings) -> int:
    try:
        summary = run(settings)
    except JobError as exc:
        _log(f"error: {exc}")
        return 2
    print(describe(summary))
    return 0 if summary["passed"] else 1


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
