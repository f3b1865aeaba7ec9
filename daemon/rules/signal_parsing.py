"""The `spec.signals` part of a policy: one provider per signal, checked field by field."""

from __future__ import annotations

import re

import yaml

from daemon.rules.expressions import SignalType, is_identifier
from daemon.rules.fields import FieldReader
from daemon.rules.limits import MAX_SIGNALS_PER_POLICY
from daemon.rules.matchers import MAX_MATCHERS, Matcher, MatcherError, parse_matcher
from daemon.rules.model import (
    AlertLabels,
    AlertScope,
    AlertsSignal,
    BaselineMode,
    HttpSignal,
    JsonExpectation,
    LogsSignal,
    PrometheusSignal,
    Provider,
    SignalSpec,
    Source,
    WebSocketSignal,
)
from daemon.rules.templates import Language
from daemon.rules.yamlnodes import node_line

PROVIDERS = ("prometheus", "logs", "http", "websocket", "alerts")
_JSON_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\['[^']*'\])*")
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class SignalReader(FieldReader):
    """`FieldReader` plus the signals of a policy and their providers."""

    def _signals(self, node: yaml.Node) -> tuple[dict[str, SignalSpec], dict[str, SignalType]]:
        """The valid signals, and the CEL type of every signal *name* (valid or not), so a broken
        signal does not also make every rule that names it an "unknown signal" error."""
        signals: dict[str, SignalSpec] = {}
        types: dict[str, SignalType] = {}
        entries = self._free_mapping(node, "spec.signals")
        if entries is not None and not entries:
            self._error_at(node, "spec.signals", "a policy needs at least one signal")
        if entries is not None and len(entries) > MAX_SIGNALS_PER_POLICY:
            self._error_at(node, "spec.signals",
                           f"{len(entries)} signals, over the limit of {MAX_SIGNALS_PER_POLICY} per policy")
            # names still get a type, so the rules that use them do not also report "unknown signal"
            types.update((name, SignalType.NUMBER) for name, _, _ in entries if is_identifier(name))
            return signals, types
        for name, key_node, value in entries or ():
            path = f"spec.signals.{name}"
            if not is_identifier(name):
                self._error_at(
                    key_node,
                    path,
                    f'"{name}" cannot name a signal (letters, digits and _, not starting with a digit; '
                    'not a CEL keyword and not "baseline")',
                )
                continue
            types[name] = SignalType.NUMBER
            fields = self._mapping(value, path, required=(), optional=PROVIDERS, what="provider")
            if fields is None:
                continue
            if len(fields) != 1:
                if fields:
                    found = ", ".join(sorted(fields))
                    self._error_at(value, path, f"has {len(fields)} providers ({found}); a signal has exactly one")
                elif not (isinstance(value, yaml.MappingNode) and value.value):  # unknown keys were reported
                    self._error_at(value, path, f"needs a provider (one of {', '.join(sorted(PROVIDERS))})")
                continue
            kind, provider_node = next(iter(fields.items()))
            provider = self._provider(kind, provider_node, f"{path}.{kind}")
            if provider is None:
                continue
            spec = SignalSpec(name, provider, Source(self.file, node_line(key_node)))
            signals[name] = spec
            types[name] = spec.type
        return signals, types

    def _provider(self, kind: str, node: yaml.Node, path: str) -> Provider | None:
        before = len(self.errors)
        if kind == "prometheus":
            fields = self._mapping(node, path, required=("query",), optional=("baseline",))
            if fields is None or "query" not in fields:
                return None
            query = self._template(fields["query"], f"{path}.query", Language.PROMQL)
            baseline = None
            if "baseline" in fields:
                text = self._str(fields["baseline"], f"{path}.baseline")
                if text is not None and text not in {m.value for m in BaselineMode}:
                    self._error_at(fields["baseline"], f"{path}.baseline",
                                   f'"{text}" is not a baseline (use previous, stable or concurrent)')
                elif text is not None:
                    baseline = BaselineMode(text)
            if query is None or len(self.errors) > before:
                return None
            return PrometheusSignal(query, baseline)
        if kind == "logs":
            fields = self._mapping(node, path, required=("pattern",), optional=("container",))
            if fields is None or "pattern" not in fields:
                return None
            pattern = self._regex(fields["pattern"], f"{path}.pattern")
            container = self._str(fields["container"], f"{path}.container") if "container" in fields else None
            if pattern is None or len(self.errors) > before:
                return None
            return LogsSignal(pattern, container)
        if kind == "http":
            return self._http(node, path)
        if kind == "alerts":
            return self._alerts(node, path)
        return self._websocket(node, path)

    def _alerts(self, node: yaml.Node, path: str) -> AlertsSignal | None:
        before = len(self.errors)
        fields = self._mapping(node, path, required=("matchers",), optional=("scope", "labels"))
        if fields is None or "matchers" not in fields:
            return None
        items = self._list(fields["matchers"], f"{path}.matchers")
        if not items and isinstance(fields["matchers"], yaml.SequenceNode):
            self._error_at(fields["matchers"], f"{path}.matchers",
                           'needs at least one matcher (for example \'alertname="HighErrorRate"\')')
        if len(items) > MAX_MATCHERS:
            self._error_at(fields["matchers"], f"{path}.matchers",
                           f"{len(items)} matchers, over the limit of {MAX_MATCHERS}")
            items = []
        matchers: list[Matcher] = []
        for index, item in enumerate(items):
            text = self._str(item, f"{path}.matchers[{index}]")
            if text is None:
                continue
            try:
                matchers.append(parse_matcher(text))
            except MatcherError as exc:
                self._error_at(item, f"{path}.matchers[{index}]", str(exc))
        scope = AlertScope.POD
        if "scope" in fields:
            text = self._str(fields["scope"], f"{path}.scope")
            if text is not None and text not in {s.value for s in AlertScope}:
                self._error_at(fields["scope"], f"{path}.scope",
                               f'"{text}" is not a scope (use {", ".join(s.value for s in AlertScope)})')
            elif text is not None:
                scope = AlertScope(text)
        labels = AlertLabels()
        if "labels" in fields:
            names = self._mapping(fields["labels"], f"{path}.labels", required=(),
                                  optional=("namespace", "pod", "deployment"))
            chosen: dict[str, str] = {}
            for key, value_node in (names or {}).items():
                text = self._str(value_node, f"{path}.labels.{key}")
                if text is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
                    self._error_at(value_node, f"{path}.labels.{key}", f'"{text}" is not a label name')
                elif text is not None:
                    chosen[key] = text
            labels = AlertLabels(**chosen)
        if len(self.errors) > before:
            return None
        return AlertsSignal(tuple(matchers), scope, labels)

    def _http(self, node: yaml.Node, path: str) -> HttpSignal | None:
        before = len(self.errors)
        fields = self._mapping(
            node, path, required=("url",), optional=("method", "expectStatus", "timeout", "expectBody", "expectJson")
        )
        if fields is None or "url" not in fields:
            return None
        url = self._url(fields["url"], f"{path}.url", ("http", "https"))
        method = "GET"
        if "method" in fields:
            text = self._str(fields["method"], f"{path}.method")
            if text is not None and text not in _HTTP_METHODS:
                self._error_at(
                    fields["method"], f"{path}.method", f'"{text}" is not an HTTP method ({", ".join(_HTTP_METHODS)})'
                )
            method = text or method
        status = 200
        if "expectStatus" in fields:
            number = self._int(fields["expectStatus"], f"{path}.expectStatus")
            if number is not None and not 100 <= number <= 599:
                self._error_at(fields["expectStatus"], f"{path}.expectStatus", f"{number} is not an HTTP status")
            status = number or status
        timeout = self._duration(fields.get("timeout"), f"{path}.timeout", 2.0, positive=True)
        body = self._regex(fields["expectBody"], f"{path}.expectBody") if "expectBody" in fields else None
        expectation = (
            self._json_expectation(fields["expectJson"], f"{path}.expectJson") if "expectJson" in fields else None
        )
        if url is None or len(self.errors) > before:
            return None
        return HttpSignal(url, method, status, timeout, body, expectation)

    def _json_expectation(self, node: yaml.Node, path: str) -> JsonExpectation | None:
        fields = self._mapping(node, path, required=("path", "equals"), optional=())
        if fields is None or "path" not in fields or "equals" not in fields:
            return None
        json_path = self._str(fields["path"], f"{path}.path")
        if json_path is not None and not _JSON_PATH.fullmatch(json_path):
            self._error_at(
                fields["path"],
                f"{path}.path",
                f'"{json_path}" is not a JSON path (for example $.status or $.items[0].id)',
            )
            return None
        if json_path is None:
            return None
        return JsonExpectation(json_path, self._constructor.construct_object(fields["equals"], deep=True))

    def _websocket(self, node: yaml.Node, path: str) -> WebSocketSignal | None:
        before = len(self.errors)
        fields = self._mapping(node, path, required=("url",), optional=("send", "expect", "timeout"))
        if fields is None or "url" not in fields:
            return None
        url = self._url(fields["url"], f"{path}.url", ("ws", "wss"))
        send = self._str(fields["send"], f"{path}.send") if "send" in fields else None
        expect = self._regex(fields["expect"], f"{path}.expect") if "expect" in fields else None
        timeout = self._duration(fields.get("timeout"), f"{path}.timeout", 2.0, positive=True)
        if url is None or len(self.errors) > before:
            return None
        return WebSocketSignal(url, send, expect, timeout)
