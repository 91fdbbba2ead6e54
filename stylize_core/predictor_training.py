"""Training a style predictor and its transformer jointly (Ghiasi et al. 2017's recipe, scaled down):
each step takes a few style images and a batch of content crops, predicts each style's norm
parameters, runs the transformer with them and minimises Johnson et al.'s perceptual losses through
the project's loss network (content features, Gram style loss, TV).

Gram matrices: :func:`stylize_core.losses.gram_matrix` (F·Fᵀ / (C·H·W)). Images are 0..255.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .loss_network import build_loss_network, resolve_layers
from .losses import content_loss, gram_matrix, style_loss, tv_loss
from .predictor import PredictorConfig, StylePredictorModel, style_tensor
from .transformer_net import NetConfig

LOSS_KEYS = ("content", "style", "tv", "total")


@dataclass
class PredictorTrainConfig:
    """Everything that defines a predictor training run; recorded (``asdict``) in its checkpoint."""

    steps: int = 600
    image_size: int = 96  # content crop side (px)
    batch_size: int = 4  # content crops per step, shared out among the step's styles
    styles_per_step: int = 2
    lr: float = 2e-3
    content_weight: float = 1.0
    style_weight: float = 6e4
    tv_weight: float = 0.0
    vgg: str = "texture:1"  # the loss network (stylize_core.loss_network)
    vgg_weights: str = "imagenet"
    content_layers: tuple[str, ...] = ()  # () = the loss network's defaults (recorded resolved)
    style_layers: tuple[str, ...] = ()
    seed: int = 0
    # architecture (stylize_core.predictor.PredictorConfig)
    width: float = 0.25
    blocks: int = 5
    depthwise: bool = False
    embedding: int = 64
    style_size: int = 192

    def predictor_config(self) -> PredictorConfig:
        return PredictorConfig(NetConfig(self.width, self.blocks, self.depthwise, 1), self.embedding,
                               style_size=self.style_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictorTrainConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown predictor training config keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def random_crops(images: Sequence[np.ndarray], n: int, side: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``side`` crops, each after a random downscale (short side side..2*side), (n, 3, side, side) 0..255."""
    out = []
    for i in rng.integers(0, len(images), n):
        img = torch.from_numpy(np.ascontiguousarray(images[int(i)][..., :3])).permute(2, 0, 1)[None].float()
        short = min(img.shape[-2:])
        target = rng.uniform(side, max(side, min(short, 2 * side)))
        img = F.interpolate(img, scale_factor=max(target / short, side / short), mode="bilinear",
                            antialias=target < short, align_corners=False).clamp(0, 255)
        y, x = (int(rng.integers(0, d - side + 1)) for d in img.shape[-2:])
        out.append(img[..., y:y + side, x:x + side])
    return torch.cat(out)


class PredictorTrainer:
    """One optimiser over the predictor and the transformer; :meth:`step` runs one training step.

    ``content``: images to cut random crops from when :meth:`step` is given no batch (the demo); the
    Ray Train job hands each step its batch of crops instead. ``content_embedding`` follows the content
    crops' embeddings as an exponential moving average (decay 0.99); :meth:`set_content_embedding`
    replaces it by the exact mean over ``content`` at the end when the images are at hand.
    """

    EMA = 0.99

    def __init__(self, config: PredictorTrainConfig, content: Sequence[np.ndarray] | None,
                 styles: Mapping[str, np.ndarray], *, model: StylePredictorModel | None = None, opener=None,
                 device: torch.device | str = "cpu") -> None:
        if not styles:
            raise ValueError("training a style predictor needs style images")
        self.config = config
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.device = torch.device(device)
        self.model = model if model is not None else StylePredictorModel(config.predictor_config())
        self.model.to(self.device)
        self.raw_model = self.model  # self.model may become a DDP wrapper (jobs.train)
        self.content, self.styles = list(content or []), list(styles.values())
        self.style_names = list(styles)
        self.content_layers, self.style_layers = resolve_layers(config.vgg, config.content_layers, config.style_layers)
        self.loss_net = build_loss_network(config.vgg, config.vgg_weights,
                                           tuple(dict.fromkeys(self.content_layers + self.style_layers)), opener=opener)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.steps_done = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        # each style image once at the predictor's size: its Gram targets and the predictor's input
        with torch.no_grad():
            self._style_inputs = [style_tensor(s, config.style_size).to(self.device) for s in self.styles]
            self._grams = []
            for x in self._style_inputs:
                feats = self.loss_net(x)
                self._grams.append({k: gram_matrix(feats[k]) for k in self.style_layers})

    def step(self, crops: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on ``crops`` (B, 3, S, S) 0..255, or on random crops of ``content``."""
        c = self.config
        self.model.train()
        if crops is None:
            if not self.content:
                raise ValueError("no content batch given and no content images to crop")
            crops = random_crops(self.content, c.batch_size, c.image_size, self.rng)  # (B, 3, S, S)
        crops = crops.to(self.device).float()
        k = max(1, min(c.styles_per_step, len(crops)))
        picks = self.rng.choice(len(self.styles), size=k, replace=len(self.styles) < k)
        totals = dict.fromkeys(LOSS_KEYS, 0.0)
        self.opt.zero_grad(set_to_none=True)
        for part, s in zip(crops.chunk(k), picks, strict=False):
            y = self.model(part, self._style_inputs[int(s)])  # (b, 3, S, S)
            feats = self.loss_net(y)
            with torch.no_grad():
                target = self.loss_net(part)
            lc = sum(content_loss(feats[n], target[n]) for n in self.content_layers)
            ls = style_loss(feats, self._grams[int(s)])
            lt = tv_loss(y) if c.tv_weight else y.new_zeros(())
            loss = (c.content_weight * lc + c.style_weight * ls + c.tv_weight * lt) / k
            loss.backward()
            for key, v in zip(LOSS_KEYS, (lc, ls, lt, loss * k), strict=True):
                totals[key] += float(v.detach()) / k
        self.opt.step()
        self.steps_done += 1
        with torch.no_grad():  # alpha's origin: where content images' own embeddings lie
            e = self.raw_model.predictor.embed(crops).mean(0)
            ce = self.raw_model.content_embedding
            ce.copy_(e if self.steps_done == 1 else self.EMA * ce + (1 - self.EMA) * e)
        record = {"step": self.steps_done, "epoch": self.epoch, "images": len(crops), **totals}
        self.history.append(record)
        return totals

    @property
    def step_count(self) -> int:  # the name the Ray Train loop's checkpoint reporting reads
        return self.steps_done

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (a torch.load(weights_only=True)-safe dict)."""
        return {"model": self.raw_model.state_dict(), "optimizer": self.opt.state_dict(), "step": self.steps_done,
                "epoch": self.epoch, "history": self.history, "config": asdict(self.config),
                "loss_model": self.loss_net.loss_model}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.steps_done, self.epoch = int(state["step"]), int(state["epoch"])
        self.history = [dict(r) for r in state["history"]]
        self.rng = np.random.default_rng([self.config.seed, self.steps_done])  # a resumed run draws on

    @torch.no_grad()
    def set_content_embedding(self) -> None:
        """``content_embedding``: the mean embedding of the training content images (alpha's origin)."""
        model = self.raw_model.eval()
        size = model.config.style_size
        e = torch.stack([model.predictor.embed(style_tensor(img, size).to(self.device))[0] for img in self.content])
        model.content_embedding.copy_(e.mean(0))

    def recipe(self, **extra: Any) -> dict[str, Any]:
        """The config with the resolved layers and the steps done (what the checkpoint records)."""
        out = asdict(self.config)
        out.update(content_layers=list(self.content_layers), style_layers=list(self.style_layers),
                   steps_done=self.steps_done, loss_model=self.loss_net.loss_model, style_names=self.style_names)
        out.update(extra)
        return out


def train(config: PredictorTrainConfig, content: Sequence[np.ndarray], styles: Mapping[str, np.ndarray], *,
          log_every: int = 50, time_limit: float | None = None, cpu_limit: float | None = None,
          model: StylePredictorModel | None = None) -> tuple[StylePredictorModel, dict[str, Any]]:
    """Train for ``config.steps`` steps, or until ``time_limit`` wall seconds or ``cpu_limit`` seconds of
    this process's CPU time (all threads; on a shared machine the fair budget); the model and its recipe."""
    trainer = PredictorTrainer(config, content, styles, model=model)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(config.steps):
        losses = trainer.step()
        n = trainer.steps_done
        if log_every and (n == 1 or n % log_every == 0):
            print(f"step {n}/{config.steps} " + " ".join(f"{k} {v:.4g}" for k, v in losses.items())
                  + f" {time.perf_counter() - start:.0f} s, cpu {time.process_time() - cpu_start:.0f} s", flush=True)
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        if cpu_limit is not None and time.process_time() - cpu_start > cpu_limit:
            break
    trainer.set_content_embedding()
    return trainer.raw_model.eval(), trainer.recipe(train_seconds=round(time.perf_counter() - start, 1),
                                                cpu_seconds=round(time.process_time() - cpu_start, 1))
