"""Durations in rule files: `500ms`, `30s`, `1m`, `2m30s`, `1h`, `1h30m`. Values are float seconds.

The syntax is Prometheus's (units h, m, s, ms, each at most once, largest first, whole numbers),
because SREs write the same durations in their alerting rules. Anything else is a `DurationError`
whose message suggests the spelling that was probably meant: `"5 minutes" is not a duration (use 5m)`.
"""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m(?!s))?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Spellings people write in prose, mapped to seconds, to build the "(use 5m)" hint.
_WORD_SECONDS = {
    **dict.fromkeys(("ms", "msec", "msecs", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_PROSE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*")
_EXAMPLES = "for example 30s, 5m, 1h30m or 500ms"


class DurationError(ValueError):
    """A value is not a duration; the message names the value and suggests a spelling."""


def parse_duration(value: object) -> float:
    """Seconds in a duration string such as `2m30s`. Raises `DurationError` for anything else,
    including bare numbers (`30` could mean seconds or minutes, so it is refused with a hint)."""
    if isinstance(value, bool) or value is None:
        raise DurationError(f"{_show(value)} is not a duration ({_EXAMPLES})")
    if isinstance(value, int | float):
        hint = format_duration(float(value)) if math.isfinite(value) and value >= 0 else None
        unit_hint = f"use {hint} for {_show(value)} seconds" if hint else _EXAMPLES
        raise DurationError(f"{_show(value)} is not a duration: a number needs a unit ({unit_hint})")
    if not isinstance(value, str):
        raise DurationError(f"expected a duration ({_EXAMPLES}), got {type(value).__name__}")
    match = _DURATION.fullmatch(value)
    if value and match is not None:
        return sum(float(amount) * _UNIT_SECONDS[unit] for unit, amount in match.groupdict().items() if amount)
    hint = _guess(value)
    raise DurationError(f"{_show(value)} is not a duration ({'use ' + hint if hint else _EXAMPLES})")


def format_duration(seconds: float) -> str:
    """The canonical spelling of `seconds` (rounded to milliseconds): 150 → `2m30s`, 0.5 → `500ms`, 0 → `0s`."""
    total_ms = round(seconds * 1000)
    if total_ms <= 0:
        return "0s"
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s"), (millis, "ms")) if n]
    return "".join(parts)


def _guess(text: str) -> str | None:
    """The duration a prose spelling such as `5 minutes`, `1.5h` or `10 S` most likely meant, or None."""
    match = _PROSE.fullmatch(text)
    if match is None:
        return None
    unit = _WORD_SECONDS.get(match.group(2).lower())
    if unit is None:
        return None
    return format_duration(float(match.group(1)) * unit)


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)
