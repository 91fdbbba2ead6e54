"""What a training run's workers tell its driver, in a module that imports nothing beyond the standard
library: Ray starts the ledger in a process of its own, which then loads only Ray. It lived in
:mod:`jobs.train.worker`, whose torch import made that process cost 2.0-2.2 CPU-s and 596 MiB resident
instead of 0.5-0.6 CPU-s and 123 MiB (4 ledgers each way on a local Ray, 2026-12-07, the 2-core
AMD EPYC test machine)."""

from __future__ import annotations

from typing import Any


class RunLedger:
    """Driver-owned facts gathered from the workers: undecodable content files (one entry per URI;
    epochs and restarts re-read the same files) and the step this invocation started from."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, str]] = {}
        self.start_step: int | None = None

    def started(self, step: int) -> None:
        if self.start_step is None:  # automatic restarts (--max-failures) keep the first value
            self.start_step = step

    def add(self, items: list[dict[str, str]]) -> None:
        for item in items:
            self._items.setdefault(item["uri"], item)

    def summary(self) -> dict[str, Any]:
        return {"skipped": [self._items[k] for k in sorted(self._items)], "start_step": self.start_step}
