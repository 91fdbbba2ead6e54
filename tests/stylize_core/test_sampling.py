"""Metrics sampling: a pure function of the URI, stable across processes, nested across fractions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stylize_core.sampling import sampled

URIS = [f"s3://bucket/catalog/{i:05d}.jpg" for i in range(20_000)]


def test_fraction_edges_and_share():
    assert all(sampled(u, 1.0) for u in URIS[:100]) and not any(sampled(u, 0.0) for u in URIS[:100])
    for fraction in (0.05, 0.25, 0.5):
        share = sum(sampled(u, fraction) for u in URIS) / len(URIS)
        assert abs(share - fraction) < 0.02
    with pytest.raises(ValueError):
        sampled("x", 1.5)
    with pytest.raises(ValueError):
        sampled("x", -0.1)


def test_smaller_sample_is_a_subset_and_choice_depends_on_uri_only():
    small = {u for u in URIS if sampled(u, 0.1)}
    large = {u for u in URIS if sampled(u, 0.3)}
    assert small < large
    assert [sampled(u, 0.3) for u in URIS[:500]] == [sampled(u, 0.3) for u in URIS[:500]]


def test_same_choice_in_another_process_with_another_hash_seed():
    code = "from stylize_core.sampling import sampled; import sys; print(''.join('1' if sampled(u, 0.3) else '0' for u in sys.argv[1:]))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, *URIS[:300]], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "".join("1" if sampled(u, 0.3) else "0" for u in URIS[:300])
