"""``jobs.train --task predict --style-images PREFIX``: a style predictor and its transformer on Ray Train.

The same run shape as style training (:mod:`jobs.train.driver`): content images stream through Ray
Data as ``--image-size`` crops, split over data-parallel workers (DDP), resumable Ray Train
checkpoints under ``{output}/{name}``. The style images under ``--style-images`` (every image there)
are read once by the driver and handed to each worker, whose
:class:`~stylize_core.predictor_training.PredictorTrainer` predicts the norm parameters of
``--styles-per-step`` of them per step. ``{output}`` receives ``final/predictor.pth``
(``stylize.style_predictor``: what ``--method predict --predictor`` loads), ``loss_history.csv``/``.png``
and ``train_summary.json``.
"""

from __future__ import annotations

import json
import posixpath
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stylize_core.predictor_checkpoint import predictor_checkpoint_bytes
from stylize_core.predictor_training import PredictorTrainConfig, PredictorTrainer

from jobs.common.storage import StorageOptions, join_uri, read_bytes, write_bytes_atomic
from jobs.train.settings import TrainSettings

if TYPE_CHECKING:
    from jobs.train.driver import WorkerPlan


def predictor_config(args: TrainSettings) -> PredictorTrainConfig:
    """The :class:`PredictorTrainConfig` recorded in the checkpoint."""
    return PredictorTrainConfig(
        steps=args.steps, image_size=args.image_size, batch_size=args.batch_size, styles_per_step=args.styles_per_step,
        lr=args.lr, content_weight=args.content_weight, style_weight=args.style_weight, tv_weight=args.tv_weight,
        vgg=args.vgg, vgg_weights=args.vgg_weights, content_layers=tuple(args.content_layers),
        style_layers=tuple(args.style_layers), seed=args.seed, width=args.width, blocks=args.blocks,
        depthwise=args.depthwise, embedding=args.embedding,
        style_size=args.style_size or PredictorTrainConfig.style_size,
    )


def predict_worker_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train per-worker loop: restore, wrap in DDP, stream crops, step, checkpoint."""
    import ray
    import ray.train
    import ray.train.torch

    from jobs.train.worker import loss_opener, restore_checkpoint, train_epochs

    rank = ray.train.get_context().get_world_rank()
    config = PredictorTrainConfig.from_dict(loop_config["train_config"])
    ledger = loop_config["ledger"]
    device = ray.train.torch.get_device()
    styles = dict(zip(loop_config["style_names"], loop_config["style_images"], strict=True))
    trainer = PredictorTrainer(config, None, styles, device=device,
                               opener=loss_opener(config.vgg_weights, loop_config["storage_options"]))
    restore_checkpoint(trainer, rank, ledger)
    trainer.model = ray.train.torch.prepare_model(trainer.raw_model)  # DDP when world > 1
    trainer.rng = np.random.default_rng([config.seed, rank, trainer.steps_done])  # styles differ per worker
    shard = ray.train.get_dataset_shard("train")

    def step(batch: dict[str, torch.Tensor]) -> str:
        losses = trainer.step(batch["image"].permute(0, 3, 1, 2).float())  # (B, 3, S, S)
        return f"step {trainer.step_count}: " + " ".join(f"{k} {v:.5g}" for k, v in losses.items())

    train_epochs(trainer, steps=config.steps, batch_size=config.batch_size, rank=rank, ledger=ledger,
                 every=loop_config["checkpoint_every"], log_every=loop_config["log_every"], step=step,
                 epoch_batches=lambda epoch: shard.iter_torch_batches(
                     batch_size=config.batch_size, drop_last=True, dtypes=torch.uint8, device=device,
                     local_shuffle_buffer_size=4 * config.batch_size, local_shuffle_seed=config.seed + epoch))


def export_final(state: dict[str, Any], style_names: list[str], output: str, options: Any, *,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """Write final/predictor.pth and the loss history (CSV + PNG)."""
    from stylize_core.predictor import StylePredictorModel

    from jobs.train.driver import history_csv, history_plot_png

    config = PredictorTrainConfig.from_dict(state["config"])
    model = StylePredictorModel(config.predictor_config())
    model.load_state_dict(state["model"], strict=True)
    uris = {k: join_uri(output, *p) for k, p in {"checkpoint": ("final", "predictor.pth"),
                                                  "history_csv": ("loss_history.csv",),
                                                  "history_png": ("loss_history.png",)}.items()}
    recipe = {**state["config"], "steps_done": state["step"], "loss_model": state["loss_model"],
              "style_names": style_names, **extra}
    write_bytes_atomic(uris["checkpoint"], predictor_checkpoint_bytes(model.eval(), {"training": json.dumps(recipe)}),
                       options)
    write_bytes_atomic(uris["history_csv"], history_csv(state["history"]), options)
    write_bytes_atomic(uris["history_png"], history_plot_png(state["history"], "style predictor"), options)
    return {"artifacts": uris}


def _style_images(args: TrainSettings, options: StorageOptions) -> tuple[list[str], list[np.ndarray]]:
    """Every image under --style-images, decoded (names: their paths below the prefix); JobError (exit 2)."""
    from stylize_core.builder import SetupError, read_style_image

    from jobs.common.checkpoints import input_unusable, stop
    from jobs.common.listing import list_images

    try:
        files = list_images(args.style_images, options)
    except (OSError, ValueError) as exc:
        raise input_unusable(args.style_images, exc) from None
    if not files:
        raise stop(f"--style-images {args.style_images}: no images there")
    names, images = [], []
    for f in files:
        name = posixpath.splitext(f.rel_path)[0] or "style"
        try:
            images.append(read_style_image(name, f.uri, lambda u: read_bytes(u, options))[0])
        except SetupError as exc:
            raise stop(str(exc)) from None
        names.append(name)
    return names, images


def main(args: TrainSettings) -> int:
    """``jobs.train --task predict``; returns the exit status (2: cannot start, one line)."""
    from jobs.common.checkpoints import input_unusable
    from jobs.common.listing import list_images
    from jobs.common.outcome import JobError
    from jobs.train.driver import TrainingRun, run_fields, run_training

    options = StorageOptions()
    try:
        config = predictor_config(args)
        config.predictor_config()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        files = list_images(args.content, options)
        names, images = _style_images(args, options)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {input_unusable(args.content, exc)}", file=sys.stderr)
        return 2
    loop_config = {"train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
                   "style_names": names, "style_images": images, "checkpoint_every": args.checkpoint_every,
                   "log_every": args.log_every}

    def finish(state: dict[str, Any], ledger_summary: dict[str, Any], plan: WorkerPlan, seconds: float) -> dict[str, Any]:
        run = run_fields(state, ledger_summary, seconds)
        extra = {"content_images": len(files), "style_images": len(images), "workers": args.workers}
        exported = export_final(state, names, args.output, options, extra=extra)
        return {
            "task": "predict", "loss_model": state["loss_model"], "workers": args.workers,
            "cpus_per_worker": plan.cpus_per_worker, "device": plan.device,
            "config": config.predictor_config().to_dict(), "content_images": len(files), "style_images": len(images),
            **run, "training_config": state["config"], **exported,
        }

    run = TrainingRun(f"style predictor ({config.predictor_config().net.describe()}, {len(images)} style images)",
                      predict_worker_loop, loop_config, config.seed)
    return run_training(args, files, options, run, finish)
