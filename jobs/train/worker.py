"""The Ray Train side of ``jobs.train``: the per-worker training loop, the Ray Data UDF that reads,
decodes and crops content images, and the small actor that gathers what the workers report
(undecodable files, the step a run started from). The driver (``jobs/train.py``) plans, starts and
exports; everything here runs in Ray's worker processes."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from stylize_core.host import retain_freed_memory
from stylize_core.image_io import ImageDecodeError, decode_image
from stylize_core.training import StyleTrainer, TrainConfig, prepare_content, progress_line

from jobs.common.storage import read_bytes

STATE_FILE = "train_state.pt"


# --- Ray Data: read + decode + crop, bad files reported to a ledger actor ----------------------------


def read_content_batch(batch: dict[str, np.ndarray], *, size: int, options: Any, ledger: Any) -> dict[str, np.ndarray]:
    """Ray Data UDF: {"uri": (n,)} -> {"image": (m, size, size, 3) uint8}, m <= n (bad files dropped)."""
    import ray

    images, bad = [], []
    for uri in batch["uri"]:
        uri = str(uri)
        try:
            images.append(prepare_content(decode_image(read_bytes(uri, options)), size))
        except (ImageDecodeError, OSError) as exc:  # unreadable or undecodable: skip, but count it
            bad.append({"uri": uri, "error_type": getattr(exc, "error_type", "read"), "error": str(exc)[:300]})
    if bad:
        ray.get(ledger.add.remote(bad))
    return {"image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)}  # (m, S, S, 3)


# --- the worker loop --------------------------------------------------------------------------------


def _report(trainer: Any, rank: int, ledger: Any) -> None:
    """Every rank must call ray.train.report (a barrier); only rank 0 writes the checkpoint."""
    import ray
    import ray.train

    metrics = dict(trainer.history[-1]) if trainer.history else {"step": trainer.step_count}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = trainer.state_dict()
    state["skipped"] = ray.get(ledger.summary.remote())["skipped"]
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, os.path.join(tmp, STATE_FILE))
        checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{trainer.step_count:08d}")


def loss_opener(weights: str, options: Any) -> Callable[[str], bytes] | None:
    """How a worker reads ``--vgg-weights``: through storage for a path or URI; None for torchvision's
    cache and random weights."""
    if weights == "imagenet" or weights.startswith("random:"):
        return None
    return lambda uri: read_bytes(uri, options)


def restore_checkpoint(trainer: Any, rank: int, ledger: Any) -> dict[str, Any]:
    """Load the run's latest Ray Train checkpoint into ``trainer`` (a trainer with ``step_count``,
    ``epoch`` and ``load_state_dict``), if there is one, and return its state ({} if none); rank 0
    tells ``ledger`` the step this invocation starts from and the undecodable files earlier runs
    found, so that the next checkpoint and the summary still list them."""
    import ray
    import ray.train

    state: dict[str, Any] = {}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
        trainer.load_state_dict(state)
        if rank == 0:
            print(f"resumed from step {trainer.step_count} (epoch {trainer.epoch})", flush=True)
    if rank == 0:
        ray.get(ledger.started.remote(trainer.step_count))
        ray.get(ledger.add.remote(state.get("skipped", [])))
    return state


def train_epochs(trainer: Any, *, steps: int, batch_size: int, rank: int, ledger: Any, every: int, log_every: int,
                 epoch_batches: Callable[[int], Iterable[Any]], step: Callable[[Any], str],
                 epochs: int | None = None) -> None:
    """Epochs of ``epoch_batches(epoch)`` until ``trainer.step_count`` reaches ``steps`` (or its epoch
    ``epochs``); ``step(batch)`` trains on one batch and returns its log line (rank 0 prints it every
    ``log_every`` steps and at step 1). A checkpoint every ``every`` steps (0: none) and at the end."""
    last_reported = trainer.step_count
    while trainer.step_count < steps and (epochs is None or trainer.epoch < epochs):
        batches = 0
        for batch in epoch_batches(trainer.epoch):
            batches += 1
            line = step(batch)
            done = trainer.step_count
            if rank == 0 and (done % log_every == 0 or done == 1):
                print(line, flush=True)
            if every and done % every == 0:
                _report(trainer, rank, ledger)
                last_reported = done
            if done >= steps:
                break
        else:
            if batches == 0:  # equal shards: every rank sees this together
                raise RuntimeError(f"no full batch of {batch_size} decodable images per worker in an epoch")
            trainer.epoch += 1
    if trainer.step_count != last_reported:
        _report(trainer, rank, ledger)


def _mean_over_workers(values: torch.Tensor, world: int) -> torch.Tensor:
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / world


def train_worker_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train per-worker loop: restore, wrap in DDP, stream shards, step, checkpoint."""
    import ray
    import ray.train
    import ray.train.torch

    retain_freed_memory()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    config = TrainConfig.from_dict(loop_config["train_config"])
    options, ledger = loop_config["storage_options"], loop_config["ledger"]
    opener = loss_opener(config.vgg_weights, options)
    autocast = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "none": None}[loop_config["autocast"]]
    device = ray.train.torch.get_device()
    trainer = StyleTrainer(config, loop_config["style_images"], device=device, opener=opener, autocast_dtype=autocast)
    trainer.style_cycle = (rank, world)  # workers of one step train different styles

    restore_checkpoint(trainer, rank, ledger)
    trainer.model = ray.train.torch.prepare_model(trainer.model)  # DDP when world > 1
    if world > 1:  # log losses averaged over the workers, not rank 0's alone
        trainer.metrics_reducer = functools.partial(_mean_over_workers, world=world)
    shard = ray.train.get_dataset_shard("train")

    def step(batch: dict[str, torch.Tensor]) -> str:
        record = trainer.step(batch["image"].permute(0, 3, 1, 2).float())  # (B, 3, S, S)
        record["images"] *= world  # the history counts images over all workers
        return progress_line(record, config)

    train_epochs(trainer, steps=config.steps, epochs=config.epochs, batch_size=config.batch_size, rank=rank,
                 ledger=ledger, every=config.checkpoint_every, log_every=config.log_every, step=step,
                 epoch_batches=lambda epoch: shard.iter_torch_batches(
                     batch_size=config.batch_size, drop_last=True, dtypes=torch.uint8, device=device,
                     local_shuffle_buffer_size=4 * config.batch_size, local_shuffle_seed=config.seed + epoch))
