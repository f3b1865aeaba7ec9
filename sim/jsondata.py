"""JSON-like data as the simulated cluster keeps it: deep copies and Kubernetes time strings
(re-exported by `sim.store`, where callers find them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

_T = TypeVar("_T")

_SCALARS = frozenset({str, int, float, bool, type(None)})


def copy_json(value: _T) -> _T:
    """Deep copy of JSON-like data (dicts, lists, scalars); several times faster than copy.deepcopy.

    Plain dicts and lists are copied with their scalar members taken as they are (no call per leaf);
    subclasses of dict and list are copied as plain ones, anything else (scalars, tuples) is shared.
    """
    kind = type(value)
    data: Any = value
    if kind is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in data.items()}  # type: ignore[return-value]
    if kind is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in data]  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [copy_json(v) for v in value]  # type: ignore[return-value]
    return value


def rfc3339(epoch: float) -> str:
    """Kubernetes `Time`: RFC 3339 UTC with whole seconds."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(epoch: float) -> str:
    """Kubernetes `MicroTime`: RFC 3339 UTC with six fractional digits."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
