"""Load rule files into `RollbackPolicy` objects, strictly, reporting every problem with file, line and field.

A file may hold several YAML documents (`---`); a directory contributes its `*.yaml` and `*.yml` files,
sorted by name (not recursive). The YAML is composed into nodes (never constructed into Python
objects first), so every error carries the line of the offending key or value:

    rules/backend.yaml:14: spec.rules[2].for: "5 minutes" is not a duration (use 5m)

Strict means: unknown keys, duplicate keys, wrong types, bad durations, unknown actions or providers,
invalid regexes and templates, CEL syntax and type errors, names a `when` uses that no signal
defines, `baseline.x` without a baseline, `rollback` as an `onInconclusive`/`onError` choice, and
duplicate rule or policy names are all errors. All errors of a file are collected; a file with any
error contributes no policy, so a caller can keep its last good rules.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from daemon.rules.durations import DurationError, parse_duration
from daemon.rules.expressions import ExpressionError, SignalType, compile_expression, is_identifier
from daemon.rules.model import (
    API_VERSION,
    KIND,
    RULE_ACTIONS,
    Action,
    AnalysisTiming,
    BaselineMode,
    HttpSignal,
    JsonExpectation,
    LoadResult,
    LogsSignal,
    NotifyTargets,
    PagerDutyTarget,
    PrometheusSignal,
    Provider,
    RollbackJob,
    RollbackPolicy,
    Rule,
    RuleError,
    SecretKeyRef,
    Selector,
    SignalSpec,
    SlackTarget,
    Source,
    Unavailable,
    WebSocketSignal,
)
from daemon.rules.templates import Language, check_template

_STR = "tag:yaml.org,2002:str"
_TAG_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a timestamp",
}
_PROVIDERS = ("prometheus", "logs", "http", "websocket")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_RULE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_JSON_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\['[^']*'\])*")
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_UNAVAILABLE_CHOICES = ", ".join(u.value for u in Unavailable)


def load_rules(paths: Iterable[str | Path]) -> LoadResult:
    """Load every rule file named in `paths` (files, or directories of `*.yaml`/`*.yml` files).

    Policy names must be unique across all files; a later duplicate is an error in its file.
    """
    policies: list[RollbackPolicy] = []
    errors: list[RuleError] = []
    files: list[str] = []
    defined: dict[str, Source] = {}
    for path in paths:
        found, problem = _expand(Path(path), str(path))
        if problem is not None:
            errors.append(problem)
            continue
        for file in found:
            files.append(file)
            result = load_file(file)
            file_errors = list(result.errors)
            for policy in result.policies:
                first = defined.get(policy.name)
                if first is not None:
                    file_errors.append(
                        RuleError(
                            file,
                            policy.source.line,
                            "metadata.name",
                            f'policy "{policy.name}" is already defined at {first}',
                        )
                    )
            if file_errors:
                errors.extend(sorted(file_errors, key=lambda e: e.line or 0))
                continue
            for policy in result.policies:
                defined[policy.name] = policy.source
            policies.extend(result.policies)
    return LoadResult(tuple(policies), tuple(errors), tuple(files))


def load_file(path: str | Path) -> LoadResult:
    """Load one rule file; `path` is shown in errors exactly as given."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LoadResult((), (RuleError(name, None, "", f"cannot read: {reason}"),), (name,))
    loader = _FileLoader(name)
    policies = loader.load(text)
    errors = tuple(sorted(loader.errors, key=lambda e: e.line or 0))
    return LoadResult(() if errors else tuple(policies), errors, (name,))


def _expand(path: Path, shown: str) -> tuple[list[str], RuleError | None]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            return [], RuleError(shown, None, "", "no *.yaml or *.yml files in this directory")
        return [str(p) for p in files], None
    if not path.exists():
        return [], RuleError(shown, None, "", "no such file or directory")
    return [shown], None


class _FileLoader:
    """Turns the documents of one file into policies, appending every problem to `errors`."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[RuleError] = []
        self._constructor = yaml.SafeLoader("")

    # ---- documents ------------------------------------------------------------------------------

    def load(self, text: str) -> list[RollbackPolicy]:
        policies: list[RollbackPolicy] = []
        names: dict[str, int] = {}
        try:
            for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
                if document is None or (isinstance(document, yaml.ScalarNode) and document.tag.endswith(":null")):
                    continue
                policy = self._policy(document)
                if policy is None:
                    continue
                if policy.name in names:
                    self._error(
                        policy.source.line,
                        "metadata.name",
                        f'policy "{policy.name}" is already defined at line {names[policy.name]}',
                    )
                    continue
                names[policy.name] = policy.source.line
                policies.append(policy)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = ": ".join(part for part in (exc.context, exc.problem) if part)
            self.errors.append(RuleError(self.file, line, "", f"invalid YAML: {problem}"))
        except yaml.YAMLError as exc:
            self.errors.append(RuleError(self.file, None, "", f"invalid YAML: {exc}"))
        return policies

    def _policy(self, node: yaml.Node) -> RollbackPolicy | None:
        before = len(self.errors)
        if not isinstance(node, yaml.MappingNode):
            expected = f"expected a {KIND} (a mapping of apiVersion, kind, metadata and spec)"
            self._error_at(node, "", f"{expected}, got {_describe(node)}")
            return None
        top = self._mapping(node, "", required=("apiVersion", "kind", "metadata", "spec"), optional=())
        if top is None:
            return None
        if "apiVersion" in top:
            api_version = self._str(top["apiVersion"], "apiVersion")
            if api_version is not None and api_version != API_VERSION:
                self._error_at(top["apiVersion"], "apiVersion", f'"{api_version}" is not supported (use {API_VERSION})')
        if "kind" in top:
            kind = self._str(top["kind"], "kind")
            if kind is not None and kind != KIND:
                self._error_at(top["kind"], "kind", f'"{kind}" is not supported (use {KIND})')
        name = self._metadata(top["metadata"]) if "metadata" in top else None
        spec = self._spec(top["spec"]) if "spec" in top else None
        if name is None or spec is None or len(self.errors) > before:
            return None
        selector, analysis, signals, rules, on_failure, job, notify = spec
        return RollbackPolicy(
            name=name,
            selector=selector,
            analysis=analysis,
            signals=signals,
            rules=rules,
            source=Source(self.file, _line(node)),
            on_failure=on_failure,
            on_rollback_job=job,
            notify=notify,
        )

    def _metadata(self, node: yaml.Node) -> str | None:
        fields = self._mapping(node, "metadata", required=("name",), optional=("labels", "annotations"))
        if fields is None:
            return None
        for extra in ("labels", "annotations"):
            if extra in fields:
                self._string_map(fields[extra], f"metadata.{extra}")
        if "name" not in fields:
            return None
        name = self._str(fields["name"], "metadata.name")
        if name is not None and not _DNS_SUBDOMAIN.fullmatch(name):
            self._error_at(
                fields["name"],
                "metadata.name",
                f'"{name}" is not a valid name (lowercase letters, digits, "-" and ".")',
            )
            return None
        return name

    def _spec(
        self, node: yaml.Node
    ) -> (
        tuple[
            Selector,
            AnalysisTiming,
            Mapping[str, SignalSpec],
            tuple[Rule, ...],
            Action,
            RollbackJob | None,
            NotifyTargets,
        ]
        | None
    ):
        fields = self._mapping(
            node,
            "spec",
            required=("selector", "signals", "rules"),
            optional=("analysis", "onFailure", "onRollback", "notify"),
        )
        if fields is None:
            return None
        selector = self._selector(fields["selector"]) if "selector" in fields else Selector()
        analysis = self._analysis(fields["analysis"]) if "analysis" in fields else AnalysisTiming()
        signals, types = self._signals(fields["signals"]) if "signals" in fields else ({}, {})
        rules = self._rules(fields["rules"], signals, types) if "rules" in fields else ()
        on_failure = self._on_failure(fields["onFailure"]) if "onFailure" in fields else Action.NOTIFY
        job = self._on_rollback(fields["onRollback"]) if "onRollback" in fields else None
        notify = self._notify(fields["notify"]) if "notify" in fields else NotifyTargets()
        return selector, analysis, signals, rules, on_failure, job, notify

    # ---- spec parts -----------------------------------------------------------------------------

    def _selector(self, node: yaml.Node) -> Selector:
        fields = self._mapping(node, "spec.selector", required=(), optional=("namespaces", "matchLabels"))
        if fields is None:
            return Selector()
        namespaces: list[str] = []
        if "namespaces" in fields:
            for index, item in enumerate(self._list(fields["namespaces"], "spec.selector.namespaces")):
                path = f"spec.selector.namespaces[{index}]"
                namespace = self._str(item, path)
                if namespace is not None and not _DNS_LABEL.fullmatch(namespace):
                    self._error_at(item, path, f'"{namespace}" is not a namespace name (lowercase RFC 1123 label)')
                elif namespace is not None:
                    namespaces.append(namespace)
        labels = self._string_map(fields["matchLabels"], "spec.selector.matchLabels") if "matchLabels" in fields else {}
        return Selector(tuple(namespaces), labels)

    def _analysis(self, node: yaml.Node) -> AnalysisTiming:
        fields = self._mapping(node, "spec.analysis", required=(), optional=("initialDelay", "interval", "bakeTime"))
        default = AnalysisTiming()
        if fields is None:
            return default
        initial_delay = self._duration(fields.get("initialDelay"), "spec.analysis.initialDelay", default.initial_delay)
        interval = self._duration(fields.get("interval"), "spec.analysis.interval", default.interval, positive=True)
        bake_time = self._duration(fields.get("bakeTime"), "spec.analysis.bakeTime", default.bake_time)
        return AnalysisTiming(initial_delay, interval, bake_time)

    def _signals(self, node: yaml.Node) -> tuple[dict[str, SignalSpec], dict[str, SignalType]]:
        """The valid signals, and the CEL type of every signal *name* (valid or not), so a broken
        signal does not also make every rule that names it an "unknown signal" error."""
        signals: dict[str, SignalSpec] = {}
        types: dict[str, SignalType] = {}
        entries = self._free_mapping(node, "spec.signals")
        if entries is not None and not entries:
            self._error_at(node, "spec.signals", "a policy needs at least one signal")
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
            fields = self._mapping(value, path, required=(), optional=_PROVIDERS, what="provider")
            if fields is None:
                continue
            if len(fields) != 1:
                if fields:
                    found = ", ".join(sorted(fields))
                    self._error_at(value, path, f"has {len(fields)} providers ({found}); a signal has exactly one")
                elif not (isinstance(value, yaml.MappingNode) and value.value):  # unknown keys were reported
                    self._error_at(value, path, f"needs a provider (one of {', '.join(sorted(_PROVIDERS))})")
                continue
            kind, provider_node = next(iter(fields.items()))
            provider = self._provider(kind, provider_node, f"{path}.{kind}")
            if provider is None:
                continue
            spec = SignalSpec(name, provider, Source(self.file, _line(key_node)))
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
                    self._error_at(fields["baseline"], f"{path}.baseline", f'"{text}" is not a baseline (use previous)')
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
        return self._websocket(node, path)

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

    def _rules(
        self, node: yaml.Node, signals: Mapping[str, SignalSpec], types: Mapping[str, SignalType]
    ) -> tuple[Rule, ...]:
        items = self._list(node, "spec.rules")
        if not items and isinstance(node, yaml.SequenceNode):
            self._error_at(node, "spec.rules", "a policy needs at least one rule")
        baselines = frozenset(name for name, spec in signals.items() if spec.has_baseline)
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            path = f"spec.rules[{index}]"
            fields = self._mapping(
                item, path, required=("name", "when", "action"), optional=("for", "onInconclusive", "onError")
            )
            if fields is None:
                continue
            before = len(self.errors)
            name = self._str(fields["name"], f"{path}.name") if "name" in fields else None
            if name is not None and not _RULE_NAME.fullmatch(name):
                self._error_at(
                    fields["name"],
                    f"{path}.name",
                    f'"{name}" is not a valid rule name (letters, digits, "-", "_", ".")',
                )
            elif name is not None and name in seen:
                self._error_at(
                    fields["name"], f"{path}.name", f'duplicate rule name "{name}" (first at line {seen[name]})'
                )
            elif name is not None:
                seen[name] = _line(fields["name"])
            when = None
            if "when" in fields:
                text = self._str(fields["when"], f"{path}.when")
                if text is not None:
                    try:
                        when = compile_expression(text, types, baselines=baselines)
                    except ExpressionError as exc:
                        when_node = fields["when"]
                        block = 1 if isinstance(when_node, yaml.ScalarNode) and when_node.style in ("|", ">") else 0
                        for problem in exc.problems:
                            line = _line(when_node) + block + (problem.line - 1 if block else 0)
                            self.errors.append(RuleError(self.file, line, f"{path}.when", problem.message))
            action = self._action(fields["action"], f"{path}.action") if "action" in fields else None
            for_ = self._duration(fields.get("for"), f"{path}.for", 0.0)
            on_inconclusive = self._unavailable(fields.get("onInconclusive"), f"{path}.onInconclusive")
            on_error = self._unavailable(fields.get("onError"), f"{path}.onError")
            if name is None or when is None or action is None or len(self.errors) > before:
                continue
            rules.append(Rule(name, when, action, Source(self.file, _line(item)), for_, on_inconclusive, on_error))
        return tuple(rules)

    def _action(self, node: yaml.Node, path: str) -> Action | None:
        text = self._str(node, path)
        if text is None:
            return None
        if text not in {a.value for a in RULE_ACTIONS}:
            self._error_at(node, path, f'"{text}" is not an action (use rollback, review or notify)')
            return None
        return Action(text)

    def _unavailable(self, node: yaml.Node | None, path: str) -> Unavailable:
        if node is None:
            return Unavailable.HOLD
        text = self._str(node, path)
        if text == "rollback":
            self._error_at(
                node,
                path,
                "rollback is not allowed here: a signal that cannot be measured must never roll back "
                f"(use {_UNAVAILABLE_CHOICES})",
            )
        elif text is not None and text not in {u.value for u in Unavailable}:
            self._error_at(node, path, f'"{text}" is not a choice here (use {_UNAVAILABLE_CHOICES})')
        elif text is not None:
            return Unavailable(text)
        return Unavailable.HOLD

    def _on_failure(self, node: yaml.Node) -> Action:
        fields = self._mapping(node, "spec.onFailure", required=("action",), optional=())
        if fields is None or "action" not in fields:
            return Action.NOTIFY
        return self._action(fields["action"], "spec.onFailure.action") or Action.NOTIFY

    def _on_rollback(self, node: yaml.Node) -> RollbackJob | None:
        fields = self._mapping(node, "spec.onRollback", required=("job",), optional=())
        if fields is None or "job" not in fields:
            return None
        path = "spec.onRollback.job"
        job = self._mapping(fields["job"], path, required=("command",), optional=("timeout", "proceedOnFailure"))
        if job is None or "command" not in job:
            return None
        command: list[str] = []
        items = self._list(job["command"], f"{path}.command")
        if not items and isinstance(job["command"], yaml.SequenceNode):
            self._error_at(job["command"], f"{path}.command", "needs at least the program to run")
        for index, item in enumerate(items):
            part = self._str(item, f"{path}.command[{index}]")
            if part is not None:
                command.append(part)
        timeout = self._duration(job.get("timeout"), f"{path}.timeout", 300.0, positive=True)
        proceed = (
            self._bool(job["proceedOnFailure"], f"{path}.proceedOnFailure") if "proceedOnFailure" in job else False
        )
        return RollbackJob(tuple(command), timeout, bool(proceed))

    def _notify(self, node: yaml.Node) -> NotifyTargets:
        fields = self._mapping(node, "spec.notify", required=(), optional=("slack", "pagerduty"))
        if fields is None:
            return NotifyTargets()
        slack = None
        if "slack" in fields:
            slack_fields = self._mapping(fields["slack"], "spec.notify.slack", required=("channel",), optional=())
            if slack_fields and "channel" in slack_fields:
                channel = self._str(slack_fields["channel"], "spec.notify.slack.channel")
                slack = SlackTarget(channel) if channel else None
        pagerduty = None
        if "pagerduty" in fields:
            path = "spec.notify.pagerduty"
            pd_fields = self._mapping(fields["pagerduty"], path, required=("routingKeyFrom",),
                                      optional=("resolveOnRecovery",))
            resolve = False
            if pd_fields and "resolveOnRecovery" in pd_fields:
                resolve = bool(self._bool(pd_fields["resolveOnRecovery"], f"{path}.resolveOnRecovery"))
            if pd_fields and "routingKeyFrom" in pd_fields:
                ref = self._mapping(
                    pd_fields["routingKeyFrom"], f"{path}.routingKeyFrom", required=("secret", "key"), optional=()
                )
                if ref and "secret" in ref and "key" in ref:
                    secret = self._str(ref["secret"], f"{path}.routingKeyFrom.secret")
                    key = self._str(ref["key"], f"{path}.routingKeyFrom.key")
                    if secret and key:
                        pagerduty = PagerDutyTarget(SecretKeyRef(secret, key), resolve)
        return NotifyTargets(slack, pagerduty)

    # ---- typed values ---------------------------------------------------------------------------

    def _mapping(
        self,
        node: yaml.Node,
        path: str,
        *,
        required: Sequence[str],
        optional: Sequence[str],
        what: str = "field",
    ) -> dict[str, yaml.Node] | None:
        """The known keys of a mapping node. Unknown, duplicate and missing keys are errors."""
        entries = self._free_mapping(node, path)
        if entries is None:
            return None
        allowed = (*required, *optional)
        fields: dict[str, yaml.Node] = {}
        for key, key_node, value in entries:
            if key in allowed:
                fields[key] = value
                continue
            guess = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            plural = "providers" if what == "provider" else "fields"
            known = ", ".join(sorted(allowed)) or "none"
            self._error_at(key_node, _join(path, key), f"unknown {what} ({hint}known {plural}: {known})")
        for key in required:
            if key not in fields:
                self._error_at(node, _join(path, key), "required field is missing")
        return fields

    def _free_mapping(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        """(key, key node, value node) of a mapping with any string keys; duplicates are errors."""
        if not isinstance(node, yaml.MappingNode):
            self._error_at(node, path or "(document)", f"expected a mapping, got {_describe(node)}")
            return None
        entries: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self._error_at(key_node, path or "(document)", f"keys must be strings, got {_describe(key_node)}")
                continue
            key = str(key_node.value)
            if key in seen:
                self._error_at(key_node, _join(path, key), f"duplicate key (first at line {seen[key]})")
                continue
            seen[key] = _line(key_node)
            entries.append((key, key_node, value))
        return entries

    def _string_map(self, node: yaml.Node, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, _, value in self._free_mapping(node, path) or ():
            text = self._str(value, _join(path, key))
            if text is not None:
                out[key] = text
        return out

    def _list(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self._error_at(node, path, f"expected a list, got {_describe(node)}")
            return []
        return list(node.value)

    def _str(self, node: yaml.Node, path: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
            return str(node.value)
        hint = ""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":bool", ":int", ":float", ":null")):
            hint = f'; quote it: "{node.value}"'
        self._error_at(node, path, f"expected a string, got {_describe(node)}{hint}")
        return None

    def _int(self, node: yaml.Node, path: str) -> int | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
            value = self._constructor.construct_object(node)
            if isinstance(value, int):
                return value
        self._error_at(node, path, f"expected a whole number, got {_describe(node)}")
        return None

    def _bool(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return bool(self._constructor.construct_object(node))
        self._error_at(node, path, f"expected true or false, got {_describe(node)}")
        return None

    def _duration(self, node: yaml.Node | None, path: str, default: float, *, positive: bool = False) -> float:
        if node is None:
            return default
        value: Any = node.value if isinstance(node, yaml.ScalarNode) and node.tag == _STR else None
        if value is None and isinstance(node, yaml.ScalarNode):
            value = self._constructor.construct_object(node)
        elif value is None:
            value = [] if isinstance(node, yaml.SequenceNode) else {}
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            self._error_at(node, path, str(exc))
            return default
        if positive and seconds <= 0:
            self._error_at(node, path, f'"{value}" must be longer than 0s')
            return default
        return seconds

    def _regex(self, node: yaml.Node, path: str) -> str | None:
        text = self._str(node, path)
        if text is None:
            return None
        try:
            re.compile(text)
        except re.error as exc:
            self._error_at(node, path, f"invalid regex {text!r}: {exc}")
            return None
        return text

    def _template(self, node: yaml.Node, path: str, language: Language) -> str | None:
        text = self._str(node, path)
        if text is None:
            return None
        problems = check_template(text, language)
        for problem in problems:
            self._error_at(node, path, problem)
        return None if problems else text

    def _url(self, node: yaml.Node, path: str, schemes: tuple[str, ...]) -> str | None:
        text = self._template(node, path, Language.URL)
        if text is None:
            return None
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in schemes:
            allowed = " or ".join(f"{s}://" for s in schemes)
            self._error_at(node, path, f'"{text}" must start with {allowed}')
            return None
        return text

    # ---- errors ---------------------------------------------------------------------------------

    def _error_at(self, node: yaml.Node, path: str, message: str) -> None:
        self._error(_line(node), path, message)

    def _error(self, line: int, path: str, message: str) -> None:
        self.errors.append(RuleError(self.file, line, path, message))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    name = _TAG_NAMES.get(str(node.tag), "a value")
    if node.tag == _STR:
        text = str(node.value)
        return f'{name} ("{text}")' if len(text) <= 40 and "\n" not in text else name
    return f"{name} ({node.value})" if name != "null" else "null"
