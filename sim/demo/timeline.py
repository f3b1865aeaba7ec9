"""The demo timeline's analysis lines: one per evaluation, each a new fact.

`/api/v2/analyses` is polled every second, and between two evaluations a pending rule's timer keeps
counting (`pendingSeconds` is measured when the document is generated). Printing what changed would
repeat an evaluation number with a later timer; so a line is printed once per evaluation, and its
timers are read back to the moment of that evaluation (`lastEvaluationAt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.view.text import parse_rfc3339, rule_timer

LIVE_STATES = ("analysing", "review")


def fmt_value(value: Any) -> str:
    """A signal's reading, short: floats to three significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def judged(analysis: Mapping[str, Any], *, generated_at: float | None) -> str:
    """`pending error-rate-over-5pct 2s/6s` while rules count up to their `for` (as of the last evaluation),
    else the verdict's action."""
    evaluated_at = parse_rfc3339(analysis.get("lastEvaluationAt"))
    # Both times are the daemon's, to the millisecond; rounding keeps 2.2 - 0.2 from reading as 1.999… → "1s".
    since = max(0.0, generated_at - evaluated_at) if generated_at is not None and evaluated_at is not None else 0.0
    pending = [r for r in analysis.get("rules") or [] if r.get("status") == "pending"]
    if pending:
        return ", ".join(f"pending {r['name']} "
                         f"{rule_timer(max(0.0, round((r['pendingSeconds'] or 0.0) - since, 3)), r['forSeconds'])}"
                         for r in pending)
    return str((analysis.get("verdict") or {}).get("action", "-"))


class EvaluationLines:
    """Turns successive `/api/v2/analyses` documents into timeline lines: at most one per evaluation."""

    def __init__(self) -> None:
        self._last: tuple[str, str, int, int] | None = None

    def line(self, document: Mapping[str, Any]) -> str | None:
        """`rev 3 eval #4: error_rate=0.12, ... → pending error-rate-over-5pct 2s/3s`, or None: nothing new."""
        live = [a for a in document.get("items") or [] if a.get("live") and a.get("state") in LIVE_STATES]
        if not live:
            return None
        analysis = live[0]
        values = ", ".join(f"{s['name']}={fmt_value(s['value']) if s['phase'] in ('ok', 'failed') else s['phase']}"
                           for s in analysis.get("signals") or [] if s.get("phase"))
        key = (str(analysis.get("namespace")), str(analysis.get("deployment")), int(analysis.get("revision") or 0),
               int(analysis.get("evaluations") or 0))
        if not values or key == self._last:
            return None
        self._last = key
        verdict = judged(analysis, generated_at=parse_rfc3339(document.get("generatedAt")))
        return f"rev {analysis['revision']} eval #{analysis['evaluations']}: {values} → {verdict}"
