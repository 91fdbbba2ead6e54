"""Test-only fault injection for the job's Ray actors (nothing of it lives in the product).

:func:`crash_once` swaps the job's actor classes for subclasses whose first call (per marker file)
kills the actor process, as a lost node would. The subclasses are built inside a function, so
cloudpickle ships them to the Ray workers by value: the workers need not import this test module.
"""

from __future__ import annotations

import os

import pytest


def crashing(base: type, marker: str) -> type:
    """``base`` whose first ``__call__`` anywhere (the marker file does not exist yet) exits the process."""

    def __call__(self, batch):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return base.__call__(self, batch)

    return type(f"CrashOnce{base.__name__}", (base,), {"__call__": __call__})


def crash_once(monkeypatch: pytest.MonkeyPatch, marker: str) -> None:
    """Make the next job run's actors crash once (the job picks its actor class at run time)."""
    from jobs import stylize_actor

    for name in ("StylizeActor", "FusedStylizeActor"):
        monkeypatch.setattr(stylize_actor, name, crashing(getattr(stylize_actor, name), marker))
