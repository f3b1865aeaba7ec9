"""Helpers for the end-to-end tests: the full stack (simulated cluster, real Prometheus, receivers, daemon)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from sim.demo.manifests import backend_deployment, backend_service
from sim.demo.stack import Stack
from sim.receivers.slack import SlackMessage
from sim.resources import DEPLOYMENTS, EVENTS, REPLICASETS
from tests import waiting

RULES = Path(__file__).parent / "data" / "e2e" / "rules"

HEALTHY = {"SIM_READY_DELAY": "1", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50"}


def env(**overrides: str) -> dict[str, str]:
    return {**HEALTHY, **overrides}


async def eventually(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2,
                     stack: Stack | None = None) -> None:
    """Wait until `predicate()` is true; fail with `what` after `timeout` seconds (or if the daemon died)."""

    def daemon_alive() -> None:
        if stack is not None and (error := stack.daemon_failed()) is not None:
            raise AssertionError(f"the daemon died while waiting for {what}: {error!r}") from error

    await waiting.eventually(predicate, timeout=timeout, what=what, interval=interval, check=daemon_alive)


def deployment(stack: Stack, name: str = "backend", namespace: str = "staging") -> dict[str, Any]:
    obj = stack.cluster.store.peek(DEPLOYMENTS, namespace, name)
    assert obj is not None, f"deployment {namespace}/{name} does not exist"
    return obj


def image_of(stack: Stack, name: str = "backend") -> str:
    return str(deployment(stack, name)["spec"]["template"]["spec"]["containers"][0]["image"])


def revision_of(stack: Stack, name: str = "backend") -> int:
    return int(deployment(stack, name)["metadata"]["annotations"].get("deployment.kubernetes.io/revision", "0"))


def state_of(stack: Stack, name: str = "backend") -> dict[str, Any]:
    raw = deployment(stack, name)["metadata"].get("annotations", {}).get("rollguard.io/state")
    return json.loads(raw) if raw else {}


async def deploy(stack: Stack, image: str, **sim_env: str) -> None:
    await stack.apply(backend_deployment(image, env=env(**sim_env), change_cause=f"deploy {image}"))


async def serving_v1(stack: Stack, **sim_env: str) -> None:
    """The starting point of most scenarios: the backend Service, and revision 1 rolled out."""
    await stack.apply(backend_service())
    await deploy(stack, "backend:v1", **sim_env)
    await rollout_status(stack)


async def rollout_status(stack: Stack, timeout: str = "90s") -> str:
    return await stack.kubectl("rollout", "status", "deployment/backend", "-n", "staging", f"--timeout={timeout}")


def slack_texts(stack: Stack) -> list[str]:
    """Every accepted Slack message text (roots and thread replies), oldest first."""
    return [m.text for m in sorted(stack.slack.messages.values(), key=lambda m: m.ts)]


def pagerduty_events(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.pagerduty.events)


async def wait_trigger(stack: Stack, *, timeout: float = 15) -> dict[str, Any]:
    """The one PagerDuty trigger, once it arrives. A decision is saved (as owed) before it is sent, so a
    state annotation that shows the verdict does not mean the page has landed yet."""
    def triggers() -> list[dict[str, Any]]:
        return [e for e in stack.pagerduty.events if e.get("event_action") == "trigger"]
    await eventually(lambda: bool(triggers()), timeout=timeout, what="the PagerDuty trigger", stack=stack)
    (trigger,) = triggers()
    return trigger


# ----- more helpers for the analysis and action scenarios -----

SLOW_RULES = Path(__file__).parent / "data" / "e2e" / "rules-slow-for"
"""The same policy with `for: 6s` on the error-rate rule: a window wide enough to act inside (kill the
daemon, stop Prometheus, deploy again) before the rule can match, on a slow machine too."""

ROLLGUARD = "rollguard"
"""`source.component` of the Events rollguard records."""


def events_of(stack: Stack, name: str = "backend", namespace: str = "staging", *,
              component: str | None = ROLLGUARD) -> list[dict[str, Any]]:
    """Events about Deployment `name` (by default only rollguard's), oldest first."""
    found = [e for e in stack.cluster.store.list_objects(EVENTS, namespace)[0]
             if (e.get("involvedObject") or {}).get("name") == name
             and (e.get("involvedObject") or {}).get("kind") == "Deployment"
             and (component is None or (e.get("source") or {}).get("component") == component)]
    return sorted(found, key=lambda e: (str(e.get("firstTimestamp")), str(e["metadata"]["name"])))


async def wait_event(stack: Stack, reason: str, *, timeout: float = 15, name: str = "backend") -> dict[str, Any]:
    """The first rollguard Event with `reason`, waiting for it: Events are recorded just after the write
    they describe (the undo is never delayed by its audit trail), so a test must not expect them at once."""
    await eventually(lambda: reason in event_reasons(stack, name), timeout=timeout, stack=stack,
                     what=f"a {reason} Event")
    return next(e for e in events_of(stack, name) if e["reason"] == reason)


def event_reasons(stack: Stack, name: str = "backend") -> list[str]:
    return [str(e.get("reason")) for e in events_of(stack, name)]


def pending_since(stack: Stack, rule: str, name: str = "backend") -> float | None:
    """The rule's `for:` timer start as stored in the state annotation (None when not pending)."""
    rules = (state_of(stack, name).get("rules") or {}).get("rules") or {}
    value = (rules.get(rule) or {}).get("pendingSince")
    return None if value is None else float(value)


def state_is_for(stack: Stack, revision: int, name: str = "backend") -> bool:
    return (state_of(stack, name).get("rollout") or {}).get("revision") == revision


def slack_messages_for(stack: Stack, revision: int, name: str = "backend", namespace: str = "staging") -> list[str]:
    """Texts of the Slack thread(s) of one rollout: its root(s) and their replies, oldest first."""
    roots = [m for m in stack.slack.roots() if m.text.startswith(f"{namespace}/{name} revision {revision}:")]
    texts: list[str] = []
    for root in roots:
        texts.append(root.history[0]["text"] if root.history else root.text)
        texts.extend(m.text for m in stack.slack.replies(root))
    return texts


def slack_thread_for(stack: Stack, revision: int, name: str = "backend",
                     namespace: str = "staging") -> list[SlackMessage]:
    """The Slack messages of one rollout's thread(s): roots and replies, oldest first."""
    roots = [m for m in stack.slack.roots() if m.text.startswith(f"{namespace}/{name} revision {revision}:")]
    return [m for root in roots for m in (root, *stack.slack.replies(root))]


def blocks_text(*messages: SlackMessage) -> str:
    """Every text inside the blocks of `messages` (and their earlier versions)."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "text" and isinstance(item, str):
                    out.append(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for message in messages:
        walk(message.blocks)
        walk(message.history)
    return "\n".join(out)


def all_slack_blocks_text(stack: Stack) -> str:
    """Every text inside every Slack message's blocks (and edits), for evidence searches."""
    return blocks_text(*stack.slack.messages.values())


def rollout_history(text: str) -> list[str]:
    """The REVISION column of `kubectl rollout history`."""
    return [line.split()[0] for line in text.splitlines()[2:] if line.strip()]


def current_hash(stack: Stack, name: str = "backend", namespace: str = "staging") -> str:
    """The pod-template-hash of the ReplicaSet of the Deployment's current revision."""
    revision = str(revision_of(stack, name))
    for rs in stack.cluster.store.list_objects(REPLICASETS, namespace)[0]:
        meta = rs["metadata"]
        if meta["name"].startswith(f"{name}-") and (meta.get("annotations") or {}).get(
                "deployment.kubernetes.io/revision") == revision:
            return str(meta["labels"]["pod-template-hash"])
    raise AssertionError(f"no ReplicaSet of {namespace}/{name} has revision {revision}")


async def wait_for_traffic(stack: Stack, *, pods: int = 3, pod_template_hash: str | None = None,
                           timeout: float = 30) -> None:
    """Until Prometheus has had a request rate for `pods` pods of staging for a few seconds.

    A baseline is the previous revision's value at the rollout's start, which the daemon takes from the
    new ReplicaSet's creationTimestamp (whole seconds, so up to 1 s earlier): hence the offset.
    """
    url = f"{stack.cluster.prometheus_url}/api/v1/query"
    selector = 'namespace="staging"' + (f',pod_template_hash="{pod_template_hash}"' if pod_template_hash else "")
    query = f"count(count by (pod) (rate(http_requests_total{{{selector}}}[10s] offset 3s) > 0))"
    seen = 0.0
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url, params={"query": query}) as resp:
                body = await resp.json()
            result = body["data"]["result"]
            seen = float(result[0]["value"][1]) if result else 0.0
            if seen >= pods:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus has a request rate for {seen:g} of {pods} pods after {timeout}s")
            await asyncio.sleep(0.25)


async def rollguard_cli(*args: str) -> tuple[int, str, str]:
    """Run the installed `rollguard` console script (the real CLI) as a subprocess."""
    binary = Path(sys.executable).parent / "rollguard"
    proc = await asyncio.create_subprocess_exec(str(binary), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
