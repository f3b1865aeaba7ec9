"""How often the cyclic garbage collector runs a full collection in the daemon.

CPython (3.11) runs a full collection once ten middle-generation collections have passed and the
objects promoted to the oldest generation since the last one exceed a quarter of it. Reference counting
frees almost everything rollguard makes — a reading, a verdict, a log record, a decoded watch event —
but every reading lives one analysis interval, long enough to be promoted first. At 10,000 analyses
(1,000 evaluations a second) that set off a full collection every two seconds, each walking the
million-odd objects of the watch caches and the analyses for about a second, finding next to nothing
(5 objects in 47 collections, measured): 40% of the daemon's CPU, and a second's stall of the loop
each time. The young generations are left as CPython has them; the oldest one is examined after 1,000
middle-generation collections instead of 10 (about once a minute and a half at 10,000 analyses, less
often when idle). Cycles that outlive the young generations are rare here and still collected then.
"""

from __future__ import annotations

import gc

FULL_COLLECTION_EVERY = 1000
"""Middle-generation collections between two looks at the oldest generation (CPython's default: 10)."""


def apply() -> None:
    """Keep CPython's young-generation thresholds; examine the oldest one `FULL_COLLECTION_EVERY` times less
    often than the middle one. Once per process, before the daemon starts."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
