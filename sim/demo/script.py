"""The demo's script: its steps (what each deploy changes and the verdict the story expects) and the
production-sized example policy's timings shortened so the story fits in a few minutes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from daemon.rules.durations import format_duration, parse_duration

REPO_RULES = Path(__file__).resolve().parent.parent.parent / "rules"

HEALTHY = {"SIM_READY_DELAY": "1", "SIM_ERROR_RATIO": "0.01", "SIM_LATENCY_MS": "100", "SIM_RPS": "50",
           "SIM_LOG_RATE": "2"}


@dataclass(frozen=True)
class Timing:
    """The demo's analysis timings, in seconds, replacing the example policy's production ones."""

    initial_delay: float
    interval: float
    bake_time: float
    for_divisor: float
    """Each rule's `for` is divided by this."""
    progress_deadline: int


NORMAL = Timing(initial_delay=8, interval=2, bake_time=20, for_divisor=10, progress_deadline=20)
FAST = Timing(initial_delay=8, interval=1, bake_time=8, for_divisor=20, progress_deadline=12)


def demo_timing(source: Path, target: Path, timing: Timing) -> list[str]:
    """Copy the rule files with demo timings; returns one line per change, for the header."""
    changes: list[str] = []
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.y*ml")):
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in documents:
            spec = doc.get("spec") or {}
            spec["analysis"] = {"initialDelay": format_duration(timing.initial_delay),
                                "interval": format_duration(timing.interval),
                                "bakeTime": format_duration(timing.bake_time)}
            for rule in spec.get("rules") or []:
                if "for" in rule:
                    shorter = max(timing.interval, parse_duration(str(rule["for"])) / timing.for_divisor)
                    changes.append(f"{rule['name']}: for {rule['for']} → {format_duration(shorter)}")
                    rule["for"] = format_duration(shorter)
        (target / path.name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return changes


@dataclass
class Step:
    title: str
    image: str
    env: dict[str, str]
    expect: str
    """The verdict the story expects: passed, rolled back, review → rolled back, notify, failed → rolled back."""
    progress_deadline: int = 600
    verdict: str = "…"
    bad_sample_at: float | None = None
    rolled_back_at: float | None = None
    notes: list[str] = field(default_factory=list)


def steps(timing: Timing) -> list[Step]:
    return [
        Step("v1, healthy", "backend:v1", {}, "passed"),
        Step("v2, healthy", "backend:v2", {}, "passed"),
        Step("v3, 12% of requests fail with 5xx", "backend:v3", {"SIM_ERROR_RATIO": "0.12"}, "rolled back"),
        Step("v4, 80% slower than v2", "backend:v4", {"SIM_LATENCY_MS": "180"}, "review"),
        Step("v5, a few error lines in its logs", "backend:v5", {"SIM_LOG_RATE": "2", "SIM_LOG_ERROR_RATIO": "0.05"},
             "notify"),
        Step("v6, never becomes ready", "backend:v6-never-ready", {}, "failed",
             progress_deadline=timing.progress_deadline),
    ]


def alert_step() -> Step:
    return Step("v7, 500 ms per request", "backend:v7", {"SIM_LATENCY_MS": "500"}, "alert")
