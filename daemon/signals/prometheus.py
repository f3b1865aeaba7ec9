"""Prometheus signals: a rendered PromQL query's single value for a revision, as a `Measurement`.

`PrometheusProvider` renders a signal's query for a revision (`render_promql`, values escaped), asks
the `PrometheusClient` (`daemon.signals.promapi`, re-exported here) and judges the answer:

| Prometheus answers | phase | why |
|---|---|---|
| a scalar, or a vector of exactly one sample | OK, the value | |
| an empty vector | PENDING (INCONCLUSIVE at a past moment) | no data yet (no scrape of the new pods, no traffic) |
| NaN or ±Inf (`0/0` when there is no traffic) | INCONCLUSIVE | nothing to judge |
| a vector of several samples | INCONCLUSIVE | ambiguous: the message asks the SRE to aggregate (`sum(...)`) |
| a range vector (matrix) or a string | ERROR | the query cannot give one value; fix the rule |
| `status: error` (bad query, execution error, timeout) | ERROR | with Prometheus' own message |
| refused, reset, timed out, non-JSON 5xx | ERROR | Prometheus is down, which never means the rollout is bad |
| over `MAX_RESPONSE_BYTES` bytes or `MAX_SERIES` series, JSON over 64 deep | ERROR | bounded memory |

An empty answer to a query for "now" is PENDING rather than INCONCLUSIVE: the new pods have not been
scraped yet (or not twice, for a `rate()`), and the rules wait for it up to `pendingGrace`. For a
past moment (`measure_at`, a baseline) nothing more will come: INCONCLUSIVE.
Any exception inside `PrometheusProvider.measure` is caught there and becomes an ERROR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

from daemon.rules.model import PrometheusSignal
from daemon.rules.templates import TemplateError, render_promql
from daemon.signals.base import Measurement, Phase, SignalContext
from daemon.signals.promapi import (
    CA_FILE_ENV,
    MAX_RESPONSE_BYTES,
    MAX_SERIES,
    TOKEN_FILE_ENV,
    PrometheusAnswerTooLarge,
    PrometheusClient,
    PrometheusConfigError,
    PrometheusError,
    PrometheusQueryError,
    PrometheusUnavailable,
    QueryCoalescer,
    QueryResult,
    Sample,
    ca_ssl_context,
    read_bearer_token,
)
from daemon.signals.session import describe_error, excerpt, one_line

__all__ = [
    "CA_FILE_ENV",
    "MAX_RESPONSE_BYTES",
    "MAX_SERIES",
    "TOKEN_FILE_ENV",
    "PrometheusAnswerTooLarge",
    "PrometheusClient",
    "PrometheusConfigError",
    "PrometheusError",
    "PrometheusProvider",
    "PrometheusQueryError",
    "PrometheusUnavailable",
    "QueryCoalescer",
    "QueryResult",
    "Sample",
    "ca_ssl_context",
    "read_bearer_token",
]

_SERIES_IN_EVIDENCE = 3
_RENDERED_MAX = 50_000
"""Rendered queries a provider remembers (one per revision it measures); past it, it starts afresh."""


def _labels_text(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PrometheusProvider:
    """Measures one `prometheus:` signal: the rendered query's single value (see the module docstring)."""

    def __init__(self, spec: PrometheusSignal, *, client: PrometheusClient) -> None:
        self.spec = spec
        self._client = client
        # The rendered query of each revision's template variables: rendering (parsing the template,
        # escaping each value) costs more than the rest of a tick, and the variables do not change
        # while a revision is analysed.
        self._rendered: dict[tuple[tuple[str, str], ...], str] = {}

    async def measure(self, ctx: SignalContext) -> Measurement:
        """The query for `ctx`'s revision, now."""
        return await self._measure(ctx, at=None)

    async def measure_at(self, ctx: SignalContext, at: float) -> Measurement:
        """The query for `ctx`'s revision evaluated at `at` (epoch seconds).

        For baselines: pass the *previous* revision's context and the moment the rollout started.
        """
        return await self._measure(ctx, at=at)

    async def _measure(self, ctx: SignalContext, *, at: float | None) -> Measurement:
        try:
            return await self._query_and_judge(ctx, at=at)
        except Exception as exc:
            # A provider's own bug must be this signal's ERROR, never an exception that ends the analysis.
            return Measurement(Phase.ERROR, None, one_line(f"the prometheus provider failed: {describe_error(exc)}"))

    async def _query_and_judge(self, ctx: SignalContext, *, at: float | None) -> Measurement:
        when = f" at {_stamp(at)}" if at is not None else ""
        try:
            promql = self._render(ctx)
        except TemplateError as exc:
            return Measurement(Phase.ERROR, None, one_line(f"cannot render the query: {exc}"))
        try:
            result = await self._client.query(promql, at=at, shape=self.spec.query)
        except PrometheusError as exc:
            return Measurement(Phase.ERROR, None, str(exc))
        return _judge(result, when, live=at is None)

    def _render(self, ctx: SignalContext) -> str:
        """The query for `ctx`'s template variables, rendered once per distinct variables (errors are not kept)."""
        variables = ctx.template_variables()
        key = tuple(variables.items())
        promql = self._rendered.get(key)
        if promql is None:
            promql = render_promql(self.spec.query, variables)
            if len(self._rendered) >= _RENDERED_MAX:
                self._rendered.clear()
            self._rendered[key] = promql
        return promql


def _judge(result: QueryResult, when: str, *, live: bool) -> Measurement:
    """The Measurement for a successful query result (`when` is "" or " at <time>" for messages; `live`
    when the query was for now, so an empty answer may still fill)."""
    samples = result.samples
    details: dict[str, float] = {"series": float(len(samples))}
    if result.result_type in ("matrix", "string"):
        kind = "range vector" if result.result_type == "matrix" else "string"
        return Measurement(Phase.ERROR, None, f"the query returned a {kind}, not one number: use an instant "
                           "expression such as rate(x[1m])", details=details)
    if not samples:
        return Measurement(Phase.PENDING if live else Phase.INCONCLUSIVE, None,
                           f"the query returned no data{when} (empty result: no matching "
                           "series, or no samples yet)", details=details)
    if len(samples) > 1:
        shown = tuple(excerpt(f"{_labels_text(s.labels)} {s.value:g}") for s in samples[:_SERIES_IN_EVIDENCE])
        return Measurement(Phase.INCONCLUSIVE, None,
                           f"the query returned {len(samples)} series{when}, which is ambiguous: aggregate it to one "
                           "value, e.g. sum(...) or max(...)", evidence=shown, details=details)
    value = samples[0].value
    if math.isnan(value):
        return Measurement(Phase.INCONCLUSIVE, None, f"the query returned NaN{when} (e.g. 0/0: no traffic to "
                           "divide by)", details=details)
    if math.isinf(value):
        return Measurement(Phase.INCONCLUSIVE, None, f"the query returned {value:+g}{when} (a division by zero)",
                           details=details)
    warning = f" (Prometheus warns: {result.warnings[0]})" if result.warnings else ""
    return Measurement(Phase.OK, value, one_line(f"query returned {value:.6g}{when}{warning}"), details=details)
