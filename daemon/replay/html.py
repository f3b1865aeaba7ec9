"""`--html FILE`: a self-contained report, one section per rollout with each signal's chart over it.

Charts are inline SVG drawn here (no script, no stylesheet or font fetched): the signal's value at
each replayed tick, the baseline when there is one, the numbers the rules compare it with as dashed
lines, and a red line at the moment of the outcome. Everything shown is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from html import escape

from daemon.replay.engine import Replay
from daemon.replay.report import stamp, summary
from daemon.rules.durations import format_duration

_WIDTH, _HEIGHT, _PAD = 560, 160, 36
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:e-?\d+)?)")


def thresholds(replay: Replay, signal: str) -> list[float]:
    """The literal numbers in the conditions of the rules that read `signal` (`error_rate > 0.05` → 0.05)."""
    found: list[float] = []
    for rule in replay.rollout.policy.rules:
        if signal in rule.when.signals:
            found.extend(float(n) for n in _NUMBER.findall(rule.when.text) if float(n) not in found)
    return found


def _chart(replay: Replay, signal: str) -> str:
    start = replay.rollout.started_at
    points = [(t.at - start, t.values.get(signal)) for t in replay.ticks]
    base = [(t.at - start, t.baselines.get(signal)) for t in replay.ticks]
    numbers = [v for _, v in points + base if isinstance(v, int | float) and not isinstance(v, bool)]
    limits = thresholds(replay, signal)
    top = max([*numbers, *limits, 1e-9]) * 1.1
    bottom = min([*numbers, *limits, 0.0])
    span_x = max([x for x, _ in points] + [1.0] + ([replay.at - start] if replay.at is not None else []))

    def x(at: float) -> float:
        return _PAD + (_WIDTH - 2 * _PAD) * at / span_x

    def y(value: float) -> float:
        return _HEIGHT - _PAD + (2 * _PAD - _HEIGHT) * (value - bottom) / ((top - bottom) or 1.0)

    def path(series: list[tuple[float, float | bool | None]], colour: str, dash: str = "") -> str:
        coords = [f"{x(a):.1f},{y(float(v)):.1f}" for a, v in series
                  if isinstance(v, int | float) and not isinstance(v, bool)]
        if not coords:
            return ""
        return (f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{" ".join(coords)}"/>'
                + "".join(f'<circle cx="{c.split(",")[0]}" cy="{c.split(",")[1]}" r="2.5" fill="{colour}"/>'
                          for c in coords))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
             f'aria-label="{escape(signal)}">',
             f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="#fff" stroke="#ccc"/>',
             f'<text x="{_PAD}" y="16" font-size="12" font-family="sans-serif">{escape(signal)}</text>',
             f'<text x="4" y="{y(top) + 4:.1f}" font-size="10" font-family="sans-serif">{top:.3g}</text>',
             f'<text x="4" y="{y(bottom) + 4:.1f}" font-size="10" font-family="sans-serif">{bottom:.3g}</text>',
             f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 8}" font-size="10" font-family="sans-serif" '
             f'text-anchor="end">+{escape(format_duration(span_x))}</text>']
    for limit in limits:
        parts.append(f'<line x1="{_PAD}" x2="{_WIDTH - _PAD}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                     f'stroke="#d08000" stroke-dasharray="6 4"/><text x="{_WIDTH - _PAD + 2}" y="{y(limit) + 4:.1f}" '
                     f'font-size="10" font-family="sans-serif">{limit:g}</text>')
    parts.append(path(base, "#888", ' stroke-dasharray="2 3"'))
    parts.append(path(points, "#1f5fbf"))
    if replay.at is not None:
        at = x(replay.at - start)
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{_PAD / 2}" y2="{_HEIGHT - _PAD}" stroke="#c00"/>')
    parts.append("</svg>")
    return "".join(parts)


def render(replays: Sequence[Replay], *, notes: Sequence[str] = ()) -> str:
    """The whole report as one HTML document."""
    body = ["<h1>rollguard replay</h1>", "<table><tr><th>outcome</th><th>rollouts</th></tr>"]
    body += [f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in summary(replays).items()]
    body.append("</table>")
    for replay in replays:
        r = replay.rollout
        when = f" at +{format_duration(replay.at - r.started_at)}" if replay.at is not None else ""
        body.append(f"<h2>{escape(r.id.namespace)}/{escape(r.id.name)} revision {r.id.revision}</h2>")
        body.append(f"<p>{escape(', '.join(r.images))} — started {stamp(r.started_at)} (from "
                    f"{escape(replay.source)}), policy "
                    f"{escape(r.policy.name)}</p>")
        body.append(f"<p class='{escape(replay.outcome.replace(' ', '-'))}'><b>{escape(replay.outcome)}</b>"
                    f"{escape(when)}{escape(f' by rule {replay.rule}' if replay.rule else '')}: "
                    f"{escape(replay.message)}</p>")
        for name in r.policy.signals:
            if name in replay.not_replayable:
                body.append(f"<p>{escape(name)}: not replayable ({escape(replay.not_replayable[name])})</p>")
            else:
                body.append(_chart(replay, name))
    body += [f"<p>note: {escape(note)}</p>" for note in notes]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:2px 8px}.rolled-back{color:#c00}.passed{color:#080}svg{display:block;margin:6px 0}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>rollguard replay</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
