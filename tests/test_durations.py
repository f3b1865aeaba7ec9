"""Durations in rule files: the accepted spellings and the exact messages for the rejected ones."""

from __future__ import annotations

import pytest

from daemon.rules.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m", 60.0),
        ("2m30s", 150.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("0s", 0.0),
        ("10m", 600.0),
    ],
)
def test_accepted_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", '"5 minutes" is not a duration (use 5m)'),
        ("30 sec", '"30 sec" is not a duration (use 30s)'),
        ("1.5h", '"1.5h" is not a duration (use 1h30m)'),
        ("2 hours", '"2 hours" is not a duration (use 2h)'),
        ("1 day", '"1 day" is not a duration (use 24h)'),
        ("250 milliseconds", '"250 milliseconds" is not a duration (use 250ms)'),
        ("30m1h", '"30m1h" is not a duration (for example 30s, 5m, 1h30m or 500ms)'),
        ("soon", '"soon" is not a duration (for example 30s, 5m, 1h30m or 500ms)'),
        ("", '"" is not a duration (for example 30s, 5m, 1h30m or 500ms)'),
        ("-5s", '"-5s" is not a duration (for example 30s, 5m, 1h30m or 500ms)'),
        (30, "30 is not a duration: a number needs a unit (use 30s for 30 seconds)"),
        (90, "90 is not a duration: a number needs a unit (use 1m30s for 90 seconds)"),
        (True, "true is not a duration (for example 30s, 5m, 1h30m or 500ms)"),
        (None, "null is not a duration (for example 30s, 5m, 1h30m or 500ms)"),
        (["1m"], "expected a duration (for example 30s, 5m, 1h30m or 500ms), got list"),
    ],
)
def test_rejected_durations_explain_themselves(value: object, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.5, "500ms"), (59, "59s"), (150, "2m30s"), (3600, "1h"), (3661.5, "1h1m1s500ms")]
)
def test_format_duration_is_the_canonical_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
