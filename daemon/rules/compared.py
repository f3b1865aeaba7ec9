"""The results of `spec.compare` comparisons as a rule sees them: CEL values, or why there are none."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from daemon.measurement import Measurement, Phase
from daemon.rules.expressions import ComparisonValue

_FIELDS = ("p", "effect", "samples")


def bind_comparisons(
    names: Iterable[str], measurements: Mapping[str, Measurement]
) -> tuple[dict[str, ComparisonValue], dict[str, float | bool | None], dict[str, tuple[Phase, str]]]:
    """For the comparisons `names`: the CEL values of the conclusive ones, every field shown by name
    (`latency.worse`, `latency.p`, ...; None when inconclusive), and why each other one is unusable."""
    bound: dict[str, ComparisonValue] = {}
    shown: dict[str, float | bool | None] = {}
    unusable: dict[str, tuple[Phase, str]] = {}
    for name in sorted(names):
        measured = measurements.get(name)
        details = measured.details if measured is not None else {}
        if measured is None:
            unusable[name] = (Phase.INCONCLUSIVE, "not measured")
        elif measured.phase is not Phase.OK or not isinstance(measured.value, bool) or any(
                key not in details for key in _FIELDS):
            phase = measured.phase if measured.phase is not Phase.OK else Phase.INCONCLUSIVE
            unusable[name] = (phase, measured.message)
        else:
            bound[name] = ComparisonValue(measured.value, *(float(details[key]) for key in _FIELDS))
        value = bound.get(name)
        shown[f"{name}.worse"] = value.worse if value is not None else None
        for key in _FIELDS:
            shown[f"{name}.{key}"] = float(getattr(value, key)) if value is not None else None
    return bound, shown, unusable
