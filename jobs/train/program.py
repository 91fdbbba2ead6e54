"""``python -m jobs.train``: the task picks the trainer. Style networks: :mod:`jobs.train.driver`;
style predictors (``--task predict``): :mod:`jobs.train.predict`;
enhancement networks (``--task sr2|sr4|denoise|deblock``): :mod:`jobs.train.enhance`, which runs the
same Ray Train shape with the driver's helpers."""

from __future__ import annotations

from collections.abc import Sequence

from jobs.train import driver, enhance, predict
from jobs.train.settings import TrainSettings, parse_args


def main(args: TrainSettings) -> int:
    """Run the training job for ``args.task``; returns a process exit code."""
    if args.task == "predict":
        return predict.main(args)
    return driver.main(args) if args.task == "style" else enhance.main(args)


def cli(argv: Sequence[str] | None = None) -> int:
    return main(parse_args(argv))
