"""Fixtures for tests that run the Ray layer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local(s3_server: str) -> Iterator[None]:
    """One local Ray for the session (2 CPUs, no dashboard), started after the S3 server so that
    its workers inherit AWS_ENDPOINT_URL and the dummy credentials."""
    import ray

    if not ray.is_initialized():
        # Ray Train's controller looks at its workers every 2 s, and each step of a fit (workers
        # started, training finished) waits for that look: 4-5 s of each short test fit, measured.
        # The raylet and its workers inherit this process's environment when it starts them.
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
