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

Content images (:func:`jobs.listing.list_images`) stream through Ray Data (read, decode, crop on CPU
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

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from stylize_core.checkpoint import examples_state_dict
from stylize_core.host import malloc_env
from stylize_core.image_io import decode_image
from stylize_core.onnx_export import onnx_bytes, onnx_max_abs_diff
from stylize_core.training import TrainConfig, trained_checkpoint_bytes
from stylize_core.transformer_net import TransformerNet

from . import cli_settings
from .cli_settings import option, split_csv
from .listing import list_images
from .storage import StorageOptions, get_filesystem, join_uri, read_bytes, redact, split_protocol
from .storage import write_bytes_atomic
from .train_worker import STATE_FILE, _read_content_batch, _RunLedger, _train_worker

HISTORY_COLUMNS = ("step", "epoch", "images", "content", "style", "tv", "total")
_DEFAULTS = TrainConfig()


_DATA, _OPT, _NET, _LOSS, _RUN = ("data and outputs", "optimisation",
                                   "network size (recorded in the checkpoint; defaults: pytorch/examples' layout)",
                                   "loss network", "cluster, checkpoints and logging")
Csv = Annotated[tuple[str, ...], BeforeValidator(split_csv)]


class TrainSettings(BaseModel):
    """``python -m jobs.train`` options, from flags and ``--config`` YAML alike."""

    model_config = ConfigDict(extra="forbid")

    content: str = option(..., "content images: prefix, single image or manifest (.csv/.parquet); any URI. Required",
                          group=_DATA, min_length=1)
    style_image: list[str] = option(..., "style image URI; repeat it to train one multi-style network (conditional "
                                    "instance norm). Required", group=_DATA, min_length=1)
    output: str = option(..., "output prefix (local path or URI): checkpoints, final models, history. Required",
                         group=_DATA, min_length=1)
    style_name: list[str] | None = option(None, "style name recorded in the checkpoint, once per --style-image in "
                                          "order (default: the image stems)", group=_DATA)
    name: str = option("train", "Ray Train run name under --output (resume key)", group=_DATA,
                       pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

    steps: int = option(_DEFAULTS.steps, "stop after this many optimiser steps", group=_OPT, ge=1)
    epochs: int = option(_DEFAULTS.epochs, "... or this many passes, whichever first", group=_OPT, ge=1)
    image_size: int = option(_DEFAULTS.image_size, "content crop size (px)", group=_OPT, ge=16)
    batch_size: int = option(_DEFAULTS.batch_size, "images per step per worker", group=_OPT, ge=1)
    lr: float = option(_DEFAULTS.lr, "Adam learning rate", group=_OPT, gt=0)
    content_weight: float = option(_DEFAULTS.content_weight, "feature loss weight", group=_OPT, ge=0)
    style_weight: float = option(_DEFAULTS.style_weight, "Gram loss weight", group=_OPT, ge=0)
    tv_weight: float = option(_DEFAULTS.tv_weight, "total variation weight", group=_OPT, ge=0)
    seed: int = option(_DEFAULTS.seed, "model init and shuffling", group=_OPT)
    autocast: Literal["auto", "bf16", "fp16", "none"] = option("auto", "auto: bf16 on GPU", group=_OPT)

    width: float = option(_DEFAULTS.width, "channel multiplier of the 32/64/128 widths: 0.25 is the slim network "
                          "(~12x fewer FLOPs)", group=_NET, gt=0, le=4)
    blocks: int = option(_DEFAULTS.blocks, "residual blocks", group=_NET, ge=0, le=32)
    depthwise: bool = option(False, "depthwise-separable 3x3 convs in the residual blocks (slim: ~1.1x less CPU per "
                             "image)", group=_NET)

    vgg: str = option(_DEFAULTS.vgg, "loss network: vgg16, vgg19 or texture[:SEED]", group=_LOSS,
                      pattern=r"^(vgg16|vgg19|texture(:\d+)?)$")
    vgg_weights: str = option(_DEFAULTS.vgg_weights, "imagenet|PATH|URI|random:SEED", group=_LOSS, min_length=1)
    content_layers: Csv = option(_DEFAULTS.content_layers, "comma-separated (default: the loss network's)", group=_LOSS)
    style_layers: Csv = option(_DEFAULTS.style_layers, "comma-separated (default: the loss network's)", group=_LOSS)
    style_size: int | None = option(None, "long side of the style image (default: as given)", group=_LOSS, ge=16)
    style_scales: Annotated[tuple[float, ...], BeforeValidator(split_csv)] = option(
        (1.0,), "comma-separated; Gram targets averaged", group=_LOSS, min_length=1)

    workers: int = option(1, "data-parallel training workers", group=_RUN, ge=1)
    gpus_per_worker: float | None = option(None, "GPUs per worker (default: 1 if the cluster has GPUs, else 0)",
                                           group=_RUN, ge=0)
    cpus_per_worker: float | None = option(None, "CPUs reserved per worker (default: 1, or less so that one CPU stays "
                                           "free for data loading)", group=_RUN, ge=0)
    address: str | None = option(None, "Ray cluster address (default: RAY_ADDRESS or a local Ray)", group=_RUN)
    checkpoint_every: int = option(_DEFAULTS.checkpoint_every, "steps", group=_RUN, ge=1)
    keep_checkpoints: int = option(2, "Ray Train checkpoints kept", group=_RUN, ge=1)
    max_failures: int = option(0, "automatic restarts from the latest checkpoint", group=_RUN, ge=-1)
    log_every: int = option(_DEFAULTS.log_every, "progress line every N steps", group=_RUN, ge=1)
    read_batch_size: int = option(16, "images per Ray Data decode task batch", group=_RUN, ge=1)
    onnx_opset: int = option(17, "ONNX opset of final/style.onnx", group=_RUN, ge=13)

    @model_validator(mode="after")
    def _names_per_image(self) -> TrainSettings:
        if self.style_name and len(self.style_name) != len(self.style_image):
            raise ValueError(f"{len(self.style_name)} --style-name for {len(self.style_image)} --style-image: "
                             "give one per image")
        return self


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every flag can also be a key (with underscores) in ``--config``."""
    return cli_settings.build_parser(TrainSettings, "python -m jobs.train",
                                     "Train a fast style-transfer network (Johnson et al.) with Ray Train.")


def parse_args(argv: Sequence[str] | None = None) -> TrainSettings:
    """Validated settings from flags and ``--config``; exits 2 with one line when they are invalid."""
    return cli_settings.parse(TrainSettings, argv, build_parser())


def train_config_from_args(args: TrainSettings) -> TrainConfig:
    """The :class:`TrainConfig` recorded in every checkpoint."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    stems = [os.path.splitext(os.path.basename(uri.rstrip("/")))[0] or "style" for uri in args.style_image]
    names = list(args.style_name or stems)
    values["style_name"] = names[0] if len(names) == 1 else "+".join(names)
    values["style_names"] = tuple(names) if len(names) > 1 else ()
    return TrainConfig(**values)


# --- resources: data loading always keeps a CPU -----------------------------------------------------

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


def main(args: TrainSettings) -> int:
    """Run the training job; returns a process exit code."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from .ray_runtime import init_ray

    if os.environ.get("RAY_TRAIN_V2_ENABLED", "1").lower() in ("0", "false"):  # V1 resumes only via .restore()
        print("warning: RAY_TRAIN_V2_ENABLED=0: a rerun will not resume from the checkpoints", file=sys.stderr)
    options = StorageOptions()
    config = train_config_from_args(args)
    files = list_images(args.content, options)
    style_images = [decode_image(read_bytes(uri, options)) for uri in args.style_image]  # (H, W, 3) uint8 each
    if len(files) < args.workers * args.batch_size:
        print(f"error: {len(files)} content images, fewer than --workers x --batch-size", file=sys.stderr)
        return 2
    fixed = not (args.address or os.environ.get("RAY_ADDRESS"))  # a local Ray cannot grow
    if fixed:
        # Ray Train's node-preemption watcher has nothing to watch on one machine, and starting it
        # logs an error-level line (its actor restarts with arguments in the object store) on every run.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    init_ray(args.address)
    ray.data.DataContext.get_current().enable_progress_bars = False
    resources = ray.cluster_resources()
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else min(1.0, resources.get("GPU", 0))
    cpus_per_worker, refusal = plan_cpus_per_worker(args.workers, args.cpus_per_worker, resources.get("CPU", 0.0),
                                                    fixed=fixed)
    if refusal is None and fixed and gpus > 0 and args.workers * gpus > resources.get("GPU", 0):
        refusal = (f"--workers {args.workers} x {gpus:g} GPU need {args.workers * gpus:g} GPUs and this Ray has "
                   f"{resources.get('GPU', 0):g}: pass fewer --workers or --gpus-per-worker 0")
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    ledger = ray.remote(num_cpus=0)(_RunLedger).remote()
    uris = [f.uri for f in files]
    np.random.default_rng(config.seed).shuffle(uris)  # spread listing order (often by source) over shards
    dataset = ray.data.from_items([{"uri": u} for u in uris]).map_batches(
        _read_content_batch, batch_size=args.read_batch_size, batch_format="numpy",
        fn_kwargs={"size": config.image_size, "options": options, "ledger": ledger},
    )
    storage_path, storage_fs = _storage_for(args.output, options)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={
            "train_config": asdict(config), "style_images": style_images, "storage_options": options,
            "ledger": ledger, "autocast": args.autocast,
        },
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
    print(f"training {config.style_name!r} ({config.arch(len(style_images)).describe()}): {len(files)} images, "
          f"{args.workers} worker(s) x {cpus_per_worker:g} CPU, {'GPU' if gpus > 0 else 'CPU'}, "
          f"output {redact(args.output)}", flush=True)
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError and friends: the checkpoints so far stay for a rerun
        print(f"error: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
    ledger_summary = ray.get(ledger.summary.remote())  # seeded from the checkpoint on resume
    skipped = list({s["uri"]: dict(s) for s in [*state.get("skipped", []), *ledger_summary["skipped"]]}.values())
    extra = {"content_images": len(files), "skipped_files": len(skipped), "workers": args.workers}
    exported = export_final(state, style_images, args.output, options, extra=extra, opset=args.onnx_opset)
    history = state["history"]
    resumed_from = ledger_summary["start_step"] or 0
    summary = {
        "style": config.style_name, "steps": state["step"], "epochs": state["epoch"], "loss_model": state["loss_model"],
        "workers": args.workers, "cpus_per_worker": cpus_per_worker, "device": "gpu" if gpus > 0 else "cpu",
        "arch": config.arch(len(style_images)).to_dict(), "content_images": len(files),
        "skipped_files": len(skipped), "skipped": skipped, "resumed_from_step": resumed_from,
        "steps_this_run": state["step"] - resumed_from, "fit_seconds": round(seconds, 2),
        "final_losses": history[-1] if history else None, "training_config": asdict(config), **exported,
    }
    write_bytes_atomic(join_uri(args.output, "train_summary.json"), json.dumps(summary, indent=2).encode(), options)
    print(json.dumps(redact({k: v for k, v in summary.items() if k not in ("training_config", "skipped")}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
