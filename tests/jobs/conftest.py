"""Fixtures for tests that run the Ray layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_local(s3_server: str) -> Iterator[None]:
    """One local Ray for the session (2 CPUs, no dashboard), started after the S3 server so that
    its workers inherit AWS_ENDPOINT_URL and the dummy credentials."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
