"""End to end: two teams' policies, each with its own Slack channel and PagerDuty service.

`lobby` and `game-engine` name their own channel and a routing key in their own Secret; `chat` names a
Secret that does not exist. One deploy each, and a rule that asks for review at the first measurement
(so every rollout both posts to Slack and pages): each team's alerts reach exactly its own targets, and
chat's page goes to the daemon-wide service, marked "misrouted".
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import ROUTING_KEY, Stack, running_stack
from tests.e2ekit import HEALTHY, eventually

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

LOBBY_KEY = "LOBBYroutingKEYe2e00000000000001"
GAME_KEY = "GAMEroutingKEYe2e000000000000002"
TEAMS = {"lobby": ("#lobby", "lobby-pagerduty"), "game": ("#game-engine", "game-pagerduty"),
         "chat": ("#chat", "chat-pagerduty")}

POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {{name: {policy}}}
spec:
  selector: {{namespaces: [staging], matchLabels: {{app: {app}}}}}
  analysis: {{initialDelay: 2s, interval: 1s, bakeTime: 30s}}
  signals:
    health: {{http: {{url: "http://{{{{deployment}}}}.{{{{namespace}}}}:8000/health", expectStatus: 200, timeout: 2s}}}}
  rules:
    - {{name: look-at-it, when: "health.ok", action: review}}
  notify:
    slack: {{channel: "{channel}"}}
    pagerduty: {{routingKeyFrom: {{secret: {secret}, key: routing-key}}}}
"""


def write_rules(directory: Path) -> Path:
    directory.mkdir()
    for app, (channel, secret) in TEAMS.items():
        policy = "game-engine" if app == "game" else app
        (directory / f"{app}.yaml").write_text(POLICY.format(policy=policy, app=app, channel=channel, secret=secret))
    return directory


def pages(stack: Stack) -> dict[str, list[tuple[str, str]]]:
    """Accepted PagerDuty events by routing key: (source, summary)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for request in stack.pagerduty.received:
        if request.accepted:
            payload = request.body["payload"]
            out.setdefault(request.body["routing_key"], []).append((payload["source"], payload["summary"]))
    return out


def slack_channels(stack: Stack) -> dict[str, list[str]]:
    """Thread roots' texts (as first posted) by channel ID."""
    out: dict[str, list[str]] = {}
    for root in stack.slack.roots():
        out.setdefault(root.channel, []).append(root.history[0]["text"] if root.history else root.text)
    return out


async def test_each_team_gets_its_own_alerts_and_a_missing_secret_falls_back_marked(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules")
    async with running_stack(workdir=tmp_path, rules_dir=rules, start_daemon=False,
                             routing_keys=(LOBBY_KEY, GAME_KEY)) as stack:
        for secret, key in (("lobby-pagerduty", LOBBY_KEY), ("game-pagerduty", GAME_KEY)):
            await stack.kubectl("create", "secret", "generic", secret, "-n", "default",
                                f"--from-literal=routing-key={key}")
        for app in TEAMS:
            await stack.apply(backend_service(name=app))
            await stack.apply(backend_deployment(f"{app}:v1", name=app, replicas=1, env=HEALTHY))
        for app in TEAMS:
            await stack.kubectl("rollout", "status", f"deployment/{app}", "-n", "staging", "--timeout=60s")
        await stack.start_daemon()
        for app in TEAMS:
            await stack.apply(backend_deployment(f"{app}:v2", name=app, replicas=1, env=HEALTHY))
        await eventually(lambda: sum(len(v) for v in pages(stack).values()) >= 3, timeout=60, stack=stack,
                         what="one page per team")
        await eventually(lambda: sum(len(v) for v in slack_channels(stack).values()) >= 3, timeout=15, stack=stack,
                         what="one Slack thread per team")

        why = "Secret default/chat-pagerduty does not exist"
        review = "Review needed"
        assert {key: sorted(source for source, _ in events) for key, events in pages(stack).items()} == {
            LOBBY_KEY: ["staging/lobby"], GAME_KEY: ["staging/game"], ROUTING_KEY: ["staging/chat"],
        }, f"each team must be paged on its own service only: {pages(stack)}"
        [(_, chat_summary)] = pages(stack)[ROUTING_KEY]
        assert f"(misrouted: {why})" in chat_summary, chat_summary
        channel = stack.slack.channel_id
        roots = slack_channels(stack)
        assert sorted(roots) == sorted([channel("lobby"), channel("game-engine"), channel("chat")]), roots
        assert [t.split(":")[0] for t in roots[channel("lobby")]] == ["staging/lobby revision 2"], roots
        assert [t.split(":")[0] for t in roots[channel("game-engine")]] == ["staging/game revision 2"], roots
        assert [t.split(":")[0] for t in roots[channel("chat")]] == ["staging/chat revision 2"], roots
        assert channel("deploys") not in roots, "no alert of a policy with its own channel goes to the default"
        replies = [m.text for m in stack.slack.messages.values() if m.thread_ts is not None]
        assert all(review in t or "Rollout started" in t for t in replies), replies
        async with aiohttp.ClientSession() as session, session.get(f"{stack.daemon_url}/metrics") as response:
            exposition = await response.text()
        assert 'rollguard_notify_misrouted_total{policy="chat",reason="secret-missing"} 1.0' in exposition
