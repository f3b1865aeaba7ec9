"""How a simulated pod behaves, read from its pod template: so a "bad deploy" is an ordinary template change.

Environment variables of the first container (all optional):

| variable | meaning | default |
|---|---|---|
| `SIM_READY_DELAY` | simulated seconds from scheduling until Ready | 2 |
| `SIM_READY` | `false`: the pod runs but never becomes Ready | true |
| `SIM_CRASH` | `true`: the container crash-loops (CrashLoopBackOff), never Ready | false |
| `SIM_RPS` | requests per second the pod serves (metrics) | 20 |
| `SIM_ERROR_RATIO` | share of requests answered 5xx, 0..1 | 0 |
| `SIM_ERROR_SCHEDULE` | error share over time, same revision: `0.12:25,0.01` (see below) | none |
| `SIM_LATENCY_MS` | mean request latency in milliseconds | 50 |
| `SIM_HEALTHY` | `false`: `/health` answers 503 | true |
| `SIM_API_OK` | `false`: the API route answers 500 | true |
| `SIM_WS_OK` | `false`: the WebSocket endpoint never answers PONG | true |
| `SIM_LOG_RATE` | log lines per second | 1 |
| `SIM_LOG_ERROR_RATIO` | share of log lines that are errors (ERROR + a traceback line), 0..1 | 0 |
| `SIM_RUN_SECONDS` | for Job pods: simulated seconds until the container exits | 3 |
| `SIM_EXIT_CODE` | for Job pods: the container's exit code | 0 |

`SIM_ERROR_SCHEDULE` replaces `SIM_ERROR_RATIO` in the metrics: `0.12:25,0.01` means 12% of requests
fail for the first 25 simulated seconds of the container, then 1% (a workload that recovers on its own).

The image tag can say the same for the commonest failure modes, as `kubectl set image` users expect:
a tag containing `never-ready` never becomes Ready, one containing `crashloop` crash-loops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class BehaviourError(ValueError):
    """A SIM_* variable has a value the simulator cannot use."""


@dataclass(frozen=True)
class Behaviour:
    """The simulated behaviour of one pod."""

    ready_delay: float = 2.0
    ready: bool = True
    crash: bool = False
    rps: float = 20.0
    error_ratio: float = 0.0
    latency_ms: float = 50.0
    healthy: bool = True
    api_ok: bool = True
    ws_ok: bool = True
    log_rate: float = 1.0
    log_error_ratio: float = 0.0
    run_seconds: float = 3.0
    exit_code: int = 0
    error_phases: tuple[tuple[float, float], ...] = ()
    """(error ratio, simulated seconds) from the container's start; the last phase lasts for ever."""

    def errors_after(self, requests: int) -> int:
        """How many of the first `requests` requests failed (phases follow `rps`: request i is at i / rps)."""
        if not self.error_phases or self.rps <= 0:
            return min(requests, int(requests * self.error_ratio + 1e-9))
        total, served = 0, 0
        for i, (ratio, seconds) in enumerate(self.error_phases):
            last = i == len(self.error_phases) - 1
            upto = requests if last else min(requests, served + int(self.rps * seconds + 1e-9))
            total += min(upto - served, int((upto - served) * ratio + 1e-9))
            served = upto
            if served >= requests:
                break
        return total


def _phases(raw: str) -> tuple[tuple[float, float], ...]:
    phases: list[tuple[float, float]] = []
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    for i, part in enumerate(parts):
        ratio_text, _, seconds_text = part.partition(":")
        ratio = _float("SIM_ERROR_SCHEDULE", ratio_text, 0, 1)
        if not seconds_text and i != len(parts) - 1:
            raise BehaviourError(f"SIM_ERROR_SCHEDULE: {part!r} needs a duration (ratio:seconds) unless it is last")
        seconds = _float("SIM_ERROR_SCHEDULE", seconds_text, 0, 86400) if seconds_text else float("inf")
        phases.append((ratio, seconds))
    return tuple(phases)


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BehaviourError(f"{name}: {raw!r} is not a boolean")


def _float(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BehaviourError(f"{name}: {raw!r} is not a number") from None
    if not low <= value <= high:
        raise BehaviourError(f"{name}: {value} is outside {low}..{high}")
    return value


def behaviour_from_env(env: Mapping[str, str], image: str = "") -> Behaviour:
    """Parse SIM_* variables (unknown SIM_* names are ignored) and image-tag conventions."""
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    g = env.get
    return Behaviour(
        ready_delay=_float("SIM_READY_DELAY", g("SIM_READY_DELAY", "2"), 0, 86400),
        ready=_bool("SIM_READY", g("SIM_READY", "true")) and "never-ready" not in tag,
        crash=_bool("SIM_CRASH", g("SIM_CRASH", "false")) or "crashloop" in tag,
        rps=_float("SIM_RPS", g("SIM_RPS", "20"), 0, 100_000),
        error_ratio=_float("SIM_ERROR_RATIO", g("SIM_ERROR_RATIO", "0"), 0, 1),
        latency_ms=_float("SIM_LATENCY_MS", g("SIM_LATENCY_MS", "50"), 0, 600_000),
        healthy=_bool("SIM_HEALTHY", g("SIM_HEALTHY", "true")),
        api_ok=_bool("SIM_API_OK", g("SIM_API_OK", "true")),
        ws_ok=_bool("SIM_WS_OK", g("SIM_WS_OK", "true")),
        log_rate=_float("SIM_LOG_RATE", g("SIM_LOG_RATE", "1"), 0, 10_000),
        log_error_ratio=_float("SIM_LOG_ERROR_RATIO", g("SIM_LOG_ERROR_RATIO", "0"), 0, 1),
        run_seconds=_float("SIM_RUN_SECONDS", g("SIM_RUN_SECONDS", "3"), 0, 86400),
        exit_code=int(_float("SIM_EXIT_CODE", g("SIM_EXIT_CODE", "0"), 0, 255)),
        error_phases=_phases(g("SIM_ERROR_SCHEDULE", "")),
    )


def behaviour_of_pod(pod: Mapping[str, Any]) -> Behaviour:
    """The behaviour of a pod object (its first container's env and image); bad values raise BehaviourError."""
    containers = pod.get("spec", {}).get("containers") or [{}]
    first = containers[0]
    env = {e["name"]: str(e.get("value", "")) for e in first.get("env") or [] if "name" in e}
    return behaviour_from_env(env, str(first.get("image", "")))
