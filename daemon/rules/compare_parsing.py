"""`spec.compare`: the statistical comparisons of a policy, checked against its signals."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from daemon.rules.expressions import is_identifier
from daemon.rules.model import BaselineMode, ComparisonSpec, Direction, PrometheusSignal, SignalSpec, Source
from daemon.rules.signal_parsing import SignalReader
from daemon.rules.yamlnodes import describe_node, node_line

TESTS = ("mann-whitney",)
"""Statistical tests a comparison may name."""
MAX_COMPARISONS_PER_POLICY = 20
"""Each comparison costs two range queries per evaluation."""
MIN_SAMPLES_FLOOR = 5
"""Below this, no rank test can reach any usual confidence: `minSamples` must be at least this."""
MIN_STEP = 1.0
"""Seconds: range queries finer than this only repeat the same scrape."""


class ComparisonReader(SignalReader):
    """`SignalReader` plus `spec.compare`."""

    def _comparisons(self, node: yaml.Node, signals: Mapping[str, SignalSpec],
                     signal_names: Mapping[str, object]) -> tuple[dict[str, ComparisonSpec], frozenset[str]]:
        """The valid comparisons, and every comparison *name* (valid or not), so a broken one does not also
        make the rules that use it report an unknown signal."""
        comparisons: dict[str, ComparisonSpec] = {}
        names: set[str] = set()
        entries = self._free_mapping(node, "spec.compare") or []
        if len(entries) > MAX_COMPARISONS_PER_POLICY:
            self._error_at(node, "spec.compare", f"{len(entries)} comparisons, over the limit of "
                                                 f"{MAX_COMPARISONS_PER_POLICY} per policy")
            return comparisons, frozenset(name for name, _, _ in entries if is_identifier(name))
        for name, key_node, value in entries:
            path = f"spec.compare.{name}"
            if not is_identifier(name):
                self._error_at(key_node, path, f'"{name}" cannot name a comparison (letters, digits and _, not '
                                               'starting with a digit; not a CEL keyword)')
                continue
            if name in signal_names:
                self._error_at(key_node, path, f'"{name}" is already the name of a signal: give the comparison '
                                               "its own name")
                continue
            names.add(name)
            spec = self._comparison(name, value, path, signals, Source(self.file, node_line(key_node)))
            if spec is not None:
                comparisons[name] = spec
        return comparisons, frozenset(names)

    def _comparison(self, name: str, node: yaml.Node, path: str, signals: Mapping[str, SignalSpec],
                    source: Source) -> ComparisonSpec | None:
        fields = self._mapping(node, path, required=("signal", "baseline", "test"),
                               optional=("direction", "confidence", "minSamples", "margin", "step"))
        if fields is None:
            return None
        before = len(self.errors)
        signal = self._str(fields["signal"], f"{path}.signal") if "signal" in fields else None
        if signal is not None and signal not in signals:
            self._error_at(fields["signal"], f"{path}.signal", f'unknown signal "{signal}" (known signals: '
                                                                f"{', '.join(sorted(signals)) or 'none defined'})")
        elif signal is not None and not isinstance(signals[signal].provider, PrometheusSignal):
            self._error_at(fields["signal"], f"{path}.signal", f'signal "{signal}" is not a prometheus signal: only '
                                                                "a query can be sampled over a window")
        baseline = self._choice(fields.get("baseline"), f"{path}.baseline", ("concurrent", "stable"))
        self._choice(fields.get("test"), f"{path}.test", TESTS)
        direction = self._choice(fields.get("direction"), f"{path}.direction", ("increase", "decrease"))
        confidence = self._fraction(fields.get("confidence"), f"{path}.confidence", 0.95, upper_open=True)
        margin = self._fraction(fields.get("margin"), f"{path}.margin", 0.1, upper_open=False)
        min_samples = 20
        if "minSamples" in fields:
            number = self._int(fields["minSamples"], f"{path}.minSamples")
            if number is not None and not MIN_SAMPLES_FLOOR <= number <= 1000:
                self._error_at(fields["minSamples"], f"{path}.minSamples",
                               f"{number} is out of range: use {MIN_SAMPLES_FLOOR} to 1000 (fewer samples cannot "
                               "show a significant difference)")
            elif number is not None:
                min_samples = number
        step = self._duration(fields.get("step"), f"{path}.step", 60.0, positive=True)
        if "step" in fields and 0 < step < MIN_STEP:
            self._error_at(fields["step"], f"{path}.step", f"must be at least {MIN_STEP:g}s")
        if signal is None or baseline is None or len(self.errors) > before:
            return None
        return ComparisonSpec(name, signal, BaselineMode(baseline), source,
                              Direction(direction) if direction else Direction.INCREASE,
                              confidence, min_samples, margin, step)

    def _choice(self, node: yaml.Node | None, path: str, choices: tuple[str, ...]) -> str | None:
        if node is None:
            return None
        text = self._str(node, path)
        if text is not None and text not in choices:
            self._error_at(node, path, f'"{text}" is not a choice here (use {" or ".join(choices)})')
            return None
        return text

    def _fraction(self, node: yaml.Node | None, path: str, default: float, *, upper_open: bool) -> float:
        """A number in (0, 1) (`upper_open`, a confidence) or not negative (a margin)."""
        if node is None:
            return default
        value = None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":float", ":int")):
            value = float(self._constructor.construct_object(node))
        if value is None:
            self._error_at(node, path, f"expected a number, got {describe_node(node)}")
            return default
        if upper_open and not 0 < value < 1:
            self._error_at(node, path, f"{value:g} is out of range: use a number between 0 and 1, such as 0.95")
            return default
        if not upper_open and not 0 <= value < float("inf"):
            self._error_at(node, path, f"{value:g} is out of range: use 0 or more (0.1 is 10% worse)")
            return default
        return value
