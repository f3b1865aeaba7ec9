"""Helpers for the end-to-end tests: the full stack (simulated cluster, real Prometheus, receivers, daemon)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.demo.manifests import backend_deployment
from daemon.demo.stack import Stack
from daemon.sim.resources import DEPLOYMENTS

RULES = Path(__file__).parent / "data" / "e2e" / "rules"

HEALTHY = {"SIM_READY_DELAY": "1", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50"}


def env(**overrides: str) -> dict[str, str]:
    return {**HEALTHY, **overrides}


async def eventually(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2,
                     stack: Stack | None = None) -> None:
    """Wait until `predicate()` is true; fail with `what` after `timeout` seconds (or if the daemon died)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if stack is not None and (error := stack.daemon_failed()) is not None:
            raise AssertionError(f"the daemon died while waiting for {what}: {error!r}") from error
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


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


async def rollout_status(stack: Stack, timeout: str = "90s") -> str:
    return await stack.kubectl("rollout", "status", "deployment/backend", "-n", "staging", f"--timeout={timeout}")


def slack_texts(stack: Stack) -> list[str]:
    """Every accepted Slack message text (roots and thread replies), oldest first."""
    return [m.text for m in sorted(stack.slack.messages.values(), key=lambda m: m.ts)]


def pagerduty_events(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.pagerduty.events)
