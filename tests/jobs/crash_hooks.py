"""Test-only fault injection for the job's Ray actors (nothing of it lives in the product).

:func:`crash_once` and :func:`poison` swap the job's actor class for a subclass whose first call (per marker file)
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
    """Make the next job run's actors crash once (the job reads its actor class at run time)."""
    from jobs.batch import driver as stylize
    from jobs.batch import actor as stylize_actor

    monkeypatch.setattr(stylize, "STYLIZE_ACTOR", crashing(stylize_actor.StylizeActor, marker))


ILLEGAL_ADDRESS = "CUDA error: an illegal memory access was encountered"


def poisoned(base: type, marker: tuple[int, int, int]) -> type:
    """``base`` whose stylizer fails as a sticky CUDA error does (illegal address) whenever an image
    whose top-left pixel is ``marker`` is in the batch, on every attempt: an input that always kills
    its actor."""

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        real = self.stylizer.stylize_many

        def stylize_many(images, *args, **kwargs):
            if any(tuple(int(v) for v in image[0, 0]) == marker for image in images):
                raise RuntimeError(ILLEGAL_ADDRESS)
            return real(images, *args, **kwargs)

        self.stylizer.stylize_many = stylize_many

    return type(f"Poisoned{base.__name__}", (base,), {"__init__": __init__})


def poison(monkeypatch: pytest.MonkeyPatch, marker: tuple[int, int, int]) -> None:
    """Make the next job run's actors die on every batch holding an image marked with ``marker``."""
    from jobs.batch import driver as stylize
    from jobs.batch import actor as stylize_actor

    monkeypatch.setattr(stylize, "STYLIZE_ACTOR", poisoned(stylize_actor.StylizeActor, marker))
