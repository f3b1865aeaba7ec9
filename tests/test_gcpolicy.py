"""The daemon's collector policy (`daemon.gcpolicy`): readings that live one interval and are freed by
reference counting — what thousands of analyses make every second — no longer set off full collections
of everything the daemon holds."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from daemon import gcpolicy


@pytest.fixture
def restore_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def full_collections_while_analysing(*, analyses: int, rounds: int) -> int:
    """Full collections while `analyses` analyses each replace their reading, a tenth of them per round,
    over a long-lived heap (the watch caches)."""
    caches = [{"metadata": {"name": f"svc-{i}", "labels": {"app": str(i)}}, "spec": [i, {"x": i}]}
              for i in range(50_000)]
    readings: list[Any] = [None] * analyses
    full = 0

    def count(phase: str, info: dict[str, int]) -> None:
        nonlocal full
        if phase == "stop" and info["generation"] == 2:
            full += 1

    gc.collect()
    gc.callbacks.append(count)
    try:
        for r in range(rounds):
            # A second's evaluations: their readings (measurements, rule results, a history entry: a
            # score of containers each) are all made, then each replaces its analysis' last one.
            ticking = range(r % 10, analyses, 10)
            fresh = [{"values": [[i, r, k] for k in range(20)], "problems": [f"no data {i}"]} for i in ticking]
            for i, reading in zip(ticking, fresh, strict=True):
                readings[i] = reading
            del fresh
    finally:
        gc.callbacks.remove(count)
    del caches
    return full


@pytest.mark.usefixtures("restore_gc")
def test_readings_of_thousands_of_analyses_do_not_set_off_full_collections() -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    as_cpython_has_it = full_collections_while_analysing(analyses=10_000, rounds=150)
    gcpolicy.apply()
    with_the_policy = full_collections_while_analysing(analyses=10_000, rounds=150)
    assert gc.get_threshold() == (700, 10, gcpolicy.FULL_COLLECTION_EVERY)
    assert as_cpython_has_it >= 10, "the churn sets off full collections with CPython's defaults"
    assert with_the_policy <= 1
