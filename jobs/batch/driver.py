"""The batch job: ``python -m jobs.stylize --input URI --output URI --style NAME=CHECKPOINT_URI``.

Lists the inputs, streams them through Ray Data (read/decode tasks -> stylize actor pool ->
encode/write tasks), writes one metrics row per input x style as Parquet, then a run summary and
a contact sheet. Inputs above --split-pixels run after the stream as posters, their tiles spread over
a pool of actors (:mod:`jobs.batch.poster`); their rows go through the same ledger. Exit status: 0 when the error rate is within --max-error-rate, 1 when it is not,
2 when the job could not run at all (bad input prefix, unloadable checkpoint, ...).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.batch.contact_sheet import contact_sheet_png
from jobs.batch.settings import JobSettings, parse_args
from jobs.batch import poster
from jobs.batch.stages import POSTER, SETUP_ERROR, encode_write, read_decode
from jobs.batch.staging import StagedManifest, stage_inputs, staging_prefix
from jobs.common import ray_runtime
from jobs.common.attempts import attempt_ledger
from jobs.common.checkpoints import (check_style_blobs, input_unusable, read_style_blobs, start_style_encoding, stop,
                                     style_encodings)
from jobs.common.metrics import MetricsWriter, PairLedger, RunCounts, to_table
from jobs.common.metrics_schema import SCHEMA
from jobs.common.outcome import JobError, plain_output, run_main
from jobs.common.planning import ActorPlan, plan_actors
from jobs.common.progress import Progress
from jobs.common.redaction import exception_line
from jobs.common.storage import (InputFile, arrow_paths, join_uri, local_path, redact, redact_text, remove_prefix,
                                 remove_temp_files, write_bytes_atomic)
from jobs.common.watchdog import stall_guarded
from stylize_core.host import malloc_env
from stylize_core.style_encoding import StyleEncodings


def _log(msg: str) -> None:
    print(f"[stylize] {redact_text(msg)}", file=sys.stderr, flush=True)


def _raise_setup_error(table: pa.Table) -> None:
    """Actors that could not build their stylizer (weights not staged, ...) answer every row with
    ``setup_error``: the run cannot start, so stop with the actor's message (exit 2)."""
    errors = pc.filter(table.column("error"), pc.equal(table.column("error_type"), SETUP_ERROR))
    if len(errors):
        raise stop(errors[0].as_py())


# The actor class, by name: actors import it (and torch); the driver never does.
STYLIZE_ACTOR: str | type = "jobs.batch.actor:StylizeActor"


def _written_on_failure(batches: Iterator[pa.Table], settings: JobSettings, writer: MetricsWriter, counts: RunCounts,
                        expected: int) -> Iterator[pa.Table]:
    """The stream, but a pipeline failure Ray could not recover (a lost node whose blocks cannot be
    rebuilt, a UDF error) first writes the rows the driver holds, then stops the run with one line
    (:class:`JobError`). A rerun of the same run id replaces this run's metrics and completes it."""
    try:
        yield from batches
    except Exception as exc:
        writer.flush()
        cause = exception_line(exc)
        raise JobError(f"the Ray pipeline failed after {counts.rows} of {expected} rows ({cause}); the rows so far "
                       f"are in {redact(writer.prefix)}; rerun with --run-id {settings.run_id} to complete the run") from exc


def _render(settings: JobSettings, staged: StagedManifest, plan: ActorPlan, fused: bool,
            on_rows: Callable[[pa.Table], None] | None, encodings: StyleEncodings | None = None
            ) -> tuple[RunCounts, MetricsWriter, dict | None]:
    """Stream the staged manifest through the pipeline, then the posters it held back (--split-pixels,
    :mod:`jobs.batch.poster`); every (input, style) pair counted once. Returns the poster phase's summary too."""
    opts = settings.storage_options
    writer = MetricsWriter(settings.output, settings.run_id, opts)
    counts = RunCounts()
    styles = settings.style_names
    ledger = PairLedger(staged.rows, styles)
    expected = staged.rows * len(styles)
    progress = Progress("[stylize]", expected, enabled=not settings.quiet)
    held: list[dict] = []  # the rows of inputs that run as posters, until they have run

    def take(table: pa.Table, idx: np.ndarray) -> None:
        # A retried block must not count twice: keep the first row per (input, style).
        fresh = ledger.first_seen(idx, table["style"])
        if not fresh.all():
            table = table.filter(pa.array(fresh))
        writer.add(table)
        counts.add(table, keep_examples=settings.contact_sheet)
        if on_rows is not None:
            on_rows(table)
        progress.update(counts.rows, counts.by_status["error"])

    if staged.rows:
        with attempt_ledger() as attempts:  # its counts removed when the stream ends
            parts, filesystem = arrow_paths(list(staged.parts), opts)
            batches = ray_runtime.stylize_dataset(
                parts,
                staged.rows,
                filesystem=filesystem,
                read_fn=None if fused else functools.partial(read_decode, settings=settings),
                read_batch_size=settings.read_batch_size,
                actor=STYLIZE_ACTOR,
                # Actors read the checkpoints themselves: megabytes of constructor arguments would go through
                # the object store with every actor start. The style encodings (adain, predict) are made once
                # for the run instead: Ray Data keeps the constructor's arguments in the object store, one copy.
                actor_kwargs={"settings": settings, "plan": plan, "attempts": attempts, "fused": fused,
                              "encodings": encodings},
                actors=(plan.min_actors, plan.max_actors),
                batch_size=plan.window,
                gpus_per_actor=plan.gpus_per_actor,
                cpus_per_actor=plan.cpus_per_actor,
                write_fn=None if fused else functools.partial(encode_write, settings=settings),
                actor_env=malloc_env(),
            )
            batches = _written_on_failure(stall_guarded(batches, settings.stall_timeout), settings, writer, counts, expected)
            for batch in batches:
                table = to_table(batch)
                _raise_setup_error(table)
                idx = np.asarray(batch["idx"].to_numpy())
                deferred = pc.equal(table["status"], POSTER).to_numpy(zero_copy_only=False)
                if deferred.any():
                    held += [{**row, "idx": int(i)} for row, i in zip(table.filter(pa.array(deferred)).to_pylist(), idx[deferred])]
                    table, idx = table.filter(pa.array(~deferred)), idx[~deferred]
                take(table, idx)
    posters = None
    if held:
        phase = poster.PosterPhase(settings, plan, encodings, env=malloc_env())
        try:
            phase.run(list(poster.posters_of(held)),
                      lambda rows: take(pa.Table.from_pylist(rows, schema=SCHEMA), np.array([r["idx"] for r in rows])))
        finally:
            phase.close()
        posters = phase.stats.summary()
    progress.close()
    writer.flush()
    if counts.rows != expected or ledger.seen != expected:
        raise JobError(f"accounting mismatch: {expected} input x style pairs listed but {counts.rows} rows came back")
    return counts, writer, posters


def run(
    settings: JobSettings,
    inputs: Sequence[InputFile] | str | None = None,
    todo: Mapping[str, Sequence[str]] | None = None,
    on_rows: Callable[[pa.Table], None] | None = None,
) -> dict:
    """Run the job; returns the summary (also written to ``{output}/_runs/{run_id}.json``).

    ``inputs`` replaces the listing of ``settings.input``: InputFiles, or a manifest URI (the nightly
    catalog passes its plan; a ``todo_styles`` column in a manifest plans styles per input). ``todo``
    maps an input URI to the styles to render for it (others become ``skipped`` rows). The inputs
    are staged as Parquet parts under ``{output}/_manifests/{run_id}/`` (removed at the end) and
    streamed: the driver never holds them. ``on_rows`` receives each batch of metrics rows
    (:data:`jobs.common.metrics.SCHEMA`) as it is written.
    """
    started = time.time()
    opts = settings.storage_options
    staging = staging_prefix(plain_output(settings.output), settings.run_id)

    listed = threading.Event()

    def stage() -> StagedManifest:
        source = settings.input if inputs is None else inputs
        try:
            return stage_inputs(source, staging, opts, todo=todo, on_listed=listed.set)
        except (OSError, ValueError) as exc:  # missing, denied, not listable, a bad manifest
            raise input_unusable(source if isinstance(source, str) else settings.input, exc) from None

    # Listing takes seconds: past its first page it overlaps Ray's start-up (as does importing Ray
    # Data). ray.init stays on the main thread, where it installs its signal handlers.
    try:
        with ThreadPoolExecutor(3, thread_name_prefix="stylize-prepare") as pool:
            blobs_f = pool.submit(read_style_blobs, settings)
            staged_f = pool.submit(stage)
            _fail_before_ray(blobs_f, staged_f, listed)
            pool.submit(ray_runtime.preload_data)
            # Local workers inherit the actors' malloc settings: actors then start on prestarted workers.
            ray_runtime.init_ray(settings.address, quiet=settings.quiet, worker_env=malloc_env())
            blobs = blobs_f.result()
            plan = plan_actors(settings)
            # GPU actors may wait minutes for a node: check the checkpoints now, in a CPU task, while the
            # listing is staged. CPU actors start at once and build the same stylizer: their setup_error
            # rows are the check (and a separate check would cost a worker's torch import, ~1.4 s).
            checked = ray_runtime.call_remote(check_style_blobs, settings, blobs) if blobs and plan.gpus_per_actor else None
            encoded = start_style_encoding(settings)  # adain, predict: the style images, once for the run
            staged = staged_f.result()
        if checked is None and blobs and not staged.rows:  # no actor will run to find out
            checked = ray_runtime.call_remote(check_style_blobs, settings, blobs)
        problem = ray_runtime.result(checked) if checked is not None else None
        if problem:
            raise stop(problem)
        encodings = style_encodings(encoded)
        return _finish(settings, staged, blobs, plan, started, on_rows, encodings)
    finally:
        remove_prefix(staging, opts)  # the metrics rows are the record of what ran


def _fail_before_ray(blobs: Future, staged: Future, listed: threading.Event) -> None:
    """Raise what already stops the run before Ray starts (seconds, and its workers' memory): the
    checkpoints are read and checked (milliseconds locally, a GET per style remotely), and the listing
    has answered (one LIST), before Ray's start-up; the rest of the listing still overlaps it."""
    blobs.result()
    while not listed.wait(0.01) and not staged.done():
        pass
    if staged.done():
        staged.result()


def _finish(settings: JobSettings, staged: StagedManifest, blobs: dict[str, bytes], plan: ActorPlan, started: float,
            on_rows: Callable[[pa.Table], None] | None = None, encodings: StyleEncodings | None = None) -> dict:
    opts = settings.storage_options
    styles = settings.style_names
    _log(f"run {settings.run_id}: {staged.rows} inputs x {len(styles)} style(s) -> {settings.output}")
    ray_runtime.configure_data()
    fused = settings.stages == "fused" or (settings.stages == "auto" and not plan.gpus_per_actor)
    counts, writer, posters = _render(settings, staged, plan, fused, on_rows, encodings)
    swept = _sweep_interrupted_writes(settings, styles, started)

    wall = time.time() - started
    summary = {
        "run_id": settings.run_id,
        "input": settings.input,
        "output": settings.output,
        "inputs": staged.rows,
        "styles": {name: {"checkpoint": settings.styles.get(name), "style_image": settings.style_images.get(name),
                          "sha256": hashlib.sha256(blobs[name]).hexdigest() if name in blobs else None,
                          "counts": dict(counts.by_style.get(name, {})),
                          **({"regions": list(settings.regions[name])} if name in settings.regions else {})}
                   for name in styles},
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
        **counts.tile_summary(),
        # share of the actors' wall time spent in the network and the loss meter (device time on CUDA)
        "actor_busy_fraction": round((counts.stylize_ms + counts.metrics_ms) / (wall * 1000 * plan.max_actors), 3)
        if wall else None,
        "window": plan.window,
        "actors": plan.max_actors,
        "actor_pool": {"min": plan.min_actors, "max": plan.max_actors, "cpus_per_actor": plan.cpus_per_actor,
                       "torch_threads": plan.torch_threads, "reason": plan.reason},
        "gpus_per_actor": plan.gpus_per_actor,
        "stages": "fused" if fused else "split",
        "posters": posters,  # --split-pixels: inputs, tiles, actors (jobs.batch.poster)
        "metrics_files": writer.files,
        # adain, predict: what the run derived from its style images, once, for every actor
        "style_encodings": encodings.summary() if encodings is not None else None,
        "temp_files_removed": swept,
        "config": redact(settings.to_dict()),
    }
    runs = join_uri(settings.output, "_runs")
    sheet = contact_sheet_png(counts.examples, opts) if settings.contact_sheet else None
    if sheet:
        summary["contact_sheet"] = join_uri(runs, f"{settings.run_id}_contact.png")
        write_bytes_atomic(summary["contact_sheet"], sheet, opts)
    summary["summary_uri"] = join_uri(runs, f"{settings.run_id}.json")
    summary = redact(summary, keys=False)  # input, checkpoints, style images: presigned URLs are common
    write_bytes_atomic(summary["summary_uri"], json.dumps(summary, indent=2, sort_keys=True).encode(), opts)
    return summary


def _sweep_interrupted_writes(settings: JobSettings, styles: Sequence[str], started: float) -> int:
    """Every pair is accounted for: remove the temp files of writes that were killed before this run
    started (an earlier run of this output stopped by a lost node or a failure; its actors died
    mid-write). Local outputs only: S3 objects appear whole, with no temp name. Files newer than this
    run's start are left alone (a writer of another run may still hold one)."""
    if local_path(settings.output) is None:
        return 0
    return sum(remove_temp_files(join_uri(settings.output, style), settings.storage_options, older_than=started)
               for style in styles)


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
    """Run, print the outcome; the exit status (0 passed, 1 over the error budget, 2 could not run)."""
    return run_main(lambda: run(settings), describe, "stylize")


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))

