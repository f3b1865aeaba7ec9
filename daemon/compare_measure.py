"""The samples of a `spec.compare` comparison, by Prometheus range queries, judged by `daemon.compare`.

Both sides run the compared signal's own query template, one value every `step` seconds:

* the new revision: from the rollout's start until now (the analysis window);
* `baseline: concurrent`: the previous revision's pods over the *same* window: while the rolling
  update runs both serve the same traffic at the same time of day. Once the old pods are gone their
  series stop, so the comparison keeps the samples of the time they served side by side;
* `baseline: stable`: the stable revision (`daemon.baselines`) over a window of the same length
  ending when it stopped being the newest, i.e. while it served alone.

Each range query asks for at most `MAX_RANGE_POINTS` points (`daemon.signals.promapi`): a longer
window keeps its newest part. A query that answers several series is inconclusive (aggregate it,
as for any signal); Prometheus down is ERROR.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from daemon.compare import compare_samples
from daemon.measurement import Measurement, Phase, SignalContext
from daemon.rules.model import ComparisonSpec
from daemon.rules.templates import TemplateError, render_promql
from daemon.signals.promapi import PrometheusClient, PrometheusError, RangeSeries
from daemon.signals.session import one_line


@dataclass(frozen=True)
class Side:
    """One side of a comparison: which revision, over which window (epoch seconds)."""

    ctx: SignalContext
    start: float
    end: float
    what: str
    """For messages: "revision 3, the last that passed its analysis"."""


async def measure_comparison(spec: ComparisonSpec, query: str, *, client: PrometheusClient, new: Side,
                             baseline: Side) -> Measurement:
    """The comparison `spec` of `query`'s samples on `new` against `baseline` (see the module docstring)."""
    try:
        new_values, base_values = await asyncio.gather(_samples(client, query, new, spec.step),
                                                       _samples(client, query, baseline, spec.step))
    except _NoSamples as exc:
        return Measurement(exc.phase, None, f"{spec.name}: {exc}")
    compared = compare_samples(spec, new_values, base_values)
    return replace(compared, message=f"{spec.name} against {baseline.what}: {compared.message}",
                   details={**compared.details, "revision": float(baseline.ctx.revision)})


class _NoSamples(Exception):
    def __init__(self, phase: Phase, message: str) -> None:
        super().__init__(message)
        self.phase = phase


async def _samples(client: PrometheusClient, query: str, side: Side, step: float) -> tuple[float, ...]:
    try:
        promql = render_promql(query, side.ctx.template_variables())
    except TemplateError as exc:
        raise _NoSamples(Phase.ERROR, one_line(f"cannot render the query: {exc}")) from None
    if side.end < side.start:
        return ()
    try:
        series: tuple[RangeSeries, ...] = await client.query_range(promql, start=side.start, end=side.end, step=step)
    except PrometheusError as exc:
        raise _NoSamples(Phase.ERROR, str(exc)) from None
    if len(series) > 1:
        raise _NoSamples(Phase.INCONCLUSIVE, f"the query returned {len(series)} series for revision "
                                             f"{side.ctx.revision}, which is ambiguous: aggregate it to one value, "
                                             "e.g. sum(...) or max(...)")
    return series[0].values if series else ()
