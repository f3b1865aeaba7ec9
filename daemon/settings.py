"""Daemon settings: frozen dataclasses built from command-line flags and ROLLGUARD_* environment variables.

Flags win over the environment; the environment wins over the defaults. Every field says what it is
and its unit. Parsing errors raise `SettingsError` with the flag or variable that was wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "ROLLGUARD_"


class SettingsError(ValueError):
    """A flag or environment variable has a value rollguard cannot use."""


@dataclass(frozen=True)
class ListenAddress:
    """A `HOST:PORT` pair to bind a server to; port 0 means "pick a free port"."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str, *, source: str) -> ListenAddress:
    """Parse `HOST:PORT` (IPv6 as `[::1]:PORT`); `source` names the flag or variable in errors."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{source}: {value!r} is not HOST:PORT (for example 127.0.0.1:8080)")
    host = host.strip("[]")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingsError(f"{source}: {host!r} is not an IP address or 'localhost'") from None
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"{source}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{source}: port {port} is outside 0..65535")
    return ListenAddress(host, port)


@dataclass(frozen=True)
class LogSettings:
    """How the daemon writes its own log."""

    format: str = "auto"
    """`json` (one object per line, for a cluster), `console` (readable), or `auto`: console on a TTY."""
    level: str = "info"
    """Lowest level written: debug, info, warning or error."""


@dataclass(frozen=True)
class ActionLimits:
    """How far rollguard may act on its own (ROLLGUARD_MAX_ROLLBACKS, ROLLGUARD_ROLLBACK_WINDOW,
    ROLLGUARD_WRITE_MARGIN)."""

    max_rollbacks: int = 3
    """Rollbacks of one Deployment within `rollback_window`; past the cap a human reviews the next one."""
    rollback_window: float = 3600.0
    """Seconds over which `max_rollbacks` is counted."""
    write_margin: float = 2.0
    """Seconds the leader's lease must still be valid for at the moment of any write; a replica whose
    lease ends sooner writes nothing (so a stalled event loop cannot let a deposed leader act)."""


@dataclass(frozen=True)
class NotifyTuning:
    """How hard the notification pipeline tries (ROLLGUARD_NOTIFY_MAX_ATTEMPTS, _NOTIFY_DEADLINE,
    _NOTIFY_SEND_TIMEOUT, _NOTIFY_QUEUE_SIZE)."""

    max_attempts: int = 12
    """Delivery attempts per alert and notifier, the first included."""
    deadline: float = 300.0
    """Seconds after an alert was raised past which it is no longer retried (dead-lettered, counted)."""
    send_timeout: float = 30.0
    """Seconds one delivery attempt may take."""
    queue_size: int = 1000
    """Alerts waiting per notifier before the oldest is dropped (counted)."""


@dataclass(frozen=True)
class AnalysisTuning:
    """How analyses measure (ROLLGUARD_MEASURE_TIMEOUT, _SPREAD_FIRST_TICK, _PROMETHEUS_BATCH,
    _PROMETHEUS_MAX_QPS, _PROMETHEUS_CONNECTIONS)."""

    measure_timeout: float = 30.0
    """Seconds one signal's measurement may take before it is that signal's `error`."""
    spread_first_tick: bool = False
    """Move each analysis' first tick to a whole second plus a per-rollout phase below its interval, so
    simultaneous rollouts do not all tick in the same second (the chart turns it on)."""
    prometheus_batch: bool = True
    """Send the same-shape Prometheus queries of one tick as one request (see `daemon.signals.batching`)."""
    prometheus_max_qps: float = 0.0
    """Prometheus requests per second at most, shared fairly by query shapes; 0: no limit."""
    connections_per_host: int = 20
    """Concurrent connections per host (Prometheus, HTTP checks) of the daemon's HTTP pool."""


@dataclass(frozen=True)
class RunSettings:
    """Settings of `rollguard run`, the daemon proper."""

    rules_dir: Path
    """Directory of rule files (`*.yaml`, `*.yml`), read at start and re-read when they change."""
    kubeconfig: Path | None = None
    """Kubeconfig to use; None means in-cluster service-account config."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace (needs cluster-wide list/watch rights)."""
    dry_run: bool = False
    """Decide and notify, but never write to the cluster (no rollback, no annotations, no Events)."""
    http_listen: ListenAddress = field(default_factory=lambda: ListenAddress("0.0.0.0", 8080))
    """Where `/healthz`, `/readyz`, `/metrics` and `/api/v1/analyses` are served."""
    log: LogSettings = field(default_factory=LogSettings)
    """The daemon's own logging."""
    leader_election: bool = False
    """Elect a leader on a coordination.k8s.io Lease; only the leader acts (run several replicas)."""
    lease_name: str = "rollguard"
    """Name of the Lease used for leader election."""
    lease_namespace: str = "default"
    """Namespace of that Lease (in a cluster: the daemon's own namespace, from ROLLGUARD_POD_NAMESPACE)."""
    lease_duration: float = 15.0
    """Seconds a leader's lease lasts without renewal; a new leader takes over after at most this long."""
    identity: str = ""
    """This replica's identity in the Lease (default: the pod name from ROLLGUARD_POD_NAME, else the hostname)."""
    prometheus_url: str | None = None
    """Base URL of the Prometheus HTTP API (e.g. http://prometheus.monitoring:9090); needed by
    `prometheus` signals."""
    prometheus_token_file: Path | None = None
    """File holding the bearer token sent to Prometheus (`Authorization: Bearer`), read once at start
    (ROLLGUARD_PROMETHEUS_TOKEN_FILE; the chart mounts it from a Secret). None: no token."""
    prometheus_ca_file: Path | None = None
    """PEM file of the CA that signed Prometheus' TLS certificate, trusted for Prometheus only
    (ROLLGUARD_PROMETHEUS_CA_FILE). None: the system's CAs."""
    alertmanager_url: str | None = None
    """Base URL of Alertmanager (e.g. http://alertmanager.monitoring:9093), read by `alerts` signals
    on every tick (ROLLGUARD_ALERTMANAGER_URL). None: no `alerts` signal can run."""
    alertmanager_webhook_token_file: Path | None = None
    """File holding the bearer token Alertmanager's webhook must send (ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN_FILE;
    the chart mounts it from a Secret). None, and no ROLLGUARD_ALERTMANAGER_WEBHOOK_TOKEN: pushes are refused."""
    notify_config: Path | None = None
    """YAML file configuring the notifiers (see README, Notifications); None: from the environment."""
    service_proxy: str | None = None
    """HTTP proxy for in-cluster check URLs (`http://svc.ns:port`); only for running outside a cluster,
    for example against the simulated cluster. None: connect directly."""
    actions: ActionLimits = field(default_factory=ActionLimits)
    """The rollback cap and the write margin."""
    notify: NotifyTuning = field(default_factory=NotifyTuning)
    """The notification pipeline's retries, deadline and queues."""
    analysis: AnalysisTuning = field(default_factory=AnalysisTuning)
    """Measurement bounds."""
    argocd_namespace: str = "argocd"
    """Where Argo CD Applications live when a Deployment's tracking id does not name their namespace
    (ROLLGUARD_ARGOCD_NAMESPACE; Argo CD's own default)."""


_LOG_FORMATS = ("auto", "json", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _choice(value: str, choices: Sequence[str], *, source: str) -> str:
    lowered = value.lower()
    if lowered not in choices:
        raise SettingsError(f"{source}: {value!r} is not one of {', '.join(choices)}")
    return lowered


def flag_or_env(
    flag_value: str | None, env: Mapping[str, str], name: str, default: str | None
) -> tuple[str | None, str]:
    """The value and where it came from (for error messages): the flag, else ROLLGUARD_<NAME>, else default."""
    flag = "--" + name.lower().replace("_", "-")
    if flag_value is not None:
        return flag_value, flag
    var = ENV_PREFIX + name
    if var in env:
        return env[var], var
    return default, flag


def _bool_env(env: Mapping[str, str], name: str) -> bool:
    var = ENV_PREFIX + name
    raw = env.get(var, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{var}: {env[var]!r} is not a boolean (use true or false)")


def log_settings(
    *, fmt: str | None, level: str | None, env: Mapping[str, str] | None = None
) -> LogSettings:
    """Log settings from `--log-format`/`--log-level` or ROLLGUARD_LOG_FORMAT/ROLLGUARD_LOG_LEVEL."""
    env = os.environ if env is None else env
    fmt_value, fmt_source = flag_or_env(fmt, env, "LOG_FORMAT", "auto")
    level_value, level_source = flag_or_env(level, env, "LOG_LEVEL", "info")
    assert fmt_value is not None
    assert level_value is not None
    return LogSettings(
        format=_choice(fmt_value, _LOG_FORMATS, source=fmt_source),
        level=_choice(level_value, _LOG_LEVELS, source=level_source),
    )


def run_settings(
    *,
    rules: str | None,
    kubeconfig: str | None,
    namespaces: Sequence[str],
    dry_run: bool,
    http_listen: str | None,
    log: LogSettings,
    leader_election: bool = False,
    service_proxy: str | None = None,
    prometheus_url: str | None = None,
    notify_config: str | None = None,
    env: Mapping[str, str] | None = None,
) -> RunSettings:
    """Build `RunSettings` from parsed flags, falling back to ROLLGUARD_* variables."""
    env = os.environ if env is None else env
    rules_value, rules_source = flag_or_env(rules, env, "RULES", None)
    if not rules_value:
        raise SettingsError(f"{rules_source}: a rules directory is required (or set {ENV_PREFIX}RULES)")
    kube_value, _ = flag_or_env(kubeconfig, env, "KUBECONFIG", env.get("KUBECONFIG"))
    ns: tuple[str, ...] = tuple(namespaces)
    if not ns and env.get(ENV_PREFIX + "NAMESPACES"):
        ns = tuple(n.strip() for n in env[ENV_PREFIX + "NAMESPACES"].split(",") if n.strip())
    listen_value, listen_source = flag_or_env(http_listen, env, "HTTP_LISTEN", "0.0.0.0:8080")
    assert listen_value is not None
    duration_raw = env.get(ENV_PREFIX + "LEASE_DURATION", "15")
    try:
        lease_duration = float(duration_raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}LEASE_DURATION: {duration_raw!r} is not a number of seconds") from None
    if not 2 <= lease_duration <= 600:
        raise SettingsError(f"{ENV_PREFIX}LEASE_DURATION: {lease_duration} is outside 2..600 seconds")
    actions = ActionLimits(
        max_rollbacks=int(_number(env, "MAX_ROLLBACKS", 3, low=0, high=1000, whole=True)),
        rollback_window=_number(env, "ROLLBACK_WINDOW", 3600, low=60, high=7 * 86400),
        write_margin=_number(env, "WRITE_MARGIN", 2, low=0, high=lease_duration / 2),
    )
    notify = NotifyTuning(
        max_attempts=int(_number(env, "NOTIFY_MAX_ATTEMPTS", 12, low=1, high=100, whole=True)),
        deadline=_number(env, "NOTIFY_DEADLINE", 300, low=1, high=86400),
        send_timeout=_number(env, "NOTIFY_SEND_TIMEOUT", 30, low=1, high=600),
        queue_size=int(_number(env, "NOTIFY_QUEUE_SIZE", 1000, low=1, high=1_000_000, whole=True)),
    )
    analysis = AnalysisTuning(
        measure_timeout=_number(env, "MEASURE_TIMEOUT", 30, low=1, high=600),
        spread_first_tick=_bool_env(env, "SPREAD_FIRST_TICK"),
        prometheus_batch=_bool_env(env, "PROMETHEUS_BATCH") if env.get(ENV_PREFIX + "PROMETHEUS_BATCH") else True,
        prometheus_max_qps=_number(env, "PROMETHEUS_MAX_QPS", 0, low=0, high=100_000),
        connections_per_host=int(_number(env, "PROMETHEUS_CONNECTIONS", 20, low=1, high=10_000, whole=True)),
    )
    proxy_value, _ = flag_or_env(service_proxy, env, "SERVICE_PROXY", None)
    prometheus_value, _ = flag_or_env(prometheus_url, env, "PROMETHEUS_URL", None)
    notify_value, _ = flag_or_env(notify_config, env, "NOTIFY_CONFIG", None)
    return RunSettings(
        rules_dir=Path(rules_value),
        kubeconfig=Path(kube_value) if kube_value else None,
        namespaces=ns,
        dry_run=dry_run or _bool_env(env, "DRY_RUN"),
        http_listen=parse_listen(listen_value, source=listen_source),
        log=log,
        leader_election=leader_election or _bool_env(env, "LEADER_ELECTION"),
        lease_name=env.get(ENV_PREFIX + "LEASE_NAME", "rollguard"),
        lease_namespace=env.get(ENV_PREFIX + "LEASE_NAMESPACE") or env.get(ENV_PREFIX + "POD_NAMESPACE") or "default",
        lease_duration=lease_duration,
        identity=env.get(ENV_PREFIX + "POD_NAME") or socket.gethostname(),
        service_proxy=proxy_value or None,
        prometheus_url=prometheus_value or None,
        prometheus_token_file=_path_env(env, "PROMETHEUS_TOKEN_FILE"),
        prometheus_ca_file=_path_env(env, "PROMETHEUS_CA_FILE"),
        alertmanager_url=env.get(ENV_PREFIX + "ALERTMANAGER_URL", "").strip() or None,
        alertmanager_webhook_token_file=_path_env(env, "ALERTMANAGER_WEBHOOK_TOKEN_FILE"),
        notify_config=Path(notify_value) if notify_value else None,
        actions=actions,
        notify=notify,
        analysis=analysis,
        argocd_namespace=_namespace_env(env, "ARGOCD_NAMESPACE", "argocd"),
    )


def _namespace_env(env: Mapping[str, str], name: str, default: str) -> str:
    """A namespace name from ROLLGUARD_<name> (a DNS label), else `default`."""
    raw = env.get(ENV_PREFIX + name, "").strip()
    if not raw:
        return default
    if len(raw) > 63 or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", raw):
        raise SettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not a namespace name (lower-case letters, digits, '-')")
    return raw


def _path_env(env: Mapping[str, str], name: str) -> Path | None:
    """The path in ROLLGUARD_<name>; None when unset or blank."""
    raw = env.get(ENV_PREFIX + name, "").strip()
    return Path(raw) if raw else None


def _number(env: Mapping[str, str], name: str, default: float, *, low: float, high: float,
            whole: bool = False) -> float:
    """A ROLLGUARD_<name> number within [low, high] (seconds, or a count when `whole`)."""
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise SettingsError(f"{ENV_PREFIX}{name}: {raw!r} is not {kind}") from None
    if not low <= value <= high:
        raise SettingsError(f"{ENV_PREFIX}{name}: {value} is outside {low:g}..{high:g}")
    return float(value)
