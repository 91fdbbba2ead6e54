"""Distributed training of a style network with Ray Train (data-parallel, DDP).

    python -m jobs.train --content s3://bucket/coco/ --style-image s3://bucket/mosaic.jpg \\
        --output s3://bucket/models/mosaic --workers 4 --steps 40000 --vgg-weights imagenet

Network size: ``--width`` (channel multiplier), ``--blocks`` (residual blocks) and ``--depthwise``
(depthwise-separable residual convs) choose the architecture
(:class:`~stylize_core.transformer_net.NetConfig`, recorded in the checkpoint).
``--style-image`` given several times trains one multi-style network (conditional instance norm):
each image of a batch gets one of the styles in turn.

Resources: each worker takes ``--cpus-per-worker`` CPUs; left out, it is planned so that at least
one CPU stays free for the Ray Data decode tasks (1 when the cluster has room, else a fraction). On
a local Ray, a request that cannot run (no CPU left for data loading, or more CPUs/GPUs than the
machine has) is refused at start with exit 2 and one line saying what to pass.

Content images (:func:`jobs.common.listing.list_images`) stream through Ray Data (read, decode, crop on CPU
tasks), split equally over the workers; undecodable files are skipped and counted once per URI.
Each worker holds a :class:`~stylize_core.training.StyleTrainer` (style targets computed once per
worker) wrapped in DDP (NCCL on GPUs with bf16 autocast, gloo on CPUs). ``{output}`` receives Ray
Train checkpoints (``{name}/checkpoint_NNNNNNNN/train_state.pt``), ``final/style.pth`` (project
format), ``final/style_examples.pth`` (pytorch/examples; only for its own layout: the default size,
one style), ``final/style.onnx`` (multi-style: a ``style_weights`` input),
``loss_history.csv``/``.png`` and ``train_summary.json``.

Resume: rerun the same command (same ``--output`` and ``--name``). Ray Train V2 (the default in
Ray 2.60) finds the run's checkpoint snapshot under ``{output}/{name}`` and the workers continue
from the latest checkpoint: step count, Adam state and loss history. The data position is not
saved, so an interrupted epoch restarts from its first batch. Raise ``--steps`` to train further.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from stylize_core.checkpoint import examples_state_dict
from stylize_core.host import malloc_env
from stylize_core.onnx_export import onnx_bytes, onnx_max_abs_diff
from stylize_core.training import TrainConfig, trained_checkpoint_bytes
from stylize_core.transformer_net import TransformerNet

from jobs.common.checkpoints import input_unusable, stop
from jobs.common.listing import list_images
from jobs.common.outcome import JobError
from jobs.common.storage import StorageOptions, get_filesystem, join_uri, read_bytes, redact, split_protocol
from jobs.common.storage import write_bytes_atomic
from jobs.train.settings import TrainSettings, train_config_from_args
from jobs.train.ledger import RunLedger
from jobs.train.worker import STATE_FILE, read_content_batch, train_worker_loop

HISTORY_COLUMNS = ("step", "epoch", "images", "content", "style", "tv", "total")

DATA_CPUS = 1.0  # each Ray Data decode task asks for one CPU


def plan_cpus_per_worker(
    workers: int, requested: float | None, cluster_cpus: float, *, fixed: bool
) -> tuple[float, str | None]:
    """(CPUs per worker, refusal or None) so that ``DATA_CPUS`` stay free for the decode tasks.

    ``requested`` None plans it: 1 when the cluster has room, else the share of what is left after
    data loading. ``fixed`` is a cluster that cannot grow (a local Ray): a request that cannot run
    there is refused with one line saying what to pass, since Ray would wait for it forever.
    """
    room = cluster_cpus - DATA_CPUS
    if requested is None:
        if workers * 1.0 <= room:
            return 1.0, None
        share = int(room / workers * 100) / 100  # floored to 0.01: never over-ask
        if share >= 0.01:  # (a CPU share of 0 would leave a worker with an empty resource bundle)
            return share, None
        if not fixed:
            return 1.0, None  # a cluster still scaling up: its autoscaler adds nodes for workers and data
        return 1.0, (
            f"this Ray has {cluster_cpus:g} CPU(s): data loading needs {DATA_CPUS:g} and each of --workers "
            f"{workers} a share of the rest: pass fewer --workers or run on a machine with more CPUs"
        )
    if fixed and workers * requested > room:
        share = max(0.0, int(room / workers * 100) / 100)
        return requested, (
            f"--workers {workers} x --cpus-per-worker {requested:g} leave "
            f"{max(0.0, cluster_cpus - workers * requested):g} of this Ray's {cluster_cpus:g} CPUs for data loading, "
            f"which needs {DATA_CPUS:g}: pass --cpus-per-worker {share:g} (or leave it out to plan it)"
        )
    return requested, None


@dataclass(frozen=True)
class WorkerPlan:
    """What each training worker reserves; the run summary records it."""

    cpus_per_worker: float
    gpus: float  # per worker; 0 trains on CPUs

    @property
    def device(self) -> str:
        return "gpu" if self.gpus > 0 else "cpu"


def plan_workers(args: TrainSettings, resources: dict[str, float], *, fixed: bool) -> tuple[WorkerPlan, str | None]:
    """(plan, refusal or None) for ``--workers`` on a cluster with ``resources`` (Ray's totals); on a
    ``fixed`` cluster a request that cannot run is refused (see :func:`plan_cpus_per_worker`)."""
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else min(1.0, resources.get("GPU", 0))
    cpus_per_worker, refusal = plan_cpus_per_worker(args.workers, args.cpus_per_worker, resources.get("CPU", 0.0),
                                                    fixed=fixed)
    if refusal is None and fixed and gpus > 0 and args.workers * gpus > resources.get("GPU", 0):
        refusal = (f"--workers {args.workers} x {gpus:g} GPU need {args.workers * gpus:g} GPUs and this Ray has "
                   f"{resources.get('GPU', 0):g}: pass fewer --workers or --gpus-per-worker 0")
    return WorkerPlan(cpus_per_worker, gpus), refusal


def _start_ray(address: str | None) -> bool:
    """Join the cluster at ``address`` (or RAY_ADDRESS), else start a local Ray; True for a local
    Ray, which cannot grow."""
    import ray

    from jobs.common.ray_runtime import init_ray

    fixed = not (address or os.environ.get("RAY_ADDRESS"))
    if fixed:
        # Ray Train's node-preemption watcher has nothing to watch on one machine, and starting it
        # logs an error-level line (its actor restarts with arguments in the object store) on every run.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    init_ray(address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return fixed


# --- driver: run the trainer, then export ---------------------------------------------------------


def _storage_for(output: str, options: Any) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: local paths as-is, other URIs through the
    project's fsspec filesystem (custom S3 endpoints and credentials included)."""
    import pyarrow.fs

    fs, path = get_filesystem(output, options)
    if split_protocol(output)[0] in (None, "file", "local"):
        return path, None
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def history_csv(history: Sequence[dict[str, float]]) -> bytes:
    """Loss history as CSV bytes (one row per step)."""
    rows = [",".join(HISTORY_COLUMNS)] + [",".join(str(r.get(c, "")) for c in HISTORY_COLUMNS) for r in history]
    return ("\n".join(rows) + "\n").encode()


def history_plot_png(history: Sequence[dict[str, float]], title: str) -> bytes:
    """Content/style/TV/total loss per step (log scale) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [r["step"] for r in history]
    for key in ("content", "style", "tv", "total"):
        values = [r[key] for r in history]
        if any(v > 0 for v in values):
            ax.plot(steps, values, label=key, linewidth=1)
    ax.set(yscale="log", xlabel="step", ylabel="weighted loss", title=title)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def export_final(state: dict[str, Any], style_images: list[np.ndarray], output: str, options: Any, *,
                 extra: dict[str, Any], opset: int = 17) -> dict[str, Any]:
    """Write final/style.pth, final/style.onnx, loss history CSV + PNG, and final/style_examples.pth
    when the network has pytorch/examples' layout (the default size, one style)."""
    config = state["config"]
    model = TransformerNet(TrainConfig.from_dict(config).arch(len(style_images)))
    model.load_state_dict(state["model"], strict=True)
    paths = {
        "checkpoint": ("final", "style.pth"), "examples_state_dict": ("final", "style_examples.pth"),
        "onnx": ("final", "style.onnx"), "history_csv": ("loss_history.csv",), "history_png": ("loss_history.png",),
    }
    if not model.arch.is_examples_layout:
        del paths["examples_state_dict"]
    uris = {k: join_uri(output, *p) for k, p in paths.items()}
    write_bytes_atomic(uris["checkpoint"], trained_checkpoint_bytes(
        model, style_images, config, state["loss_model"], state["step"], state["epoch"], **extra), options)
    if "examples_state_dict" in uris:
        buf = io.BytesIO()
        torch.save(examples_state_dict(model), buf)
        write_bytes_atomic(uris["examples_state_dict"], buf.getvalue(), options)
    onnx_data = onnx_bytes(model, opset=opset, example_size=(config["image_size"],) * 2)
    write_bytes_atomic(uris["onnx"], onnx_data, options)
    write_bytes_atomic(uris["history_csv"], history_csv(state["history"]), options)
    write_bytes_atomic(uris["history_png"], history_plot_png(state["history"], config["style_name"]), options)
    return {"artifacts": uris, "onnx_max_abs_diff": onnx_max_abs_diff(model, onnx_data)}


def _final_state(result: Any) -> dict[str, Any]:
    """The training state in the run's latest checkpoint (on resume: this run's or an earlier one's)."""
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)


def _skipped(state: dict[str, Any], ledger_summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Undecodable content files, once per URI: those of earlier runs (in the checkpoint) and this run's."""
    return list({s["uri"]: dict(s) for s in [*state.get("skipped", []), *ledger_summary["skipped"]]}.values())


def run_fields(state: dict[str, Any], ledger_summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What every task's ``train_summary.json`` says of the run itself, the same way for each: steps and
    epochs reached, where this invocation resumed from (0: a fresh start) and how many steps it added,
    the fit's seconds, the last losses, and the undecodable content files of this and earlier runs."""
    skipped = _skipped(state, ledger_summary)
    start = ledger_summary["start_step"] or 0
    history = state["history"]
    return {"steps": state["step"], "epochs": state["epoch"], "skipped_files": len(skipped), "skipped": skipped,
            "resumed_from_step": start, "steps_this_run": state["step"] - start, "fit_seconds": round(seconds, 2),
            "final_losses": history[-1] if history else None}


def _summary(args: TrainSettings, config: TrainConfig, plan: WorkerPlan, state: dict[str, Any], *, styles: int,
             content_images: int, run: dict[str, Any], exported: dict[str, Any]) -> dict[str, Any]:
    """train_summary.json: what was trained on what, with which resources, how long, and the artifacts."""
    return {
        "style": config.style_name, "loss_model": state["loss_model"],
        "workers": args.workers, "cpus_per_worker": plan.cpus_per_worker, "device": plan.device,
        "arch": config.arch(styles).to_dict(), "content_images": content_images, **run,
        "training_config": asdict(config), **exported,
    }


def main(args: TrainSettings) -> int:
    """Run the style-network training job; returns a process exit code (``python -m jobs.train``
    dispatches by task: :mod:`jobs.train.program`)."""
    import ray.train.torch  # noqa: F401  (loaded before any I/O, as always: a broken install fails first)

    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):  # V1 resumes only via .restore()
        print("warning: RAY_TRAIN_V2_ENABLED=0: a rerun will not resume from the checkpoints", file=sys.stderr)
    if args.task != "style":
        raise ValueError(f"--task {args.task}: enhancement networks train through jobs.train.program.main")
    options = StorageOptions()
    config = train_config_from_args(args)
    try:
        files, style_images = _inputs(args, config, options)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loop_config = {"train_config": asdict(config), "style_images": style_images, "autocast": args.autocast}

    def finish(state: dict[str, Any], ledger_summary: dict[str, Any], plan: WorkerPlan, seconds: float) -> dict[str, Any]:
        run = run_fields(state, ledger_summary, seconds)
        extra = {"content_images": len(files), "skipped_files": run["skipped_files"], "workers": args.workers}
        exported = export_final(state, style_images, args.output, options, extra=extra, opset=args.onnx_opset)
        return _summary(args, config, plan, state, styles=len(style_images), content_images=len(files), run=run,
                        exported=exported)

    run = TrainingRun(f"{config.style_name!r} ({config.arch(len(style_images)).describe()})", train_worker_loop,
                      loop_config, config.seed)
    return run_training(args, files, options, run, finish)


@dataclass(frozen=True)
class TrainingRun:
    """What one trainer (style networks, enhancement networks) hands :func:`run_training`: how the start
    line names it, the Ray Train worker loop and its config (the ledger and storage options are added),
    and the seed that shuffles the content listing."""

    describe: str
    loop: Any
    loop_config: dict[str, Any]
    seed: int


def run_training(args: TrainSettings, files: list, options: StorageOptions, run: TrainingRun,
                 finish: Callable[[dict[str, Any], dict[str, Any], WorkerPlan, float], dict[str, Any]]) -> int:
    """Plan the workers, fit, and write ``train_summary.json`` from ``finish(final state, ledger summary,
    plan, fit seconds)`` (which exports the networks); the exit status (2: cannot start, 1: training failed)."""
    import ray

    plan, refusal = plan_run(args, files)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    ledger = ray.remote(num_cpus=0)(RunLedger).remote()
    dataset = content_dataset(args, files, run.seed, options, ledger)
    loop_config = {**run.loop_config, "storage_options": options, "ledger": ledger}
    trainer = torch_trainer(args, plan, options, run.loop, loop_config, dataset)
    print(f"training {run.describe}: {len(files)} images, {args.workers} worker(s) x {plan.cpus_per_worker:g} CPU, "
          f"{plan.device.upper()}, output {redact(args.output)}", flush=True)
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError and friends: the checkpoints so far stay for a rerun
        print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    ledger_summary = ray.get(ledger.summary.remote())  # seeded from the checkpoint on resume
    summary = finish(_final_state(result), ledger_summary, plan, seconds)
    write_bytes_atomic(join_uri(args.output, "train_summary.json"), json.dumps(summary, indent=2).encode(), options)
    print(json.dumps(redact({k: v for k, v in summary.items() if k not in ("training_config", "skipped")}), indent=2))
    return 0


def _inputs(args: TrainSettings, config: TrainConfig, options: StorageOptions) -> tuple[list, list[np.ndarray]]:
    """The content listing and the style images (H, W, 3 uint8 each), after checking that the VGG
    weights load: what the workers would otherwise find unusable, one traceback each, after Ray started.
    JobError (exit 2) saying which file and why."""
    from stylize_core.builder import SetupError, read_style_image
    from stylize_core.vgg import VGGFeatures, VGGWeightsError, layer_names

    try:
        files = list_images(args.content, options)
    except (OSError, ValueError) as exc:
        raise input_unusable(args.content, exc) from None
    names = list(config.style_names) or [config.style_name]
    try:
        images = [read_style_image(name, uri, lambda u: read_bytes(u, options))[0]
                  for name, uri in zip(names, args.style_image)]
        if not config.vgg_weights.startswith("random:"):  # the same loader the workers run
            VGGFeatures(config.vgg, layer_names(config.vgg)[:1], config.vgg_weights,
                        opener=lambda u: read_bytes(u, options))
    except (SetupError, VGGWeightsError) as exc:
        raise stop(str(exc)) from None
    return files, images


def plan_run(args: TrainSettings, files: list) -> tuple[WorkerPlan | None, str | None]:
    """Start (or join) Ray and plan the workers: ``(plan, None)``, or ``(None, why it cannot start)``."""
    import ray

    if len(files) < args.workers * args.batch_size:
        return None, f"{len(files)} content images, fewer than --workers x --batch-size"
    fixed = _start_ray(args.address)
    plan, refusal = plan_workers(args, ray.cluster_resources(), fixed=fixed)
    return (None, refusal) if refusal else (plan, None)


def content_dataset(args: TrainSettings, files: list, seed: int, options: StorageOptions, ledger: Any) -> Any:
    """The content images as a Ray Dataset of ``--image-size`` crops (bad files reported to ``ledger``)."""
    import ray

    uris = [f.uri for f in files]
    np.random.default_rng(seed).shuffle(uris)  # spread listing order (often by source) over shards
    return ray.data.from_items([{"uri": u} for u in uris]).map_batches(
        read_content_batch, batch_size=args.read_batch_size, batch_format="numpy",
        fn_kwargs={"size": args.image_size, "options": options, "ledger": ledger},
    )


def torch_trainer(args: TrainSettings, plan: WorkerPlan, options: StorageOptions, loop: Any,
                  loop_config: dict[str, Any], dataset: Any) -> Any:
    """A TorchTrainer running ``loop`` on the planned workers, checkpointing under ``{output}/{name}``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    gpus, cpus_per_worker = plan.gpus, plan.cpus_per_worker
    storage_path, storage_fs = _storage_for(args.output, options)
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=gpus > 0,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": gpus} if gpus > 0 else {})},
        ),
        run_config=ray.train.RunConfig(
            name=args.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=max(1, args.keep_checkpoints)),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
            # the training loop runs in a thread of each worker: see stylize_core.host.malloc_env
            worker_runtime_env={"env_vars": malloc_env()},
        ),
        datasets={"train": dataset},
    )
    return trainer


