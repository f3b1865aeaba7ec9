"""Per-policy routing: each team's alerts reach its own Slack channel and PagerDuty service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from daemon.notify import Alert, AlertKind, NotificationPipeline, Redactor, build_notifiers
from daemon.notify.routing import NotifyRouter
from daemon.rules.loader import load_rules
from daemon.rules.model import NotifyTargets, PagerDutyTarget, SecretKeyRef, SlackTarget
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver
from tests.test_notify_kit import ROUTING_KEY, SLACK_TOKEN, make_alert

LOBBY_KEY = "LOBBYroutingKEYdoNOTleak01234567"
GAME_KEY = "GAMEroutingKEYdoNOTleak012345678"


class DictSecrets:
    """A SecretSource over a dict: (secret, key) → value; `down` makes every read fail as an outage would."""

    def __init__(self, values: Mapping[tuple[str, str], str]) -> None:
        self.values = dict(values)
        self.down = False
        self.reads = 0

    async def read(self, secret: str, key: str) -> str:
        self.reads += 1
        if self.down:
            raise ConnectionError("API server unreachable")
        if (secret, key) not in self.values:
            raise LookupError(f"Secret rollguard/{secret} does not exist")
        return self.values[(secret, key)]


def team(channel: str, secret: str, **extra: object) -> NotifyTargets:
    return NotifyTargets(slack=SlackTarget(channel), pagerduty=PagerDutyTarget(SecretKeyRef(secret, "routing-key")),
                         **extra)  # type: ignore[arg-type]


@dataclass
class Setup:
    slack: SlackReceiver
    pagerduty: PagerDutyReceiver
    policies: dict[str, NotifyTargets]
    secrets: DictSecrets
    router: NotifyRouter
    pipeline: NotificationPipeline
    registry: CollectorRegistry
    misrouted: list[tuple[str, str]]

    async def deliver(self, *alerts: Alert) -> None:
        for alert in alerts:
            assert self.pipeline.submit(alert)
        await self.pipeline.wait_idle()

    def pagerduty_keys(self) -> list[tuple[str, str]]:
        """(routing key, summary) of every accepted PagerDuty event."""
        return [(r.body["routing_key"], r.body["payload"]["summary"]) for r in self.pagerduty.received
                if r.accepted]

    def slack_roots(self) -> list[tuple[str, str]]:
        """(channel ID, text as first posted) of every thread root."""
        return [(m.channel, m.history[0]["text"] if m.history else m.text) for m in self.slack.roots()]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as slack, \
            PagerDutyReceiver(routing_keys=[ROUTING_KEY, LOBBY_KEY, GAME_KEY]) as pagerduty:
        built = build_notifiers({"slack": {"channel": "#deploys", "baseUrl": slack.url, "timeout": 2},
                                 "pagerduty": {"baseUrl": pagerduty.url, "caFile": pagerduty.ca_file, "timeout": 2}},
                                env={"ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN,
                                     "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY})
        policies = {"lobby": team("#lobby", "lobby-pagerduty"), "game-engine": team("#game-engine", "game-pagerduty")}
        secrets = DictSecrets({("lobby-pagerduty", "routing-key"): LOBBY_KEY,
                               ("game-pagerduty", "routing-key"): GAME_KEY})
        registry = CollectorRegistry()
        misrouted: list[tuple[str, str]] = []
        router = NotifyRouter(defaults=built.notifiers, targets_for=policies.get, secrets=secrets,
                              connections=built.connections, redactor=built.redactor, registry=registry,
                              on_misrouted=lambda alert, why: misrouted.append((alert.rollout_key, why)))
        pipeline = NotificationPipeline(built.notifiers, router=router, redactor=built.redactor, max_attempts=2,
                                        backoff_base=0.01, backoff_cap=0.01)
        await pipeline.start()
        yield Setup(slack, pagerduty, policies, secrets, router, pipeline, registry, misrouted)
        await pipeline.stop()


def rollback(policy: str | None, deployment: str, revision: int = 7) -> Alert:
    return make_alert(AlertKind.ROLLBACK_STARTED, policy=policy, deployment=deployment, revision=revision,
                      rollout_key=f"staging/{deployment}/{revision}", title=f"Rolled back staging/{deployment}")


async def test_each_policy_pages_its_own_team_and_others_get_the_default(setup: Setup) -> None:
    await setup.deliver(rollback("lobby", "lobby"), rollback("game-engine", "game"), rollback(None, "backend"))

    assert sorted(setup.pagerduty_keys()) == sorted([
        (LOBBY_KEY, "[staging/lobby rev 7] Rolled back staging/lobby: " + rollback(None, "x").summary),
        (GAME_KEY, "[staging/game rev 7] Rolled back staging/game: " + rollback(None, "x").summary),
        (ROUTING_KEY, "[staging/backend rev 7] Rolled back staging/backend: " + rollback(None, "x").summary),
    ]), "each team's page must reach its own PagerDuty service, and only that one"
    channel = setup.slack.channel_id
    assert sorted(setup.slack_roots()) == sorted([
        (channel("lobby"), "staging/lobby revision 7: Rollback executed — Rolled back staging/lobby"),
        (channel("game-engine"), "staging/game revision 7: Rollback executed — Rolled back staging/game"),
        (channel("deploys"), "staging/backend revision 7: Rollback executed — Rolled back staging/backend"),
    ])
    assert setup.misrouted == []
    # Lanes are named for where a value comes from, never for the value.
    assert sorted(setup.pipeline.pending()) == ["pagerduty", "pagerduty:secret/game-pagerduty/routing-key",
                                                "pagerduty:secret/lobby-pagerduty/routing-key", "slack",
                                                "slack:#game-engine", "slack:#lobby"]


async def test_a_missing_secret_goes_to_the_default_route_marked_misrouted(setup: Setup) -> None:
    del setup.secrets.values[("lobby-pagerduty", "routing-key")]
    with capture_logs() as logs:
        await setup.deliver(rollback("lobby", "lobby"))

    why = "Secret rollguard/lobby-pagerduty does not exist"
    assert setup.pagerduty_keys() == [
        (ROUTING_KEY, f"[staging/lobby rev 7] Rolled back staging/lobby (misrouted: {why}): "
                      + rollback(None, "x").summary)]
    # Slack still reaches the team: only the PagerDuty target was unusable.
    assert setup.slack_roots() == [(setup.slack.channel_id("lobby"),
                                    "staging/lobby revision 7: Rollback executed — Rolled back staging/lobby")]
    assert setup.misrouted == [("staging/lobby/7", why)]
    assert setup.registry.get_sample_value(
        "rollguard_notify_misrouted_total", {"policy": "lobby", "reason": "secret-missing"}) == 1.0
    warnings = [e for e in logs if e["event"] == "notification misrouted to the default target"]
    assert [(e["log_level"], e["policy"], e["reason"], e["why"]) for e in warnings] == [
        ("warning", "lobby", "secret-missing", why)]


async def test_a_routing_key_of_the_wrong_length_is_misrouted_without_showing_it(setup: Setup) -> None:
    setup.secrets.values[("lobby-pagerduty", "routing-key")] = "not-a-key-but-secret-anyway"
    with capture_logs() as logs:
        await setup.deliver(rollback("lobby", "lobby"))
    why = "Secret lobby-pagerduty/routing-key has 27 characters, a PagerDuty routing key has 32"
    assert [key for key, _ in setup.pagerduty_keys()] == [ROUTING_KEY]
    assert setup.misrouted == [("staging/lobby/7", why)]
    assert setup.registry.get_sample_value(
        "rollguard_notify_misrouted_total", {"policy": "lobby", "reason": "secret-malformed"}) == 1.0
    assert "not-a-key-but-secret-anyway" not in repr(logs)


async def test_an_unreadable_secret_is_retried_never_sent_to_another_team(setup: Setup) -> None:
    setup.secrets.down = True
    with capture_logs() as logs:
        await setup.deliver(rollback("lobby", "lobby"))
    assert setup.pagerduty_keys() == [], "a page that goes to the wrong team is worse than none"
    assert setup.misrouted == []
    failed = [e for e in logs if e["event"] == "notification failed; out of attempts"]
    assert [(e["notifier"], e["error"]) for e in failed] == [
        ("pagerduty:secret/lobby-pagerduty/routing-key",
         "pagerduty:secret/lobby-pagerduty/routing-key: cannot read its Secret now: "
         "ConnectionError: API server unreachable")]
    assert setup.secrets.reads == 2, "retried per the pipeline's policy"


async def test_routes_override_the_matrix_per_kind(setup: Setup) -> None:
    setup.policies["lobby"] = team("#lobby", "lobby-pagerduty",
                                   routes={"review_needed": frozenset({"slack"}),
                                           "rollback_started": frozenset({"pagerduty"})})
    review = make_alert(AlertKind.REVIEW_NEEDED, policy="lobby", deployment="lobby", revision=8,
                        rollout_key="staging/lobby/8", title="latency doubled")
    await setup.deliver(review, rollback("lobby", "lobby"))
    assert [key for key, _ in setup.pagerduty_keys()] == [LOBBY_KEY], "review_needed: slack only"
    assert [text for _, text in setup.slack_roots()] == [
        "staging/lobby revision 8: Review needed — latency doubled"], "rollback_started: pagerduty only"


async def test_a_reloaded_policy_routes_the_next_alert_to_its_new_target(setup: Setup) -> None:
    await setup.deliver(rollback("lobby", "lobby", 7))
    setup.policies["lobby"] = team("#lobby-oncall", "game-pagerduty")
    await setup.deliver(rollback("lobby", "lobby", 8))
    assert [key for key, _ in setup.pagerduty_keys()] == [LOBBY_KEY, GAME_KEY]
    assert [channel for channel, _ in setup.slack_roots()] == [setup.slack.channel_id("lobby"),
                                                               setup.slack.channel_id("lobby-oncall")]


async def test_two_policies_naming_one_channel_share_its_thread(setup: Setup) -> None:
    setup.policies["game-engine"] = team("#lobby", "game-pagerduty")
    started = make_alert(AlertKind.ROLLOUT_STARTED, policy="lobby", rollout_key="staging/shared/1", title="go")
    failed = make_alert(AlertKind.ROLLOUT_FAILED, policy="game-engine", rollout_key="staging/shared/1", title="no")
    await setup.deliver(started, failed)
    roots = setup.slack.roots()
    assert len(roots) == 1
    assert [m.text for m in setup.slack.replies(roots[0])] == ["Rollout failed: no (staging/backend rev 7)"]


async def test_a_channel_without_a_bot_token_is_misrouted_to_the_webhook() -> None:
    async with SlackReceiver() as slack:
        built = build_notifiers({"slack": {"webhookUrlFrom": {"env": "HOOK"}}}, env={"HOOK": slack.webhook_url})
        misrouted: list[str] = []
        router = NotifyRouter(defaults=built.notifiers, targets_for={"lobby": team("#lobby", "x")}.get,
                              secrets=None, connections=built.connections, redactor=Redactor(),
                              on_misrouted=lambda _alert, why: misrouted.append(why))
        pipeline = NotificationPipeline(built.notifiers, router=router)
        await pipeline.start()
        pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED, policy="lobby", title="go"))
        await pipeline.wait_idle()
        await pipeline.stop()
        why = ("Slack channel #lobby needs the daemon's bot token, and the daemon has none "
               "(webhook mode or no Slack)")
        assert misrouted == [why]
        assert [p["text"] for p in slack.webhook_posts] == [
            f"Rollout started: go (misrouted: {why}) (staging/backend rev 7)"]


def test_rule_files_declare_routes_and_a_webhook_secret(tmp_path: Path) -> None:
    path = tmp_path / "lobby.yaml"
    path.write_text("""\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {name: lobby}
spec:
  selector: {namespaces: [staging]}
  signals:
    health: {http: {url: "http://lobby.staging:8000/health"}}
  rules:
    - {name: down, when: "!health.ok", for: 1m, action: rollback}
  notify:
    slack: {webhookFrom: {secret: lobby-slack, key: webhook-url}}
    routes:
      rollback_started: [slack, pagerduty]
      review_needed: [slack]
      rollout_complete: []
""")
    result = load_rules([path])
    assert result.errors == ()
    assert result.policies[0].notify == NotifyTargets(
        slack=SlackTarget(webhook_from=SecretKeyRef("lobby-slack", "webhook-url")),
        routes={"rollback_started": frozenset({"slack", "pagerduty"}), "review_needed": frozenset({"slack"}),
                "rollout_complete": frozenset()})


async def test_a_webhook_from_a_secret_posts_to_that_webhook_and_never_names_it(setup: Setup) -> None:
    setup.policies["lobby"] = NotifyTargets(slack=SlackTarget(webhook_from=SecretKeyRef("lobby-slack", "url")))
    setup.secrets.values[("lobby-slack", "url")] = setup.slack.webhook_url
    with capture_logs() as logs:
        await setup.deliver(make_alert(AlertKind.ROLLOUT_STARTED, policy="lobby", title="go"))
    assert [p["text"] for p in setup.slack.webhook_posts] == ["Rollout started: go (staging/backend rev 7)"]
    assert setup.slack.roots() == [], "the default channel gets nothing"
    assert "slack:secret/lobby-slack/url" in setup.pipeline.pending()
    assert setup.slack.webhook_path not in repr(logs)
