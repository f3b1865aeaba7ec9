"""The `alerts` signal: matchers and fields checked at load, what counts for a rollout, and the pull
from a real Alertmanager (what it lists, what it does not, and an Alertmanager that is down)."""

from __future__ import annotations

import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.alertmanager import Alert, AlertHub, AlertmanagerClient, AlertPayloadError, counted, parse_webhook
from daemon.clock import SystemClock
from daemon.rules.loader import load_file
from daemon.rules.matchers import parse_matcher
from daemon.rules.model import AlertLabels, AlertScope, AlertsSignal
from daemon.signals.alerts import AlertsProvider
from daemon.signals.base import Measurement, Phase, SignalContext
from sim.alertmanager import AlertmanagerServer

STARTED = 1_700_000_000.0


def ctx(*, started: float = STARTED) -> SignalContext:
    return SignalContext(namespace="staging", deployment="backend", revision=2, pod_template_hash="new222",
                         pod_prefix="backend-new222-", labels={"app": "backend"}, rollout_started_at=started)


def signal(*matchers: str, scope: AlertScope = AlertScope.POD, labels: AlertLabels | None = None) -> AlertsSignal:
    return AlertsSignal(tuple(parse_matcher(m) for m in matchers), scope, labels or AlertLabels())


def alert(name: str, *, starts: float = STARTED + 10, ends: float | None = None, firing: bool = True,
          **labels: str) -> Alert:
    return Alert(f"fp-{name}-{sorted(labels.items())}", {"alertname": name, **labels}, {"summary": f"{name} now"},
                 starts, ends, firing)


def policy_text(alerts_yaml: str) -> str:
    return textwrap.dedent("""\
        apiVersion: rollguard.io/v1
        kind: RollbackPolicy
        metadata: {name: p}
        spec:
          selector: {namespaces: [staging]}
          signals:
            firing:
        """) + textwrap.indent(textwrap.dedent(alerts_yaml).rstrip("\n") + "\n", " " * 6) + (
        '  rules:\n    - {name: r, when: "firing > 0", action: rollback}\n')


def test_an_alerts_signal_loads_with_its_matchers_scope_and_label_names(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text("""\
        alerts:
          matchers: ['alertname=~"HighErrorRate|SlowRequests"', 'severity="critical"', team!=db]
          scope: deployment
          labels: {deployment: app, namespace: kubernetes_namespace}
        """))
    result = load_file(path)
    assert result.errors == ()
    provider = result.policies[0].signals["firing"].provider
    assert isinstance(provider, AlertsSignal)
    assert [str(m) for m in provider.matchers] == ['alertname=~"HighErrorRate|SlowRequests"',
                                                    'severity="critical"', 'team!="db"']
    assert provider.scope is AlertScope.DEPLOYMENT
    assert provider.labels == AlertLabels(namespace="kubernetes_namespace", pod="pod", deployment="app")


@pytest.mark.parametrize(("alerts_yaml", "message"), [
    ("alerts: {matchers: ['severity==\"critical\"']}",
     "spec.signals.firing.alerts.matchers[0]: 'severity==\"critical\"': the value '=\"critical\"' must be quoted "
     "(it holds spaces, quotes, commas, braces or operators)"),
    ("alerts: {matchers: ['alertname=~\"(High\"']}",
     "spec.signals.firing.alerts.matchers[0]: 'alertname=~\"(High\"': invalid regex '(High': missing ), "
     "unterminated subpattern at position 0"),
    ("alerts: {matchers: ['severity=\"critical']}",
     "spec.signals.firing.alerts.matchers[0]: the quoted value starting at character 1 is not closed"),
    ("alerts: {matchers: ['severity']}",
     "spec.signals.firing.alerts.matchers[0]: 'severity' has no operator after 'severity' (use =, !=, =~ or !~)"),
    ("alerts: {matchers: []}",
     "spec.signals.firing.alerts.matchers: needs at least one matcher (for example 'alertname=\"HighErrorRate\"')"),
    ("alerts: {matchers: ['a=b'], scope: cluster}",
     'spec.signals.firing.alerts.scope: "cluster" is not a scope (use pod, deployment, namespace)'),
    ("alerts: {matchers: ['a=b'], labels: {pod: 'pod name'}}",
     'spec.signals.firing.alerts.labels.pod: "pod name" is not a label name'),
])
def test_a_bad_alerts_signal_is_refused_at_load_saying_what_is_wrong(tmp_path: Path, alerts_yaml: str,
                                                                     message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(alerts_yaml))
    result = load_file(path)
    assert [f"{e.field}: {e.message}" for e in result.errors] == [message]
    assert result.policies == ()


def test_only_firing_matching_alerts_of_the_rollout_count() -> None:
    pod = signal('alertname=~"HighErrorRate|SlowRequests"', 'severity="critical"')
    alerts = [
        alert("HighErrorRate", namespace="staging", pod="backend-new222-abcde", severity="critical"),
        alert("HighErrorRate", namespace="production", pod="backend-new222-abcde", severity="critical"),
        alert("HighErrorRate", namespace="staging", pod="backend-old111-abcde", severity="critical"),
        alert("SlowRequests", namespace="staging", pod="backend-new222-fghij", severity="warning"),
        alert("HighErrorRate", namespace="staging", pod="backend-new222-zzzzz", severity="critical", firing=False),
        alert("HighErrorRate", namespace="staging", pod="backend-new222-yyyyy", severity="critical",
              ends=STARTED + 20),
        alert("DiskFull", namespace="staging", pod="backend-new222-abcde", severity="critical"),
    ]
    assert [a.labels["pod"] for a in counted(alerts, ctx(), pod, now=STARTED + 30)] == ["backend-new222-abcde"]
    # Before its endsAt the last HighErrorRate is still firing.
    assert len(counted(alerts, ctx(), pod, now=STARTED + 15)) == 2


def test_deployment_and_namespace_scopes_count_only_alerts_started_during_the_rollout() -> None:
    deployment = signal('severity="critical"', scope=AlertScope.DEPLOYMENT, labels=AlertLabels(deployment="app"))
    namespace = signal('severity="critical"', scope=AlertScope.NAMESPACE)
    alerts = [
        alert("A", namespace="staging", app="backend", severity="critical"),
        alert("B", namespace="staging", app="frontend", severity="critical"),
        alert("C", namespace="staging", app="backend", severity="critical", starts=STARTED - 60),
        alert("D", namespace="other", app="backend", severity="critical"),
    ]
    assert [a.name for a in counted(alerts, ctx(), deployment, now=STARTED + 30)] == ["A"]
    assert [a.name for a in counted(alerts, ctx(), namespace, now=STARTED + 30)] == ["A", "B"]


def webhook(*alerts: dict[str, Any], version: str = "4") -> bytes:
    import json
    return json.dumps({"version": version, "status": "firing", "receiver": "rollguard", "groupLabels": {},
                       "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "{}",
                       "truncatedAlerts": 0, "alerts": list(alerts)}).encode()


def wire_alert(name: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, **labels}, "annotations": {"summary": f"{name} now"},
            "startsAt": "2023-11-14T22:13:30.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": f"fp{name}{sorted(labels.items())}"}


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "the body is not JSON"),
    (b"[]", "the body is not a JSON object"),
    (webhook(version="3"), 'the payload version is not "4" (send from Alertmanager\'s webhook_configs)'),
    (webhook({"status": "sleeping", "labels": {}}), "alerts[0].status is neither firing nor resolved"),
    (webhook({"status": "firing", "labels": {"a": 1}}), "alerts[0].labels: the value of a key is not a string"),
    (webhook(*[wire_alert(f"A{i}") for i in range(1001)]), "alerts has 1001 alerts, over the limit of 1000"),
    (webhook({"status": "firing", "labels": {f"l{i}": "v" for i in range(65)}}),
     "alerts[0].labels has 65 entries, over the limit of 64"),
    (webhook({"status": "firing", "labels": {}, "startsAt": "yesterday"}),
     "alerts[0].startsAt is not an RFC 3339 timestamp"),
])
def test_a_hostile_webhook_body_is_refused_saying_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(AlertPayloadError) as caught:
        parse_webhook(body)
    assert str(caught.value) == message


def test_a_pushed_alert_wakes_only_analyses_it_counts_for_and_resolved_alerts_are_forgotten() -> None:
    hub = AlertHub(SystemClock())
    now = time.time()
    mine = hub.subscribe(ctx(started=now - 60), [signal('alertname="HighErrorRate"')])
    other = hub.subscribe(SignalContext("staging", "frontend", 4, "fff999", "frontend-fff999-", {}, now - 60),
                          [signal('alertname="HighErrorRate"')])
    firing = parse_webhook(webhook(wire_alert("HighErrorRate", namespace="staging", pod="backend-new222-abcde")))
    assert firing[0].starts_at == datetime(2023, 11, 14, 22, 13, 30, 123456, tzinfo=UTC).timestamp()
    assert hub.receive(firing) == 1
    assert (mine.is_set(), other.is_set()) == (True, False)
    assert [a.name for a in hub.pushed()] == ["HighErrorRate"]
    resolved = parse_webhook(webhook(wire_alert("HighErrorRate", "resolved", namespace="staging",
                                                pod="backend-new222-abcde")))
    assert hub.receive(resolved) == 0
    assert hub.pushed() == []
    del mine, other  # a subscription ends with its analysis
    assert hub.receive(firing) == 0


async def measure(provider: AlertsProvider, context: SignalContext) -> Measurement:
    return await provider.measure(context)


@pytest.mark.timeout(60)
async def test_the_pull_counts_what_alertmanager_lists_forgets_stale_pushes_and_an_outage_is_an_error() -> None:
    now = time.time()
    rollout = ctx(started=now - 30)

    def stamp(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")

    async with AlertmanagerServer(webhook_url="http://127.0.0.1:9/nowhere", token="t0ken") as am, \
            aiohttp.ClientSession() as session:
        await am.post_alerts([
            {"labels": {"alertname": "HighErrorRate", "severity": "critical", "namespace": "staging",
                        "pod": "backend-new222-abcde"},
             "annotations": {"summary": "backend-new222-abcde answers 12% errors"}, "startsAt": stamp(now - 5)},
            {"labels": {"alertname": "HighErrorRate", "severity": "critical", "namespace": "production",
                        "pod": "backend-new222-abcde"}, "startsAt": stamp(now - 5)},
            {"labels": {"alertname": "HighErrorRate", "severity": "critical", "namespace": "staging",
                        "pod": "backend-old111-abcde"}, "startsAt": stamp(now - 5)},
            {"labels": {"alertname": "HighErrorRate", "severity": "critical", "namespace": "staging",
                        "pod": "backend-new222-fghij"}, "startsAt": stamp(now - 20), "endsAt": stamp(now - 10)},
        ])
        hub = AlertHub(SystemClock())
        # A push whose resolve was lost: Alertmanager no longer lists it, so the next pull forgets it.
        stale = alert("SlowRequests", starts=now - 20, namespace="staging", pod="backend-new222-kkkkk",
                      severity="critical")
        hub.receive([stale])
        client = AlertmanagerClient(am.url, session, clock=SystemClock(), max_age=0)
        provider = AlertsProvider(signal('alertname=~"HighErrorRate|SlowRequests"', 'severity="critical"'),
                                  hub=hub, client=client, clock=SystemClock())
        reading = await measure(provider, rollout)
        assert (reading.phase, reading.value, reading.message) == (Phase.OK, 1.0, "1 firing alert: HighErrorRate")
        assert reading.evidence == ("HighErrorRate: backend-new222-abcde answers 12% errors",)
        assert hub.pushed() == []

        await am.stop()
        down = await measure(provider, rollout)
        assert down.phase is Phase.ERROR, down
        assert down.value is None
        assert down.message == f"Alertmanager at {am.url} is unreachable (ClientConnectorError)"
