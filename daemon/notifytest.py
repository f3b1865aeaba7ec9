"""`rollguard notify test` and `rollguard check --notify-config`: prove the notification targets work.

`notify test` sends one clearly marked message ("rollguard test message — no action needed") to every
configured target — the daemon-wide default route and each policy's own Slack channel, Slack webhook
or PagerDuty service — and prints one line per target, `ok` or `failed: <why>`; exit 1 on any failure.
PagerDuty gets a `warning` trigger immediately followed by its resolve, so no incident stays open.
A policy's Secrets are read from the Kubernetes API (namespace: --secrets-namespace, else
ROLLGUARD_POD_NAMESPACE, else `default`), exactly as `rollguard run` reads them.

The sub-parser lives here (`add_notify_commands`) so the CLI module gains one self-contained call; the
heavy imports wait until a command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.notify import Notifier
    from daemon.notify.routing import NotifyRouter, PolicyTarget
    from daemon.rules.model import RollbackPolicy

TEST_TITLE = "rollguard test message — no action needed"
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Outcome:
    """One target's result: `target` names it (never with a secret), `error` is None when delivered."""

    target: str
    error: str | None = None

    def line(self) -> str:
        return f"ok      {self.target}" if self.error is None else f"failed  {self.target}: {self.error}"


def add_notify_commands(sub: Any, check: argparse.ArgumentParser) -> None:
    """Add `notify test`, and `--notify-config` to the `check` parser (wrapping its handler)."""
    check.add_argument("--notify-config", metavar="FILE", help="also validate this notifier configuration file")
    rules_check: Callable[[argparse.Namespace], int] = check.get_default("handler")

    def checked(args: argparse.Namespace) -> int:
        if not args.paths and args.notify_config is None:
            print("rollguard check: give rule files, --notify-config FILE, or both", file=sys.stderr)
            return EXIT_USAGE
        code = rules_check(args) if args.paths else EXIT_OK
        if args.notify_config is not None:
            from daemon.notify.configfile import check_notify_config

            problems = check_notify_config(Path(args.notify_config))
            for problem in problems:
                print(problem, file=sys.stderr)
            if not problems:
                print(f"{args.notify_config}: ok")
            code = max(code, EXIT_PROBLEM if problems else EXIT_OK)
        return code

    check.set_defaults(handler=checked)
    notify = sub.add_parser("notify", help="notification tools")
    notify_sub = notify.add_subparsers(dest="notify_command", metavar="COMMAND")
    notify_sub.required = True
    test = notify_sub.add_parser("test", help="send a test message to every configured notification target")
    test.add_argument("--policy", metavar="NAME", help="only this policy's targets (default: every target)")
    test.add_argument("--rules", metavar="DIR", help="directory of rule files (env ROLLGUARD_RULES)")
    test.add_argument("--notify-config", metavar="FILE", help="notifier configuration (env ROLLGUARD_NOTIFY_CONFIG)")
    test.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig to read policies' Secrets (default: "
                                                         "$KUBECONFIG, else in-cluster)")
    test.add_argument("--secrets-namespace", metavar="NS", help="namespace of policies' Secrets")
    test.set_defaults(handler=_notify_test)


def _notify_test(args: argparse.Namespace) -> int:
    from daemon.notify import NotifyConfigError
    from daemon.rules.loader import load_rules

    env = os.environ
    rules_dir = args.rules or env.get("ROLLGUARD_RULES")
    policies: tuple[RollbackPolicy, ...] = ()
    if rules_dir:
        loaded = load_rules([Path(rules_dir)])
        if loaded.errors:
            for error in loaded.errors:
                print(f"rollguard notify test: {error}", file=sys.stderr)
            return EXIT_PROBLEM
        policies = loaded.policies
    if args.policy is not None:
        policies = tuple(p for p in policies if p.name == args.policy)
        if not policies:
            print(f"rollguard notify test: no policy named {args.policy!r}"
                  + ("" if rules_dir else " (give --rules DIR)"), file=sys.stderr)
            return EXIT_USAGE
    config_path = args.notify_config or env.get("ROLLGUARD_NOTIFY_CONFIG")
    try:
        outcomes = asyncio.run(send_test_messages(
            policies=policies, include_default=args.policy is None, env=env,
            notify_config=Path(config_path) if config_path else None,
            kubeconfig=args.kubeconfig or env.get("KUBECONFIG"),
            namespace=args.secrets_namespace or env.get("ROLLGUARD_POD_NAMESPACE") or "default"))
    except (NotifyConfigError, ValueError) as exc:
        print(f"rollguard notify test: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    for outcome in outcomes:
        print(outcome.line())
    return EXIT_PROBLEM if any(o.error is not None for o in outcomes) else EXIT_OK


async def send_test_messages(*, policies: tuple[RollbackPolicy, ...], include_default: bool,
                             env: Mapping[str, str], notify_config: Path | None, kubeconfig: str | None,
                             namespace: str) -> list[Outcome]:
    """Send the test message to the default route (when `include_default`) and each policy's targets."""
    from daemon.daemon import notify_config_from
    from daemon.kube.client import KubeClient
    from daemon.kube.secrets import KubeSecretSource
    from daemon.notify import Channel, build_notifiers
    from daemon.notify.routing import NotifyRouter

    built = build_notifiers(notify_config_from(notify_config, policies, env), env=env)
    needs_secrets = any(p.notify.pagerduty is not None or (p.notify.slack is not None and p.notify.slack.webhook_from)
                        for p in policies)
    kube = await KubeClient.connect(Path(kubeconfig) if kubeconfig else None) if needs_secrets else None
    targets = {p.name: p.notify for p in policies}
    router = NotifyRouter(defaults=built.notifiers, targets_for=targets.get, connections=built.connections,
                          redactor=built.redactor,
                          secrets=KubeSecretSource(kube, namespace=namespace) if kube is not None else None)
    outcomes: list[Outcome] = []
    try:
        if include_default:
            for notifier in built.notifiers:
                if notifier.channel is not Channel.LOG:
                    outcomes.append(await _try(notifier, f"default {notifier.name}", None))
        for policy in policies:
            for target in router.targets_of(policy.notify):
                outcomes.append(await _try_target(router, target, policy.name))
    finally:
        for notifier in built.notifiers:
            await notifier.aclose()
        await router.aclose()
        if kube is not None:
            await kube.close()
    return outcomes


async def _try_target(router: NotifyRouter, target: PolicyTarget, policy: str) -> Outcome:
    from daemon.notify.routing import TargetUnusable

    label = f"policy {policy} {target.name}"
    try:
        notifier = await router.resolve(target)
    except TargetUnusable as problem:
        return Outcome(label, problem.why)
    except Exception as exc:  # the API server is away or refuses: report it, as every other failure
        return Outcome(label, f"cannot read its Secret: {router.redactor.describe(exc)}")
    return await _try(notifier, label, policy)


async def _try(notifier: Notifier, label: str, policy: str | None) -> Outcome:
    from daemon.notify import Alert, AlertKind, Channel

    # PagerDuty: trigger then resolve, so the test leaves no open incident behind.
    kinds = ([AlertKind.REVIEW_NEEDED, AlertKind.RECOVERED] if notifier.channel is Channel.PAGERDUTY
             else [AlertKind.ROLLOUT_STARTED])
    now = time.time()
    for kind in kinds:
        alert = Alert(kind=kind, namespace="rollguard-test", deployment=policy or "default", revision=0,
                      pod_template_hash="test", rollout_key=f"rollguard-test/{policy or 'default'}/{int(now)}",
                      title=TEST_TITLE, summary="Sent by `rollguard notify test` to check this target works.",
                      policy=policy, at=now)
        try:
            async with asyncio.timeout(30):
                result = await notifier.send(alert)
        except TimeoutError:
            return Outcome(label, "no answer within 30s")
        if not result.ok:
            return Outcome(label, result.error or "failed")
    return Outcome(label)
