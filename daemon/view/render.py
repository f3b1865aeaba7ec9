"""`rollguard get`'s text: one kubectl-style block per rollout (pure: the API document in, lines out).

    staging/backend  revision 3  analysing  (policy backend-staging)
      image      backend:v2 → backend:v3
      timing     evaluations 7 · next in 1s · bake time left 4s
      SIGNAL        VALUE   THRESHOLD   BASELINE  HISTORY
      error_rate    0.12    > 0.05      —         ▁▁▁▅▇▇▇
      RULE                   ACTION    STATUS
      error-rate-over-5pct   rollback  pending 2s of 3s
      verdict    pass — no rule matched (pending or held: error-rate-over-5pct)

Colours (ANSI) only when asked (the output is a terminal); `wide` adds each rule's condition and each
signal's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from daemon.view.text import number_text

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 24
"""Readings drawn in a sparkline (the newest)."""
_COLOURS = {"red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35", "dim": "2", "bold": "1"}
_STATE_COLOUR = {"analysing": "blue", "review": "yellow", "passed": "green", "rolling-back": "red",
                 "rolled-back": "red", "rollback-failed": "red", "failed": "red", "fenced": "red"}
_RULE_COLOUR = {"pending": "yellow", "fired": "red", "held": "magenta", "idle": "dim"}


def sparkline(values: Sequence[float | bool | None], width: int = SPARK_WIDTH) -> str:
    """The last `width` readings as block characters, scaled from min to max; a gap is a space."""
    shown = [None if v is None else float(v) for v in values[-width:]]
    numbers = [v for v in shown if v is not None]
    if not numbers:
        return ""
    lo, hi = min(numbers), max(numbers)
    span = hi - lo
    return "".join(" " if v is None else SPARKS[0 if span == 0 else round((v - lo) / span * (len(SPARKS) - 1))]
                   for v in shown)


def _paint(text: str, colour: str | None, enabled: bool) -> str:
    if not enabled or colour is None:
        return text
    return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"


def _table(rows: Sequence[Sequence[str]], colours: Sequence[Sequence[str | None]], colour: bool,
           indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row, paints in zip(rows, colours, strict=True):
        cells = [_paint(cell.ljust(width) if i < len(row) - 1 else cell, paints[i], colour)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _threshold_text(signal: Mapping[str, Any]) -> str:
    parts = [f"{t['op']} {number_text(t['value'])}" for t in signal.get("thresholds") or []]
    return ", ".join(parts) or "—"


def render_item(item: Mapping[str, Any], *, colour: bool = False, wide: bool = False) -> list[str]:
    """The block of one item of `/api/v2/analyses`."""
    state = str(item.get("state"))
    head = f"{item['namespace']}/{item['deployment']}  revision {item['revision']}  "
    head += _paint(state, _STATE_COLOUR.get(state), colour)
    if item.get("policy"):
        head += f"  (policy {item['policy']})"
    if item.get("source") == "annotation":
        head += "  (from the state annotation: the daemon is not analysing it)"
    lines = [head]
    images = item.get("images") or {}
    new = ", ".join(images.get("new") or []) or "—"
    old = ", ".join(images.get("old") or [])
    lines.append(f"  image      {old + ' → ' if old else ''}{new}")
    timing = [f"evaluations {item['evaluations']}"] if item.get("evaluations") is not None else []
    if item.get("live"):
        if item.get("nextEvaluationInSeconds") is not None:
            timing.append(f"next in {int(item['nextEvaluationInSeconds'])}s")
        if item.get("bakeTimeLeftSeconds") is not None:
            timing.append(f"bake time left {int(item['bakeTimeLeftSeconds'])}s")
        elif item.get("completedAt") is None:
            timing.append("rollout in progress")
    if timing:
        lines.append("  timing     " + " · ".join(timing))
    signals = item.get("signals") or []
    if signals:
        rows = [["SIGNAL", "VALUE", "THRESHOLD", "BASELINE", "HISTORY"] + (["MESSAGE"] if wide else [])]
        paints: list[list[str | None]] = [["dim"] * len(rows[0])]
        for s in signals:
            value = number_text(s.get("value")) if s.get("phase") in ("ok", "failed") else str(s.get("phase") or "—")
            row = [s["name"], value, _threshold_text(s), number_text(s.get("baseline")),
                   sparkline([v for _, v in s.get("history") or []])]
            if wide:
                row.append(str(s.get("message") or ""))
            rows.append(row)
            bad = s.get("phase") in ("failed", "error")
            paints.append([None, "red" if bad else None] + [None] * (len(row) - 2))
        lines += _table(rows, paints, colour)
    rules = item.get("rules") or []
    if rules:
        rows = [["RULE", "ACTION", "STATUS"] + (["WHEN"] if wide else [])]
        paints = [["dim"] * len(rows[0])]
        for r in rules:
            when = [str(r.get("when") or "")] if wide else []
            rows.append([r["name"], str(r.get("action") or "—"), r["text"], *when])
            paints.append([None, None, _RULE_COLOUR.get(r["status"])] + ([None] if wide else []))
        lines += _table(rows, paints, colour)
    verdict = item.get("verdict")
    if verdict:
        lines.append(f"  verdict    {verdict['action']} — {verdict['reason']}")
    if item.get("approver"):
        lines.append(f"  approver   {item['approver']}")
    return lines


def render(document: Mapping[str, Any], *, colour: bool = False, wide: bool = False,
           target: tuple[str, str] | None = None, events: Sequence[str] = ()) -> str:
    """Every item (or only `target`'s (namespace, name)), blocks separated by a blank line."""
    items = [i for i in document.get("items") or []
             if target is None or (i.get("namespace"), i.get("deployment")) == target]
    if not items:
        text = "No analysis of " + (f"{target[0]}/{target[1]}" if target else "any Deployment") + "."
        blocks = [text]
    else:
        blocks = ["\n".join(render_item(i, colour=colour, wide=wide)) for i in items]
    if events:
        blocks.append("\n".join(["Events (rollguard):", *("  " + e for e in events)]))
    return "\n\n".join(blocks) + "\n"
