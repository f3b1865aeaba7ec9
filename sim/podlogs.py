"""The seam between the API server's `pods/{name}/log` endpoint and whatever produces pod logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class PodLogSource(Protocol):
    """Produces the log lines of a simulated pod's container."""

    def read(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
             since_time: float | None = None, tail_lines: int | None = None, timestamps: bool = False) -> list[str]:
        """Lines written so far (each without its trailing newline), oldest first, filtered as asked.

        Raises `sim.store.ApiError` (404) for an unknown pod or container.
        """
        ...

    def follow(self, namespace: str, pod: str, container: str, *, since_seconds: float | None = None,
               since_time: float | None = None, tail_lines: int | None = None,
               timestamps: bool = False) -> AsyncIterator[str]:
        """Like `read`, then every new line as it is written, until the container stops or the pod is gone."""
        ...
