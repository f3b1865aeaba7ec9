"""One `RollbackPolicy` document: metadata, selector, timing, rules, actions and notification targets."""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from daemon.rules.compare_parsing import ComparisonReader
from daemon.rules.expressions import ExpressionError, SignalType, compile_expression
from daemon.rules.limits import MAX_RULES_PER_POLICY
from daemon.rules.model import (
    API_VERSION,
    KIND,
    NOTIFY_PAGEABLE_KINDS,
    NOTIFY_ROUTE_CHANNELS,
    NOTIFY_ROUTE_KINDS,
    RULE_ACTIONS,
    Action,
    AnalysisTiming,
    ComparisonSpec,
    GitOpsMode,
    NotifyTargets,
    PagerDutyTarget,
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
)
from daemon.rules.yamlnodes import describe_node, node_line

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_RULE_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_UNAVAILABLE_CHOICES = ", ".join(u.value for u in Unavailable)


class PolicyReader(ComparisonReader):
    """`ComparisonReader` plus the rest of a policy document."""

    def _policy(self, node: yaml.Node) -> RollbackPolicy | None:
        before = len(self.errors)
        if not isinstance(node, yaml.MappingNode):
            expected = f"expected a {KIND} (a mapping of apiVersion, kind, metadata and spec)"
            self._error_at(node, "", f"{expected}, got {describe_node(node)}")
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
        selector, analysis, signals, rules, on_failure, job, notify, gitops, comparisons = spec
        return RollbackPolicy(
            name=name,
            selector=selector,
            analysis=analysis,
            signals=signals,
            rules=rules,
            source=Source(self.file, node_line(node)),
            on_failure=on_failure,
            on_rollback_job=job,
            notify=notify,
            gitops=gitops,
            comparisons=comparisons,
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
            GitOpsMode,
            Mapping[str, ComparisonSpec],
        ]
        | None
    ):
        fields = self._mapping(
            node,
            "spec",
            required=("selector", "signals", "rules"),
            optional=("analysis", "compare", "onFailure", "onRollback", "notify", "gitops"),
        )
        if fields is None:
            return None
        selector = self._selector(fields["selector"]) if "selector" in fields else Selector()
        analysis = self._analysis(fields["analysis"]) if "analysis" in fields else AnalysisTiming()
        signals, types = self._signals(fields["signals"]) if "signals" in fields else ({}, {})
        comparisons, compared = (self._comparisons(fields["compare"], signals, types) if "compare" in fields
                                 else ({}, frozenset()))
        rules = self._rules(fields["rules"], signals, types, compared) if "rules" in fields else ()
        on_failure = self._on_failure(fields["onFailure"]) if "onFailure" in fields else Action.NOTIFY
        job = self._on_rollback(fields["onRollback"]) if "onRollback" in fields else None
        notify = self._notify(fields["notify"]) if "notify" in fields else NotifyTargets()
        gitops = self._gitops(fields["gitops"]) if "gitops" in fields else GitOpsMode.PAGE
        return selector, analysis, signals, rules, on_failure, job, notify, gitops, comparisons

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
        fields = self._mapping(node, "spec.analysis", required=(), optional=("initialDelay", "interval", "bakeTime",
                                                                                 "pendingGrace", "stableMinAge"))
        default = AnalysisTiming()
        if fields is None:
            return default
        initial_delay = self._duration(fields.get("initialDelay"), "spec.analysis.initialDelay", default.initial_delay)
        interval = self._duration(fields.get("interval"), "spec.analysis.interval", default.interval, positive=True)
        bake_time = self._duration(fields.get("bakeTime"), "spec.analysis.bakeTime", default.bake_time)
        pending_grace = self._duration(fields.get("pendingGrace"), "spec.analysis.pendingGrace", default.pending_grace)
        stable_min_age = self._duration(fields.get("stableMinAge"), "spec.analysis.stableMinAge",
                                        default.stable_min_age)
        return AnalysisTiming(initial_delay, interval, bake_time, pending_grace, stable_min_age)

    def _rules(
        self, node: yaml.Node, signals: Mapping[str, SignalSpec], types: Mapping[str, SignalType],
        comparisons: frozenset[str] = frozenset(),
    ) -> tuple[Rule, ...]:
        items = self._list(node, "spec.rules")
        if not items and isinstance(node, yaml.SequenceNode):
            self._error_at(node, "spec.rules", "a policy needs at least one rule")
        if len(items) > MAX_RULES_PER_POLICY:
            message = f"{len(items)} rules, over the limit of {MAX_RULES_PER_POLICY} per policy"
            self._error_at(node, "spec.rules", message)
            return ()
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
                seen[name] = node_line(fields["name"])
            when = None
            if "when" in fields:
                text = self._str(fields["when"], f"{path}.when")
                if text is not None:
                    try:
                        when = compile_expression(text, types, baselines=baselines, comparisons=comparisons)
                    except ExpressionError as exc:
                        when_node = fields["when"]
                        block = 1 if isinstance(when_node, yaml.ScalarNode) and when_node.style in ("|", ">") else 0
                        for problem in exc.problems:
                            line = node_line(when_node) + block + (problem.line - 1 if block else 0)
                            self.errors.append(RuleError(self.file, line, f"{path}.when", problem.message))
            action = self._action(fields["action"], f"{path}.action") if "action" in fields else None
            for_ = self._duration(fields.get("for"), f"{path}.for", 0.0)
            on_inconclusive = self._unavailable(fields.get("onInconclusive"), f"{path}.onInconclusive")
            on_error = self._unavailable(fields.get("onError"), f"{path}.onError")
            if name is None or when is None or action is None or len(self.errors) > before:
                continue
            rules.append(Rule(name, when, action, Source(self.file, node_line(item)), for_, on_inconclusive, on_error))
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

    def _gitops(self, node: yaml.Node) -> GitOpsMode:
        text = self._str(node, "spec.gitops")
        if text is not None and text not in {m.value for m in GitOpsMode}:
            self._error_at(node, "spec.gitops", f'"{text}" is not a choice here (use page, suspend or undo)')
        elif text is not None:
            return GitOpsMode(text)
        return GitOpsMode.PAGE

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
        fields = self._mapping(node, "spec.notify", required=(), optional=("slack", "pagerduty", "routes"))
        if fields is None:
            return NotifyTargets()
        slack = None
        if "slack" in fields:
            path = "spec.notify.slack"
            slack_fields = self._mapping(fields["slack"], path, required=(), optional=("channel", "webhookFrom"))
            if slack_fields is not None and len(slack_fields) != 1:
                self._error_at(fields["slack"], path, "set exactly one of channel (with the daemon's bot token) "
                                                      "or webhookFrom: {secret: NAME, key: KEY}")
            elif slack_fields and "channel" in slack_fields:
                channel = self._str(slack_fields["channel"], f"{path}.channel")
                slack = SlackTarget(channel) if channel else None
            elif slack_fields:
                webhook = self._secret_ref(slack_fields["webhookFrom"], f"{path}.webhookFrom")
                slack = SlackTarget(webhook_from=webhook) if webhook else None
        pagerduty = None
        if "pagerduty" in fields:
            path = "spec.notify.pagerduty"
            pd_fields = self._mapping(fields["pagerduty"], path, required=("routingKeyFrom",),
                                      optional=("resolveOnRecovery",))
            resolve = False
            if pd_fields and "resolveOnRecovery" in pd_fields:
                resolve = bool(self._bool(pd_fields["resolveOnRecovery"], f"{path}.resolveOnRecovery"))
            if pd_fields and "routingKeyFrom" in pd_fields:
                ref = self._secret_ref(pd_fields["routingKeyFrom"], f"{path}.routingKeyFrom")
                if ref is not None:
                    pagerduty = PagerDutyTarget(ref, resolve)
        routes = self._routes(fields["routes"]) if "routes" in fields else None
        return NotifyTargets(slack, pagerduty, routes)

    def _secret_ref(self, node: yaml.Node, path: str) -> SecretKeyRef | None:
        ref = self._mapping(node, path, required=("secret", "key"), optional=())
        if ref and "secret" in ref and "key" in ref:
            secret = self._str(ref["secret"], f"{path}.secret")
            key = self._str(ref["key"], f"{path}.key")
            if secret and key:
                return SecretKeyRef(secret, key)
        return None

    def _routes(self, node: yaml.Node) -> dict[str, frozenset[str]]:
        """`routes: {<alert kind>: [slack, pagerduty]}`: which channels each named kind goes to."""
        routes: dict[str, frozenset[str]] = {}
        for kind, key_node, value in self._free_mapping(node, "spec.notify.routes") or ():
            path = f"spec.notify.routes.{kind}"
            if kind not in NOTIFY_ROUTE_KINDS:
                self._error_at(key_node, path, f"unknown alert kind (known: {', '.join(NOTIFY_ROUTE_KINDS)})")
                continue
            channels: set[str] = set()
            for index, item in enumerate(self._list(value, path)):
                name = self._str(item, f"{path}[{index}]")
                if name is not None and name not in NOTIFY_ROUTE_CHANNELS:
                    self._error_at(item, f"{path}[{index}]",
                                   f'"{name}" is not a channel (use {" or ".join(NOTIFY_ROUTE_CHANNELS)})')
                elif name == "pagerduty" and kind not in NOTIFY_PAGEABLE_KINDS:
                    self._error_at(item, f"{path}[{index}]", f"{kind} alerts cannot page: PagerDuty has no event "
                                   f"for them (pageable: {', '.join(sorted(NOTIFY_PAGEABLE_KINDS))})")
                elif name is not None:
                    channels.add(name)
            routes[kind] = frozenset(channels)
        return routes
