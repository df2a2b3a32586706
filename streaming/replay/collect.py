"""Garbage-collector settings for loops that buffer many decoded records.

A replay or a rebuild buffers thousands of decoded records for the merge. With the default thresholds the
cyclic collector traverses them, and every model's state, again and again, although nothing allocated per
record forms a cycle that needs it (records, feature vectors and predictions are freed by reference
counting). In ``scripts/bench_replay.py`` this took replay throughput from 0.77x to 0.90x of the bare loop.

>>> import gc
>>> before = gc.get_threshold()
>>> with fewer_collections():
...     gc.get_threshold()[0]
50000
>>> gc.get_threshold() == before
True
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fewer_collections"]


@contextmanager
def fewer_collections(young: int = 50_000) -> Iterator[None]:
    """Objects alive on entry are frozen out of collections, and the youngest generation is collected
    every ``young`` allocations instead of 700; both are restored on exit (which unfreezes everything: not for
    a process that uses ``gc.freeze`` itself)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(young, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
