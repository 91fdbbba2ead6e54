"""``jobs.train --task sr2|sr4|denoise|deblock``: enhancement networks on Ray Train.

The same run shape as style training (:mod:`jobs.train.driver`): content images stream through Ray
Data as ``--image-size`` crops, split over data-parallel workers (DDP), resumable Ray Train
checkpoints under ``{output}/{name}``. Each worker cuts a random ``--patch`` from every crop of its
batch (flips, quarter turns), degrades it on the fly (:mod:`stylize_core.degrade`, the task's
degradation, ``--compound`` for the real-world chain) and steps an
:class:`~stylize_core.enhance_training.EnhanceTrainer`. ``{output}`` receives
``final/enhance.pth`` (``stylize.enhance_model``), ``final/enhance.onnx``, ``loss_history.csv``/``.png``
and ``train_summary.json``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from stylize_core.enhance_net import EnhanceNet
from stylize_core.enhance_checkpoint import enhance_checkpoint_bytes
from stylize_core.enhance_training import EnhanceTrainConfig, EnhanceTrainer, random_patches, to_tensor

from jobs.common.storage import StorageOptions, join_uri, write_bytes_atomic
from jobs.train.settings import TrainSettings

if TYPE_CHECKING:
    from jobs.train.driver import WorkerPlan

HISTORY_COLUMNS = ("step", "epoch", "images", "pixel", "perceptual", "tv", "total")


def enhance_config(args: TrainSettings) -> EnhanceTrainConfig:
    """The :class:`EnhanceTrainConfig` recorded in the checkpoint (ValueError for impossible settings)."""
    return EnhanceTrainConfig(
        task=args.task, channels=args.channels, blocks=args.blocks, unshuffle=args.unshuffle, patch=args.patch,
        batch_size=args.batch_size, steps=args.steps, lr=args.lr, pixel_loss=args.pixel_loss,
        perceptual_weight=args.perceptual_weight, tv_weight=args.tv_weight, vgg=args.vgg, vgg_weights=args.vgg_weights,
        compound=args.compound, seed=args.seed,
    )


def enhance_worker_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train per-worker loop: restore, wrap in DDP, stream crops, degrade patches, step, checkpoint."""
    import ray
    import ray.train
    import ray.train.torch

    from jobs.train.worker import loss_opener, restore_checkpoint, train_epochs

    rank = ray.train.get_context().get_world_rank()
    config = EnhanceTrainConfig.from_dict(loop_config["train_config"])
    ledger = loop_config["ledger"]
    device = ray.train.torch.get_device()
    trainer = EnhanceTrainer(config, device=device, opener=loss_opener(config.vgg_weights, loop_config["storage_options"]))
    restore_checkpoint(trainer, rank, ledger)
    trainer.wrap(ray.train.torch.prepare_model(trainer.raw_net))  # DDP when world > 1
    # patches and degradations differ per worker and per (resumed) step, reproducibly
    rng = np.random.default_rng([config.seed, rank, trainer.step_count])
    shard = ray.train.get_dataset_shard("train")

    def step(batch: dict[str, np.ndarray]) -> str:
        clean = random_patches(list(batch["image"]), config.batch_size, config.patch, rng)
        degraded = [trainer.degradation(p, rng) for p in clean]
        record = trainer.step(to_tensor(degraded, device), to_tensor(clean, device))
        return f"step {trainer.step_count}: " + " ".join(f"{k} {record[k]:.5f}" for k in HISTORY_COLUMNS[3:]
                                                         if k in record)

    train_epochs(trainer, steps=config.steps, batch_size=config.batch_size, rank=rank, ledger=ledger,
                 every=loop_config["checkpoint_every"], log_every=loop_config["log_every"], step=step,
                 epoch_batches=lambda epoch: shard.iter_batches(
                     batch_size=config.batch_size, drop_last=True, batch_format="numpy",
                     local_shuffle_buffer_size=4 * config.batch_size, local_shuffle_seed=config.seed + epoch))


def history_csv(history: list[dict[str, float]]) -> bytes:
    rows = [",".join(HISTORY_COLUMNS)] + [",".join(str(r.get(c, "")) for c in HISTORY_COLUMNS) for r in history]
    return ("\n".join(rows) + "\n").encode()


def export_final(state: dict[str, Any], output: str, options: Any, *, extra: dict[str, Any], opset: int = 17
                 ) -> dict[str, Any]:
    """Write final/enhance.pth, final/enhance.onnx and the loss history (CSV + PNG)."""
    from stylize_core.onnx_export import onnx_bytes, onnx_max_abs_diff

    from jobs.train.driver import history_plot_png

    config = EnhanceTrainConfig.from_dict(state["config"])
    net = EnhanceNet(config.arch)
    net.load_state_dict(state["net"], strict=True)
    net.eval()
    uris = {k: join_uri(output, *p) for k, p in {
        "checkpoint": ("final", "enhance.pth"), "onnx": ("final", "enhance.onnx"),
        "history_csv": ("loss_history.csv",), "history_png": ("loss_history.png",)}.items()}
    write_bytes_atomic(uris["checkpoint"], enhance_checkpoint_bytes(
        net, config.task, config.degradation, training_config=asdict(config), steps=state["step"],
        loss_model=state.get("loss_model", ""), **extra), options)
    onnx_data = onnx_bytes(net, opset=opset, example_size=(config.patch // config.scale,) * 2)
    write_bytes_atomic(uris["onnx"], onnx_data, options)
    history = [{"content": r.get("pixel", 0.0), "style": r.get("perceptual", 0.0), "tv": r.get("tv", 0.0), **r}
               for r in state["history"]]  # the shared plot draws content/style/tv/total: pixel/perceptual here
    write_bytes_atomic(uris["history_csv"], history_csv(state["history"]), options)
    write_bytes_atomic(uris["history_png"], history_plot_png(history, f"{config.task} (content = pixel loss, "
                                                             "style = perceptual)"), options)
    return {"artifacts": uris, "onnx_max_abs_diff": onnx_max_abs_diff(net, onnx_data)}


def main(args: TrainSettings) -> int:
    """``jobs.train --task TASK``; returns the exit status (2: cannot start, one line)."""
    from jobs.common.checkpoints import input_unusable
    from jobs.common.listing import list_images
    from jobs.common.outcome import JobError
    from jobs.train.driver import TrainingRun, run_fields, run_training

    options = StorageOptions()
    try:
        config = enhance_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        files = list_images(args.content, options)
    except (OSError, ValueError) as exc:
        error: JobError = input_unusable(args.content, exc)
        print(f"error: {error}", file=sys.stderr)
        return 2
    loop_config = {"train_config": config.to_dict(), "checkpoint_every": args.checkpoint_every,
                   "log_every": args.log_every}

    def finish(state: dict[str, Any], ledger_summary: dict[str, Any], plan: WorkerPlan, seconds: float) -> dict[str, Any]:
        run = run_fields(state, ledger_summary, seconds)
        extra = {"content_images": len(files), "skipped_files": run["skipped_files"], "workers": args.workers}
        exported = export_final(state, args.output, options, extra=extra, opset=args.onnx_opset)
        return {
            "task": config.task, "scale": config.scale, "degradation": config.degradation.to_dict(),
            "loss_model": state.get("loss_model", ""), "workers": args.workers, "cpus_per_worker": plan.cpus_per_worker,
            "device": plan.device, "arch": config.arch.to_dict(), "content_images": len(files), **run,
            "training_config": config.to_dict(), **exported,
        }

    run = TrainingRun(f"{config.task} ({config.arch.describe()}, {config.degradation.describe()})",
                      enhance_worker_loop, loop_config, config.seed)
    return run_training(args, files, options, run, finish)

