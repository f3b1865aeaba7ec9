"""Settings of `rollguard sim`, the simulated cluster (a stand-in: never part of the daemon image)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.settings import ListenAddress, LogSettings, SettingsError, flag_or_env, parse_listen


@dataclass(frozen=True)
class SimSettings:
    """Settings of `rollguard sim`, the simulated cluster."""

    listen: ListenAddress = field(default_factory=lambda: ListenAddress("127.0.0.1", 0))
    """Where the simulated API server listens; port 0 picks a free port."""
    kubeconfig_out: Path | None = None
    """Where to write a kubeconfig naming the real address; None writes none."""
    with_prometheus: bool = False
    """Also start a real Prometheus (the Debian `prometheus` binary) scraping every simulated pod."""
    speed: float = 1.0
    """How many simulated seconds pass per real second (pod start-up, progress deadlines)."""
    log: LogSettings = field(default_factory=LogSettings)
    """The simulator's own logging."""


def sim_settings(
    *,
    listen: str | None,
    kubeconfig_out: str | None,
    with_prometheus: bool,
    speed: float | None,
    log: LogSettings,
    env: Mapping[str, str] | None = None,
) -> SimSettings:
    """Build `SimSettings` from parsed flags."""
    env = os.environ if env is None else env
    listen_value, listen_source = flag_or_env(listen, env, "SIM_LISTEN", "127.0.0.1:0")
    assert listen_value is not None
    speed_value = 1.0 if speed is None else speed
    if not 0 < speed_value <= 1000:
        raise SettingsError(f"--speed: {speed_value} is outside (0, 1000]")
    return SimSettings(
        listen=parse_listen(listen_value, source=listen_source),
        kubeconfig_out=Path(kubeconfig_out) if kubeconfig_out else None,
        with_prometheus=with_prometheus,
        speed=speed_value,
        log=log,
    )
