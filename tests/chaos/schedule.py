"""Seeded fault schedules: a scripted series of deploys with faults at generated moments.

`generate(seed)` is pure: the same seed always gives the same schedule, and `describe()` prints it,
so a failing seed is reproduced with `python -m tests.chaos --seed SEED`.

Deploy kinds and what the checker expects of them ("intent"):

| kind | the workload | intent |
|---|---|---|
| healthy | 1% errors | never rolled back |
| blip | 12% errors for its first simulated second, then 1% | never rolled back |
| errors | 12% errors | rolled back, or a human paged |
| slow | 3x the latency | a review (a page); unknown when Prometheus was down (no baseline) |
| never-ready | pods never become Ready | rolled back (onFailure), or a human paged |
| reapply | a template rollguard rolled back earlier, applied again | a review (a page) |
| errors+newer | 12% errors; a healthy deploy lands between the undo's read and write | paged or rolled back; |
|              |                                                                  | the newer one never undone |
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BAD = frozenset({"errors", "never-ready", "reapply", "errors+newer", "slow"})
HEALTHY = frozenset({"healthy", "blip"})
DEPLOY_KINDS = ("healthy", "blip", "errors", "slow", "never-ready", "reapply", "errors+newer")

FAULT_KINDS = ("api-error", "api-latency", "api-stall", "watch-410", "cut-watches", "compact",
               "concurrent-annotate", "kill-at-write", "kill-at", "prometheus-down", "slack-fail",
               "pagerduty-fail", "kill-leader")


@dataclass(frozen=True)
class Fault:
    """One fault, applied `at` seconds after its step's deploy (kill-at-write counts writes instead)."""

    kind: str
    at: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}@{self.at:g}s {extra}".rstrip()


@dataclass(frozen=True)
class Step:
    """One deploy and the faults around it; `hold` seconds before the next step (None: until its verdict)."""

    kind: str
    image: str
    env: dict[str, str]
    hold: float | None
    faults: tuple[Fault, ...] = ()

    @property
    def intent(self) -> str:
        """"bad" (must end rolled back or paged), "healthy" (must never be rolled back), or "unknown":
        a slow deploy whose baseline may have been unmeasurable (Prometheus down) meets no rule."""
        if self.kind == "slow" and any(f.kind == "prometheus-down" for f in self.faults):
            return "unknown"
        return "bad" if self.kind in BAD else "healthy"


@dataclass(frozen=True)
class Schedule:
    seed: int
    steps: tuple[Step, ...]
    replicas: int = 1
    dry_run: bool = False

    def describe(self) -> str:
        lines = [f"schedule seed={self.seed} replicas={self.replicas} dry_run={self.dry_run}"]
        for i, step in enumerate(self.steps):
            hold = "until verdict" if step.hold is None else f"{step.hold:g}s"
            lines.append(f"  step {i}: {step.kind:<13} {step.image:<18} hold {hold}")
            lines.extend(f"           fault {f.describe()}" for f in step.faults)
        return "\n".join(lines)

    def fault_count(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for step in self.steps:
            for fault in step.faults:
                counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return counts


HEALTHY_ENV = {"SIM_READY_DELAY": "0.5", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50",
               "SIM_RUN_SECONDS": "0.5"}  # the pre-rollback Job (the same template) takes half a second


def env_for(kind: str) -> dict[str, str]:
    env = dict(HEALTHY_ENV)
    if kind in ("errors", "errors+newer"):
        env["SIM_ERROR_RATIO"] = "0.12"
    elif kind == "blip":
        del env["SIM_ERROR_RATIO"]
        env["SIM_ERROR_SCHEDULE"] = "0.12:1,0.01"
    elif kind == "slow":
        env["SIM_LATENCY_MS"] = "300"
    return env


def _api_fault(rng: random.Random) -> Fault:
    kind = rng.choice(("api-error", "api-error", "api-latency", "api-stall", "watch-410"))
    at = round(rng.uniform(0, 6), 1)
    if kind == "api-error":
        code = rng.choice((500, 409, 429))
        params: dict[str, Any] = {"verb": rng.choice(("get", "list", "patch", "create", "update")),
                                  "resource": rng.choice(("deployments", "replicasets", "events", "jobs", "leases",
                                                          "pods")),
                                  "code": code, "count": rng.randint(1, 3)}
        if code == 429:
            params["retryAfter"] = 1
        return Fault(kind, at, params)
    if kind == "api-latency":
        return Fault(kind, at, {"verb": rng.choice(("get", "list", "patch", "create")),
                                "latency": round(rng.uniform(0.3, 2.0), 1), "count": rng.randint(1, 4)})
    if kind == "api-stall":
        return Fault(kind, at, {"verb": "get", "resource": rng.choice(("deployments", "replicasets")),
                                "release": round(rng.uniform(1, 4), 1)})
    return Fault(kind, at, {"resource": rng.choice(("deployments", "replicasets", "pods")), "count": 1})


def _fault(rng: random.Random, step_kind: str, replicas: int) -> Fault:
    roll = rng.random()
    if roll < 0.3:
        return _api_fault(rng)
    at = round(rng.uniform(0, 8), 1)
    choices = ["cut-watches", "compact", "kill-at-write", "kill-at", "prometheus-down", "slack-fail",
               "pagerduty-fail"]
    if step_kind in BAD:
        choices += ["concurrent-annotate", "kill-at-write"]
    if replicas > 1:
        choices += ["kill-leader"]
    kind = rng.choice(choices)
    if kind == "kill-at-write":
        return Fault(kind, 0.0, {"write": rng.randint(1, 6), "restart": round(rng.uniform(0.5, 3), 1)})
    if kind in ("kill-at", "kill-leader"):
        return Fault(kind, at, {"restart": round(rng.uniform(0.5, 3), 1)})
    if kind == "prometheus-down":
        return Fault(kind, at, {"for": round(rng.uniform(2, 8), 1)})
    if kind == "slack-fail":
        status = rng.choice((429, 503))
        return Fault(kind, at, {"status": status, "count": rng.randint(1, 4)})
    if kind == "pagerduty-fail":
        return Fault(kind, at, {"status": rng.choice((500, 503)), "count": rng.randint(1, 3)})
    return Fault(kind, at)


def generate(seed: int, *, deploys: int = 3) -> Schedule:
    """A schedule: v1 healthy (the baseline), then `deploys` generated deploys with 0-3 faults each."""
    rng = random.Random(seed)
    replicas = 2 if rng.random() < 0.25 else 1
    dry_run = rng.random() < 0.1
    steps = [Step("healthy", "backend:v1", env_for("healthy"), None)]
    rolled_back: list[Step] = []
    for n in range(2, deploys + 2):
        kind = rng.choice(DEPLOY_KINDS)
        if kind == "reapply" and not rolled_back:
            kind = "errors"
        hold: float | None = None
        if kind in HEALTHY and rng.random() < 0.3:
            hold = round(rng.uniform(2, 6), 1)  # superseded mid-analysis
        faults = tuple(_fault(rng, kind, replicas) for _ in range(rng.randint(0, 3)))
        if kind == "reapply":
            again = rolled_back[-1]
            steps.append(Step("reapply", again.image, dict(again.env), None, faults))
            continue
        step = Step(kind, f"backend:v{n}" + ("-never-ready" if kind == "never-ready" else ""), env_for(kind), hold,
                    faults)
        steps.append(step)
        if kind in ("errors", "never-ready"):
            rolled_back.append(step)
    return Schedule(seed, tuple(steps), replicas, dry_run)


def kill_point_schedule(write: int) -> Schedule:
    """The fixed rollback (v1 healthy, v2 with 12% errors) with the daemon SIGKILLed after its `write`-th write
    since v2 was deployed (0: no kill, the clean run the write points are enumerated from)."""
    faults = (Fault("kill-at-write", 0.0, {"write": write, "restart": 1.0}),) if write else ()
    return Schedule(-write, (Step("healthy", "backend:v1", env_for("healthy"), None),
                             Step("errors", "backend:v2", env_for("errors"), None, faults)))
