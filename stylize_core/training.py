"""Training a feed-forward style network (Johnson et al. 2016), single process.

:class:`StyleTrainer` owns the network, Adam, the frozen VGG loss network and the style Gram
targets (computed once); ``step(batch)`` is one optimisation step. The same object runs inside each
Ray Train worker (``jobs/train.py``), where the model is wrapped for data parallelism.

Several style images train one multi-style network (conditional instance norm, Dumoulin et al.
2017): every image of a batch gets a style, cycling through the styles, so each step sees all of
them when the batch is at least as large as the number of styles.

Run ``python -m stylize_core.training_demo --demo OUT.pth`` to train the small demo network shipped in
``stylize_core/assets/`` (:mod:`stylize_core.training_demo`; how it was made:
``stylize_core/assets/README.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import checkpoint_bytes
from .image_size import resize_max_side, resize_short_side
from .loss_network import build_loss_network, resolve_layers
from .losses import content_loss, image_to_tensor, style_grams, style_loss, tv_loss
from .transformer_net import NetConfig, TransformerNet
from .vgg import Opener

# The style image travels inside every checkpoint; this bounds its size there.
STYLE_IMAGE_MAX_SIDE = 512
LOSS_KEYS = ("content", "style", "tv", "total")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved (``asdict``) inside every checkpoint.

    Training stops at ``steps`` optimiser steps or after ``epochs`` passes over the content images,
    whichever comes first. Weights follow pytorch/examples ``fast_neural_style`` (same Gram
    normalisation, same 0..255 images), so its published settings carry over.
    """

    style_name: str = "style"
    image_size: int = 256
    batch_size: int = 4
    steps: int = 2000
    epochs: int = 1
    lr: float = 1e-3
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    vgg: str = "vgg16"  # the loss network: vgg16, vgg19 or texture[:SEED] (stylize_core.loss_network)
    vgg_weights: str = "imagenet"
    # () = the loss network's default (VGG: relu2_2 / relu1_2..relu4_3); the trainer records the
    # resolved lists, so a checkpoint says which layers it was trained with
    content_layers: tuple[str, ...] = ()
    style_layers: tuple[str, ...] = ()
    style_size: int | None = None  # long side of the style image for the targets; None: as given
    style_scales: tuple[float, ...] = (1.0,)
    seed: int = 42
    log_every: int = 50
    checkpoint_every: int = 500
    # architecture (stylize_core.transformer_net.NetConfig); the number of styles is the number of
    # style images given to the trainer
    width: float = 1.0
    blocks: int = 5
    depthwise: bool = False
    style_names: tuple[str, ...] = ()  # multi-style: one name per style image, in order

    def arch(self, num_styles: int = 1) -> NetConfig:
        """The network this config trains for ``num_styles`` style images."""
        return NetConfig(width=self.width, blocks=self.blocks, depthwise=self.depthwise, num_styles=num_styles)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from ``asdict`` output (lists become tuples; unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


def prepare_content(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: resize the short side to ``size``, centre crop."""
    resized = resize_short_side(np.ascontiguousarray(image[..., :3]), size)  # (h, w, 3), min(h, w) == size
    h, w = resized.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


def prepare_style(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (never upscale) so the long side is at most ``max_side``; None keeps the size.
    Always a new, writable array (inputs may be read-only views, e.g. from Ray's object store)."""
    return np.array(resize_max_side(np.ascontiguousarray(image[..., :3]), max_side))


def _resolve_autocast(device: torch.device, autocast_dtype: torch.dtype | str | None) -> torch.dtype | None:
    if autocast_dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if autocast_dtype in (None, "none", torch.float32):
        return None
    if isinstance(autocast_dtype, str):
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16}[autocast_dtype]
    return autocast_dtype


class StyleTrainer:
    """Model + Adam + loss network (``config.vgg``) + cached style targets, with resumable state.

    ``style_image`` is one (H, W, 3) uint8 image, or a sequence of them for a multi-style network
    (``config.style_names`` names them). ``autocast_dtype``: ``"auto"`` (bf16 on CUDA, off on CPU), ``None`` (off) or a dtype. The
    losses and Gram matrices are always accumulated in float32 (see :func:`gram_matrix`).
    ``self.model`` may be replaced by a wrapper (DDP) after construction; :attr:`net` is always the
    bare :class:`TransformerNet`, and the optimiser keeps working since wrappers share parameters.
    """

    def __init__(
        self,
        config: TrainConfig,
        style_image: np.ndarray | Sequence[np.ndarray],
        *,
        device: torch.device | str | None = None,
        model: TransformerNet | None = None,
        vgg: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
        opener: Opener | None = None,
        autocast_dtype: torch.dtype | Literal["auto"] | None = "auto",
        channels_last: bool = False,
    ) -> None:
        name = getattr(vgg, "arch", config.vgg)  # a custom extractor without `arch`: config.vgg's names
        content_layers, style_layers = resolve_layers(name, config.content_layers, config.style_layers)
        self.config = config = replace(config, content_layers=content_layers, style_layers=style_layers)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        images = [style_image] if isinstance(style_image, np.ndarray) else list(style_image)
        if not images:
            raise ValueError("training needs at least one style image")
        self.arch = model.arch if model is not None else config.arch(len(images))
        if self.arch.num_styles != len(images):
            raise ValueError(f"{len(images)} style images for a network of {self.arch.num_styles} styles")
        if self.arch.multi_style and config.style_names and len(config.style_names) != len(images):
            raise ValueError(f"{len(config.style_names)} style names for {len(images)} style images")
        if model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)  # same init on every worker and every rerun
                model = TransformerNet(self.arch)
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model: torch.nn.Module = model.to(self.device, memory_format=memory_format)
        if vgg is None:
            layers = tuple(dict.fromkeys(config.content_layers + config.style_layers))
            vgg = build_loss_network(config.vgg, config.vgg_weights, layers, opener=opener).to(self.device)
        self.vgg = vgg
        self.loss_model: str = getattr(vgg, "loss_model", "custom")
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.autocast_dtype = _resolve_autocast(self.device, autocast_dtype)
        self.style_images = [prepare_style(image, config.style_size) for image in images]
        self.style_image = self.style_images[0]
        targets = [
            style_grams(self.vgg, image_to_tensor(image, self.device), config.style_layers, config.style_scales)
            for image in self.style_images
        ]  # per style {layer: (1, C, C)}, computed once
        self.style_targets = {layer: torch.cat([t[layer] for t in targets]) for layer in targets[0]}  # (S, C, C)
        # Which style each image of a batch gets: (step * B * world + rank * B + i) % S. A
        # data-parallel caller sets (rank, world) so the workers of one step train different styles.
        self.style_cycle: tuple[int, int] = (0, 1)
        self.step_count = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        # Set by a data-parallel caller to average the logged losses over workers.
        self.metrics_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def net(self) -> TransformerNet:
        """The bare style network (unwrapped from DDP or similar)."""
        return getattr(self.model, "module", self.model)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def losses(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted content/style/TV/total losses (scalars, with grad) for a (B, 3, S, S) 0..255 batch."""
        cfg = self.config
        x = batch.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = self.style_targets  # {layer: (1, C, C)} for one style
        args: tuple[torch.Tensor, ...] = (x,)
        if self.arch.multi_style:
            b, (rank, world) = x.shape[0], self.style_cycle
            first = self.step_count * b * world + rank * b
            idx = torch.arange(first, first + b, device=self.device) % self.arch.num_styles  # (B,)
            args += (F.one_hot(idx, self.arch.num_styles).float(),)  # (B, S): each image's style
            targets = {layer: t[idx] for layer, t in targets.items()}  # {layer: (B, C, C)}
        with self._autocast():
            y = self.model(*args)  # (B, 3, S, S), 0..255, unclamped
            feats_y = self.vgg(y)
            with torch.no_grad():
                feats_x = self.vgg(x)
        content = sum(content_loss(feats_y[layer], feats_x[layer]) for layer in cfg.content_layers)
        style = style_loss(feats_y, targets)
        tv = tv_loss(y) if cfg.tv_weight else y.new_zeros((), dtype=torch.float32)
        content, style, tv = cfg.content_weight * content, cfg.style_weight * style, cfg.tv_weight * tv
        return {"content": content, "style": style, "tv": tv, "total": content + style + tv}

    def step(self, batch: torch.Tensor) -> dict[str, float]:
        """One Adam step on a (B, 3, S, S) float batch in 0..255; returns the logged losses."""
        self.model.train()
        losses = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        self.step_count += 1
        values = torch.stack([losses[k].detach().float() for k in LOSS_KEYS])  # (4,)
        if self.metrics_reducer is not None:
            values = self.metrics_reducer(values)
        record = {"step": self.step_count, "epoch": self.epoch, "images": int(batch.shape[0])}
        record.update({k: float(v) for k, v in zip(LOSS_KEYS, values.cpu().tolist())})
        self.history.append(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimiser, counters, loss history, config."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "step": self.step_count,
            "epoch": self.epoch,
            "history": [dict(r) for r in self.history],
            "config": asdict(self.config),
            "loss_model": self.loss_model,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the config may differ, e.g. more ``steps``)."""
        self.net.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.history = [dict(r) for r in state.get("history", [])]

    def checkpoint_bytes(self, *, half: bool = False, **extra: Any) -> bytes:
        """The trained network in this project's checkpoint format, with the style image(s) and the
        full training config recorded."""
        return trained_checkpoint_bytes(
            self.net, self.style_images, asdict(self.config), self.loss_model, self.step_count, self.epoch,
            half=half, **extra,
        )

    def save(self, path: str, *, half: bool = False, **extra: Any) -> None:
        """Write :meth:`checkpoint_bytes` to a local ``path``."""
        with open(path, "wb") as f:
            f.write(self.checkpoint_bytes(half=half, **extra))


def style_names_for(config: dict[str, Any], num_styles: int) -> list[str]:
    """Names recorded for a multi-style network: ``style_names``, else ``{style_name}{index}``."""
    names = list(config.get("style_names") or [])
    return names if len(names) == num_styles else [f"{config.get('style_name') or 'style'}{i}" for i in range(num_styles)]


def trained_checkpoint_bytes(
    net: TransformerNet,
    style_images: Sequence[np.ndarray],
    config: dict[str, Any],
    loss_model: str,
    steps: int,
    epochs: int,
    *,
    half: bool = False,
    **extra: Any,
) -> bytes:
    """A trained network in this project's format: style image(s) (long side at most
    :data:`STYLE_IMAGE_MAX_SIDE`), training config (``asdict(TrainConfig)``), loss network, progress."""
    images = [prepare_style(image, STYLE_IMAGE_MAX_SIDE) for image in style_images]
    meta: dict[str, Any] = {
        "style": config["style_name"], "training_config": config, "loss_model": loss_model, "steps": steps,
        "epochs": epochs, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    }
    if net.arch.multi_style:
        meta["styles"] = style_names_for(config, net.arch.num_styles)
        return checkpoint_bytes(net, style_images=images, half=half, **meta)
    return checkpoint_bytes(net, style_image=images[0], half=half, **meta)


def batches_per_epoch(num_images: int, batch_size: int) -> int:
    """Full batches in one pass (the last partial batch is dropped, as in data-parallel training)."""
    return num_images // batch_size


def train_local(
    content_images: Sequence[np.ndarray],
    style_image: np.ndarray | Sequence[np.ndarray],
    config: TrainConfig,
    *,
    trainer: StyleTrainer | None = None,
    on_checkpoint: Callable[[StyleTrainer], None] | None = None,
    log: Callable[[str], None] | None = print,
    **trainer_kwargs: Any,
) -> StyleTrainer:
    """Train on in-memory images until ``config.steps`` or ``config.epochs``, whichever is first.

    Images are prepared once (:func:`prepare_content`) and shuffled each epoch with a generator
    seeded by ``(seed, epoch)``, so a run is reproducible. Pass a ``trainer`` restored with
    :meth:`StyleTrainer.load_state_dict` to continue a run; ``on_checkpoint`` is called every
    ``checkpoint_every`` steps and at the end.
    """
    data = np.stack([prepare_content(img, config.image_size) for img in content_images])  # (N, S, S, 3)
    per_epoch = batches_per_epoch(len(data), config.batch_size)
    if per_epoch == 0:
        raise ValueError(f"{len(data)} content images are fewer than one batch of {config.batch_size}")
    trainer = trainer or StyleTrainer(config, style_image, **trainer_kwargs)
    batches = torch.from_numpy(data).permute(0, 3, 1, 2)  # (N, 3, S, S) uint8
    start_step = trainer.step_count
    # On resume mid-epoch, skip the batches this epoch already used (earlier epochs were full).
    first = min(max(trainer.step_count - trainer.epoch * per_epoch, 0), per_epoch)
    while trainer.step_count < config.steps and trainer.epoch < config.epochs:
        order = np.random.default_rng([config.seed, trainer.epoch]).permutation(len(data))
        for b in range(first, per_epoch):
            idx = torch.from_numpy(order[b * config.batch_size : (b + 1) * config.batch_size])
            record = trainer.step(batches[idx].float())  # (B, 3, S, S)
            if log and (trainer.step_count % config.log_every == 0 or trainer.step_count == 1):
                log(progress_line(record, config))
            if on_checkpoint and config.checkpoint_every and trainer.step_count % config.checkpoint_every == 0:
                on_checkpoint(trainer)
            if trainer.step_count >= config.steps:
                break
        else:
            trainer.epoch += 1
        first = 0
    every = config.checkpoint_every
    if on_checkpoint and trainer.step_count != start_step and (not every or trainer.step_count % every):
        on_checkpoint(trainer)
    return trainer


def progress_line(record: dict[str, float], config: TrainConfig) -> str:
    """One human-readable progress line for a history record."""
    width = len(str(config.steps))
    return (
        f"step {int(record['step']):>{width}}/{config.steps} epoch {int(record['epoch'])} "
        f"content {record['content']:.4g} style {record['style']:.4g} "
        f"tv {record['tv']:.4g} total {record['total']:.4g}"
    )
