"""Training enhancement networks: clean patches, degraded on the fly, restored, compared.

One step draws ``batch_size`` random patches of ``patch`` x ``patch`` clean pixels (random flips and
90-degree turns), degrades each with the task's :class:`~stylize_core.degrade.Degradation` (a fresh
draw of its ranges per patch), runs the network on the degraded batch and minimises

    pixel loss (L1, or Charbonnier sqrt(d^2 + eps^2)) on the 0..1 scale
    + perceptual_weight * MSE of loss-network content features (VGG relu2_2 or texture; optional)
    + tv_weight * total variation of the output (optional).

:class:`EnhanceTrainer` is what both the CPU demo trainer (:mod:`stylize_core.enhance_demo`) and the
Ray Train workers (``jobs.train --task``) step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .degrade import Degradation, task_degradation
from .enhance_checkpoint import enhance_checkpoint_bytes
from .enhance_net import TASK_SCALES, EnhanceArch, EnhanceNet

LOSSES = ("l1", "charbonnier")


@dataclass
class EnhanceTrainConfig:
    task: str = "sr2"
    channels: int = 32
    blocks: int = 6
    unshuffle: int = 1  # restoration: trunk on 2x2 pixel-unshuffled input (EnhanceArch.unshuffle)
    patch: int = 96  # clean (high-resolution) patch side; a multiple of the task's scale
    batch_size: int = 8
    steps: int = 1000
    lr: float = 1e-3
    pixel_loss: str = "charbonnier"
    charbonnier_eps: float = 1e-3
    perceptual_weight: float = 0.0
    tv_weight: float = 0.0
    vgg: str = "vgg16"
    vgg_weights: str = "imagenet"
    perceptual_layer: str = ""  # "": the loss network's content layers (VGG relu2_2; texture o0y3, o1y3)
    compound: bool = False  # the real-world chain: blur, noise and JPEG on top of the task's degradation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASK_SCALES:
            raise ValueError(f"unknown enhancement task {self.task!r}; choose one of {', '.join(TASK_SCALES)}")
        if self.pixel_loss not in LOSSES:
            raise ValueError(f"pixel_loss must be one of {LOSSES}, got {self.pixel_loss!r}")
        self.arch  # noqa: B018  (validates channels, blocks and unshuffle for the task)
        if self.patch % self.scale or self.patch < 4 * self.scale:
            raise ValueError(f"patch {self.patch} must be a multiple of the scale {self.scale} and >= {4 * self.scale}")

    @property
    def scale(self) -> int:
        return TASK_SCALES[self.task]

    @property
    def arch(self) -> EnhanceArch:
        return EnhanceArch(scale=self.scale, channels=self.channels, blocks=self.blocks, unshuffle=self.unshuffle)

    @property
    def degradation(self) -> Degradation:
        return task_degradation(self.task, self.compound)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnhanceTrainConfig:
        return cls(**{k: v for k, v in data.items() if k in {f.name for f in fields(cls)}})


def random_patches(images: Sequence[np.ndarray], n: int, side: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` random (side, side, 3) uint8 crops of ``images`` with random flips and quarter turns
    (images smaller than ``side`` are edge-padded first)."""
    out = []
    for _ in range(n):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        if h < side or w < side:
            img = np.pad(img, ((0, max(0, side - h)), (0, max(0, side - w)), (0, 0)), mode="edge")
            h, w = img.shape[:2]
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        p = img[y : y + side, x : x + side]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        p = np.rot90(p, int(rng.integers(4)))
        out.append(np.ascontiguousarray(p))
    return out


def to_tensor(images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """[(H, W, 3) uint8] of one size -> (B, 3, H, W) float32 0..255."""
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float()


def pixel_loss(y: torch.Tensor, target: torch.Tensor, kind: str, eps: float = 1e-3) -> torch.Tensor:
    d = (y - target) / 255.0
    if kind == "l1":
        return d.abs().mean()
    return torch.sqrt(d * d + eps * eps).mean()


def tv_loss(y: torch.Tensor) -> torch.Tensor:
    y = y / 255.0
    return (y[..., 1:, :] - y[..., :-1, :]).abs().mean() + (y[..., :, 1:] - y[..., :, :-1]).abs().mean()


class EnhanceTrainer:
    """An :class:`EnhanceNet` and its Adam optimiser; :meth:`step` is one training step."""

    def __init__(self, config: EnhanceTrainConfig, device: torch.device | str = "cpu", opener: Any = None,
                 net: torch.nn.Module | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.raw_net = EnhanceNet(config.arch).to(self.device)
        self.model = net if net is not None else self.raw_net  # e.g. a DDP wrapper on Ray Train
        self.optimizer = torch.optim.Adam(self.raw_net.parameters(), lr=config.lr)
        self.degradation = config.degradation
        self.step_count = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []  # one record per step: step, epoch, images and the losses
        self.loss_net = None
        if config.perceptual_weight > 0:
            from .loss_network import build_loss_network, default_layers

            layers = [config.perceptual_layer] if config.perceptual_layer else list(default_layers(config.vgg)[0])
            self.loss_net = build_loss_network(config.vgg, config.vgg_weights, layers=layers,
                                               opener=opener).to(self.device)

    def wrap(self, net: torch.nn.Module) -> None:
        """Step ``net`` (a data-parallel wrapper of :attr:`raw_net`) instead of the bare network."""
        self.model = net

    def batch(self, images: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(degraded, clean) tensors for one step."""
        clean = random_patches(images, self.config.batch_size, self.config.patch, rng)
        degraded = [self.degradation(p, rng) for p in clean]
        return to_tensor(degraded, self.device), to_tensor(clean, self.device)

    def losses(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        y = self.model(degraded)
        parts = {"pixel": pixel_loss(y, clean, c.pixel_loss, c.charbonnier_eps)}
        if self.loss_net is not None:
            fy, fc = self.loss_net(y), self.loss_net(clean)
            parts["perceptual"] = c.perceptual_weight * sum(F.mse_loss(fy[k], fc[k]) for k in fy)
        if c.tv_weight > 0:
            parts["tv"] = c.tv_weight * tv_loss(y)
        parts["total"] = sum(parts.values())  # type: ignore[assignment]
        return parts

    def step(self, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.losses(degraded, clean)
        parts["total"].backward()
        self.optimizer.step()
        self.step_count += 1
        record = {"step": self.step_count, "epoch": self.epoch, "images": int(clean.shape[0]),
                  **{k: float(v.detach()) for k, v in parts.items()}}
        self.history.append(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.raw_net.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step_count,
                "epoch": self.epoch, "history": list(self.history), "config": self.config.to_dict(),
                "loss_model": self.loss_model}

    @property
    def loss_model(self) -> str:
        return getattr(self.loss_net, "loss_model", "") if self.loss_net is not None else ""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw_net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        self.epoch = int(state.get("epoch", 0))
        self.history = list(state.get("history", []))

    def checkpoint_bytes(self, *, half: bool = False, **extra: Any) -> bytes:
        net = self.raw_net.eval()
        return enhance_checkpoint_bytes(net, self.config.task, self.degradation, half=half,
                                        training_config=self.config.to_dict(), steps=self.step_count, **extra)
