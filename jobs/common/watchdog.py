"""A stream that stops when it stalls: the guard against a Ray pipeline that waits forever.

After a node is lost, Ray restarts that node's actors on the survivors; when a fixed actor pool then
holds every CPU left, Ray Data's read tasks never get one and the stream waits without end (seen on
Ray 2.60). Nothing inside Ray reports it, so the job watches the one thing it can: rows arriving.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_ITEM, _END, _ERROR = 0, 1, 2


class StreamStalled(RuntimeError):
    """No item came for the allowed time after the stream had started."""


def stall_guarded(items: Iterator[T], timeout_s: float, what: str = "row") -> Iterator[T]:
    """``items``, pulled in a daemon thread; :class:`StreamStalled` once no next item comes within
    ``timeout_s`` seconds of the previous one. The wait for the FIRST item is not limited: GPU
    actors may wait a long time for an autoscaled node. ``timeout_s <= 0``: ``items`` unchanged.

    At most two items wait in the hand-over queue, so a slow consumer still holds the producer
    back (the pipeline's backpressure is kept).
    """
    if timeout_s <= 0:
        yield from items
        return
    handover: queue.Queue = queue.Queue(maxsize=2)

    def pull() -> None:
        try:
            for item in items:
                handover.put((_ITEM, item))
            handover.put((_END, None))
        except BaseException as exc:  # handed to the consumer, which raises it where it is read
            handover.put((_ERROR, exc))

    threading.Thread(target=pull, name="stall-guarded-stream", daemon=True).start()
    started = False
    while True:
        try:
            kind, value = handover.get(timeout=timeout_s if started else None)
        except queue.Empty:
            raise StreamStalled(f"no {what} for {timeout_s:g} s (the pool may no longer fit the cluster, "
                                f"e.g. after a lost node)") from None
        if kind == _END:
            return
        if kind == _ERROR:
            raise value
        started = True
        yield value
