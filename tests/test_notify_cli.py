"""`rollguard check --notify-config` and `rollguard notify test`, run as a user runs them."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from sim.receivers.pagerduty import PagerDutyReceiver
from sim.receivers.slack import SlackReceiver
from sim.resources import NAMESPACES, SECRETS
from tests.simkit import sim_server
from tests.test_notify_kit import ROUTING_KEY, SLACK_TOKEN

LOBBY_KEY = "LOBBYroutingKEYdoNOTleak01234567"

BAD_CONFIG = """\
slack:
  channel: "#deploys"
  tokenFrom: {secret: rollguard, key: slack-token}
pagerduty:
  routingKeyFrom: {secret: rollguard}
"""

POLICY = """\
apiVersion: rollguard.io/v1
kind: RollbackPolicy
metadata: {{name: {name}}}
spec:
  selector: {{namespaces: [staging], matchLabels: {{app: {name}}}}}
  signals:
    health: {{http: {{url: "http://{name}.staging:8000/health"}}}}
  rules:
    - {{name: down, when: "!health.ok", for: 1m, action: rollback}}
  notify:
    slack: {{channel: "#{name}"}}
    pagerduty: {{routingKeyFrom: {{secret: {name}-pagerduty, key: routing-key}}}}
"""


def test_check_reports_a_notify_config_error_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "notify.yaml"
    config.write_text(BAD_CONFIG)
    assert main(["check", "--notify-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err == (f"{config}:5: pagerduty.routingKeyFrom: must be exactly one of {{env: VAR}}, {{file: PATH}} or "
                   "{secret: NAME, key: KEY}; got keys secret\n")


def test_check_accepts_a_good_notify_config_without_its_secrets(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "notify.yaml"
    config.write_text(BAD_CONFIG.replace("{secret: rollguard}", "{secret: rollguard, key: pagerduty-routing-key}"))
    assert main(["check", "--notify-config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config}: ok\n"


async def test_notify_test_messages_every_target_and_fails_on_a_missing_secret(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("lobby", "chat"):
        (rules / f"{name}.yaml").write_text(POLICY.format(name=name))
    async with sim_server(tmp_path) as cluster, SlackReceiver(tokens=[SLACK_TOKEN]) as slack, \
            PagerDutyReceiver(routing_keys=[ROUTING_KEY, LOBBY_KEY]) as pagerduty:
        cluster.store.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "teams"}})
        cluster.store.create(SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "lobby-pagerduty", "namespace": "teams"},
                                       "data": {"routing-key": base64.b64encode(LOBBY_KEY.encode()).decode()}},
                             namespace="teams")
        config = tmp_path / "notify.yaml"
        config.write_text(f"""\
slack: {{channel: "#deploys", baseUrl: "{slack.url}"}}
pagerduty: {{baseUrl: "{pagerduty.url}", caFile: "{pagerduty.ca_file}"}}
""")
        env = {**os.environ, "ROLLGUARD_SLACK_TOKEN": SLACK_TOKEN, "ROLLGUARD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY}
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "rollguard"), "notify", "test", "--rules", str(rules),
            "--notify-config", str(config), "--kubeconfig", str(cluster.kubeconfig), "--secrets-namespace", "teams",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()

    assert (proc.returncode, err.decode()) == (1, "")
    assert out.decode().splitlines() == [
        "ok      default slack",
        "ok      default pagerduty",
        "ok      policy chat slack:#chat",
        "failed  policy chat pagerduty:secret/chat-pagerduty/routing-key: Secret teams/chat-pagerduty does not exist",
        "ok      policy lobby slack:#lobby",
        "ok      policy lobby pagerduty:secret/lobby-pagerduty/routing-key",
    ]
    assert sorted((m.channel, m.text) for m in slack.roots()) == sorted(
        (slack.channel_id(c), f"rollguard-test/{d} revision 0: Rollout started — rollguard test message — no action "
                              "needed") for c, d in (("deploys", "default"), ("chat", "chat"), ("lobby", "lobby")))
    sent = [(r.body["routing_key"], r.body["event_action"]) for r in pagerduty.received if r.accepted]
    assert sent == [(ROUTING_KEY, "trigger"), (ROUTING_KEY, "resolve"), (LOBBY_KEY, "trigger"), (LOBBY_KEY, "resolve")]
    assert pagerduty.open_incidents() == [], "a test must leave no incident open"
    assert LOBBY_KEY not in out.decode() + err.decode()
