"""One pyramid level of Gatys optimisation: up to ``steps`` loss evaluations at one image size.

:mod:`stylize_core.gatys` runs the pyramid and hands each level its targets and a :class:`LevelPlan`;
this module owns the evaluation (losses, projected gradient, best image kept) and the two optimisers.
The image is in 0..255 pixel units and clamped at every evaluation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .losses import content_loss, style_loss, tv_loss

logger = logging.getLogger("stylize_core.gatys")

Extractor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
StyleTerm = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]  # features -> the style loss (a scalar)

# L-BFGS runs in calls of this many iterations; its curvature history carries over between calls
# (same optimiser object); between calls we check for a stall.
LBFGS_CHUNK = 20
# Curvature pairs kept: memory is 2 x history x image size (20 x 2 x 12 MB at 1024^2).
LBFGS_HISTORY = 20
# Mean |change| in grey levels of L-BFGS's first (gradient descent) step at each level.
LBFGS_FIRST_STEP = 1.0


class _BudgetSpent(Exception):
    """Stops L-BFGS after exactly ``steps`` evaluations, even in the middle of a line search."""


@dataclass(frozen=True)
class LevelPlan:
    """What one level may spend and how it weighs its losses (from the run's GatysConfig)."""

    steps: int
    optimizer: str  # "lbfgs" or "adam"
    lr: float
    weights: tuple[float, float, float]  # content, style, total variation
    content_layers: Sequence[str]
    style_layers: Sequence[str]
    style_layer_weights: Mapping[str, float] | None
    log_every: int = 0


class _Level:
    """The state one level's evaluations share: the pixels, the step count, the best image so far."""

    def __init__(self, start: torch.Tensor, extract: Extractor, content_targets: Mapping[str, torch.Tensor],
                 style_targets: Mapping[str, torch.Tensor], plan: LevelPlan, level: int, trace: list[dict],
                 callback: Callable[[dict], None] | None, style_term: StyleTerm | None = None) -> None:
        # A fresh contiguous leaf: L-BFGS flattens the gradient with .view(), which needs NCHW-contiguous.
        self.pixels = start.clamp(0, 255).contiguous().requires_grad_(True)  # (1, 3, h, w)
        self.size = [int(self.pixels.shape[-2]), int(self.pixels.shape[-1])]
        self.weights = torch.tensor(plan.weights, device=self.pixels.device)
        self.extract, self.content_targets, self.style_targets = extract, content_targets, style_targets
        self.plan, self.level, self.trace, self.callback = plan, level, trace, callback
        self.style_term = style_term
        self.step = 0
        self.scale: float | None = None  # L-BFGS objective scale, fixed at the level's first evaluation
        self.best_total, self.best = math.inf, self.pixels.detach().clone()
        self.optimizer: torch.optim.Optimizer | None = None

    def _terms(self) -> torch.Tensor:
        """(content, style, tv) losses of the current pixels, with their graph."""
        feats = self.extract(self.pixels)
        c = sum(content_loss(feats[layer], self.content_targets[layer]) for layer in self.plan.content_layers)
        if self.style_term is not None:  # guided Grams (stylize_core.guided_gram): one loss per region
            s = self.style_term(feats)
        else:
            s = style_loss({layer: feats[layer] for layer in self.plan.style_layers}, self.style_targets,
                           self.plan.style_layer_weights)
        return torch.stack([c, s, tv_loss(self.pixels)])  # (3,)

    def _project_gradient(self) -> None:
        grad = self.pixels.grad  # (1, 3, h, w)
        # Projected gradient: a pixel clamped at 0 or 255 whose gradient points out of range cannot
        # move; leaving that component in corrupts L-BFGS's curvature pairs (the clamp undoes the
        # step it thinks it took) and made it diverge in tests.
        grad.masked_fill_(((self.pixels <= 0) & (grad > 0)) | ((self.pixels >= 255) & (grad < 0)), 0.0)
        if self.plan.optimizer == "lbfgs":
            if self.scale is None:
                # Mean-normalised losses give per-pixel gradients too small for torch L-BFGS's
                # absolute thresholds (ys > 1e-10) and float32; rescale so mean |gradient| starts at 1.
                grad_l1 = float(grad.abs().sum())
                self.scale = self.pixels.numel() / grad_l1 if grad_l1 > 0 else 1.0
            grad.mul_(self.scale)

    def _record(self, values: list[float]) -> None:
        entry = {"level": self.level, "step": self.step, "size": list(self.size), "content": values[0],
                 "style": values[1], "tv": values[2], "total": values[3]}
        if values[3] < self.best_total:  # a budget-stopped line search leaves a trial point
            self.best_total = values[3]
            self.best.copy_(self.pixels.detach())
        self.trace.append(entry)
        if self.callback is not None:
            self.callback(dict(entry))
        if self.plan.log_every and (self.step % self.plan.log_every == 0 or self.step == self.plan.steps - 1):
            logger.info("gatys level %d %s step %d: total %.4g (content %.4g, style %.4g, tv %.4g)",
                        self.level, self.size, self.step, values[3], values[0], values[1], values[2])

    def evaluate(self) -> torch.Tensor:
        """One loss evaluation (the optimisers' closure): loss, projected gradient, trace entry."""
        if self.step >= self.plan.steps:
            raise _BudgetSpent
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.pixels.clamp_(0, 255)  # evaluate (and let L-BFGS move from) a valid image
        terms = self._terms()
        total = (terms * self.weights).sum()
        values = torch.cat([terms, total[None]]).tolist()  # one device sync per evaluation
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(
                f"Gatys loss became non-finite at level {self.level} step {self.step} (content {values[0]}, "
                f"style {values[1]}, tv {values[2]}); lower lr (now {self.plan.lr}) or the loss weights"
            )
        total.backward()
        with torch.no_grad():
            self._project_gradient()
        self._record(values)
        self.step += 1
        return total.detach() * (self.scale or 1.0)

    def run_adam(self) -> None:
        self.optimizer = torch.optim.Adam([self.pixels], lr=self.plan.lr)
        for _ in range(self.plan.steps):
            self.evaluate()
            self.optimizer.step()

    def run_lbfgs(self) -> None:
        # Strong-Wolfe line search: without one, L-BFGS zigzagged and blew up in tests (the L1 TV
        # term is not smooth). Its first iteration is a gradient step of L1 norm `lr` (~lr/N per
        # pixel in the rescaled units), too small to measure anything on; give that one iteration an
        # lr that moves pixels by LBFGS_FIRST_STEP grey levels on average, then use the plan's lr.
        self.optimizer = torch.optim.LBFGS([self.pixels], lr=LBFGS_FIRST_STEP * self.pixels.numel(), max_iter=1,
                                           max_eval=10 * LBFGS_CHUNK, tolerance_grad=0.0, tolerance_change=0.0,
                                           history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe")
        group = self.optimizer.param_groups[0]
        try:
            self.optimizer.step(self.evaluate)
            group["lr"], group["max_iter"] = self.plan.lr, LBFGS_CHUNK
            while True:
                before, best_before = self.step, self.best_total
                self.optimizer.step(self.evaluate)
                if self.step - before <= 1 or self.best_total >= best_before:  # converged, or stalled
                    break
        except _BudgetSpent:  # the pixels may be mid line search; `best` is what we return
            pass


def optimize_level(start: torch.Tensor, extract: Extractor, content_targets: Mapping[str, torch.Tensor],
                   style_targets: Mapping[str, torch.Tensor], plan: LevelPlan, level: int, trace: list[dict],
                   callback: Callable[[dict], None] | None, style_term: StyleTerm | None = None) -> torch.Tensor:
    """Up to ``plan.steps`` loss evaluations at ``start``'s size; returns the best image evaluated.
    ``style_term`` (features -> scalar) replaces the Gram loss against ``style_targets``."""
    run = _Level(start, extract, content_targets, style_targets, plan, level, trace, callback, style_term)
    if plan.optimizer == "lbfgs":
        run.run_lbfgs()
    else:
        run.run_adam()
    return run.best
