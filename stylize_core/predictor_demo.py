"""The demo style predictor shipped as ``stylize_core/assets/demo_predictor.pth``: nothing to download.

* Network: a slim TransformerNet (``NetConfig(width=0.25)``) and a small style predictor
  (:mod:`stylize_core.predictor`), trained jointly from scratch.
* Losses: content = the texture loss network's luminance-edge layers, style = Gram matrices of its
  default style layers, through ``texture:1``; the benchmark measures with ``texture:0`` (never
  trained against), as the demo AdaIN model's does.
* Data: scikit-image's photographs (:func:`~stylize_core.training_demo.demo_content_images`) and the
  demo AdaIN model's procedural training styles (:func:`~stylize_core.adain_demo.training_styles`);
  :func:`~stylize_core.adain_demo.heldout_styles` (other generators, palettes and a photograph) are
  never trained on: the benchmark and the tests use them.

    python -m stylize_core.predictor_demo --out OUT.pth [--steps N] [--time-limit S] [--cpu-limit S] [--threads T]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .predictor_checkpoint import predictor_checkpoint_bytes
from .predictor_training import PredictorTrainConfig, train


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Train the demo style predictor on scikit-image photos and procedural styles.")
    p.add_argument("--out", required=True, metavar="OUT.pth", help="where to write the one-file checkpoint")
    p.add_argument("--steps", type=int, default=PredictorTrainConfig.steps)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many wall-clock seconds")
    p.add_argument("--cpu-limit", type=float, default=None, help="stop after this many seconds of CPU time (all threads)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=float, default=PredictorTrainConfig.width)
    p.add_argument("--seed", type=int, default=0, help="data order (use another when continuing with --init)")
    p.add_argument("--init", default=None, metavar="CKPT", help="continue from this predictor checkpoint (a fresh "
                   "optimiser; the earlier runs' recipes are kept under 'continued')")
    args = p.parse_args(argv)
    from . import adain_demo
    from .training_demo import demo_content_images

    torch.set_num_threads(args.threads)
    config = PredictorTrainConfig(steps=args.steps, width=args.width, seed=args.seed)
    init, before = None, []
    if args.init:
        from .predictor_checkpoint import load_predictor

        loaded = load_predictor(args.init, lambda uri: Path(uri).read_bytes())
        init = loaded.model.train().requires_grad_(True)
        earlier = json.loads(loaded.metadata["training"])
        before = earlier.pop("continued", []) + [earlier]  # oldest first
    model, recipe = train(config, demo_content_images(), adain_demo.training_styles(), time_limit=args.time_limit,
                          cpu_limit=args.cpu_limit, model=init)
    recipe.update(threads=args.threads, torch=torch.__version__, time_limit=args.time_limit, cpu_limit=args.cpu_limit)
    if before:
        recipe["continued"] = before
    data = predictor_checkpoint_bytes(model, {"demo": 1, "training": json.dumps(recipe)}, half=True)
    Path(args.out).write_bytes(data)
    print(f"trained {recipe['steps_done']} steps in {recipe['train_seconds']} s -> {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
