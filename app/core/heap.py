"""The cycle collector, set for a long-running process.

CPython runs a young collection whenever 700 more container objects (dicts, lists,
instances) have been made than freed, and every tenth of those also goes through
what survived them. A worker with a few dozen runs in flight always has thousands of
young objects alive, so collections came every few runs, each going through the
objects of the runs in flight, and the older ones through the heap of the imported
libraries (SQLAlchemy's mappers, pydantic's models, the Google clients), which never
becomes garbage.

`settle()`, called once a process is set up, moves what exists then into the
permanent generation (`gc.freeze`) and lets young objects pile up further before a
collection. Most of a run's objects are freed by reference counting long before
that; cycles are still collected, later. bench/README.md records the worker's CPU
time per run with and without it, under bench/engine.py's throughput figure.
"""

from __future__ import annotations

import gc

# Young objects allowed before a collection (CPython's default: 700).
YOUNG_THRESHOLD = 20_000


def settle() -> None:
    """Collect once, freeze what is left (the modules and the app just built), and
    collect young objects less often. For a process's start, before it serves."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
