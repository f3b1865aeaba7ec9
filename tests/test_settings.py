"""Settings come from flags, then ROLLGUARD_* variables, then defaults; bad values name their source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.settings import (
    ListenAddress,
    LogSettings,
    SettingsError,
    log_settings,
    parse_listen,
    run_settings,
)
from sim.settings import sim_settings


def test_parse_listen_accepts_ipv4_ipv6_and_localhost() -> None:
    assert parse_listen("127.0.0.1:8080", source="--x") == ListenAddress("127.0.0.1", 8080)
    assert parse_listen("[::1]:0", source="--x") == ListenAddress("::1", 0)
    assert parse_listen("localhost:9", source="--x") == ListenAddress("localhost", 9)
    assert str(ListenAddress("::1", 5)) == "[::1]:5"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8080", "--listen: '8080' is not HOST:PORT (for example 127.0.0.1:8080)"),
        ("example.com:80", "--listen: 'example.com' is not an IP address or 'localhost'"),
        ("127.0.0.1:http", "--listen: port 'http' is not a number"),
        ("127.0.0.1:70000", "--listen: port 70000 is outside 0..65535"),
    ],
)
def test_parse_listen_errors_name_the_flag(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_listen(value, source="--listen")
    assert str(err.value) == message


def test_run_settings_flags_win_over_environment() -> None:
    env = {"ROLLGUARD_RULES": "/env/rules", "ROLLGUARD_HTTP_LISTEN": "127.0.0.1:9999"}
    s = run_settings(rules="/flag/rules", kubeconfig=None, namespaces=["staging"], dry_run=False,
                     http_listen=None, log=LogSettings(), env=env)
    assert s.rules_dir == Path("/flag/rules")
    assert s.http_listen == ListenAddress("127.0.0.1", 9999)
    assert s.namespaces == ("staging",)
    assert s.kubeconfig is None
    assert s.dry_run is False


def test_run_settings_from_environment_only() -> None:
    env = {"ROLLGUARD_RULES": "/r", "ROLLGUARD_NAMESPACES": "a, b,,c", "ROLLGUARD_DRY_RUN": "true",
           "KUBECONFIG": "/k/config"}
    s = run_settings(rules=None, kubeconfig=None, namespaces=[], dry_run=False, http_listen=None,
                     log=LogSettings(), env=env)
    assert (s.rules_dir, s.namespaces, s.dry_run, s.kubeconfig) == (Path("/r"), ("a", "b", "c"), True,
                                                                   Path("/k/config"))
    assert s.http_listen == ListenAddress("0.0.0.0", 8080)


def test_run_settings_requires_rules() -> None:
    with pytest.raises(SettingsError, match=r"^--rules: a rules directory is required"):
        run_settings(rules=None, kubeconfig=None, namespaces=[], dry_run=False, http_listen=None,
                     log=LogSettings(), env={})


def test_bad_boolean_names_the_variable() -> None:
    with pytest.raises(SettingsError) as err:
        run_settings(rules="/r", kubeconfig=None, namespaces=[], dry_run=False, http_listen=None,
                     log=LogSettings(), env={"ROLLGUARD_DRY_RUN": "maybe"})
    assert str(err.value) == "ROLLGUARD_DRY_RUN: 'maybe' is not a boolean (use true or false)"


def test_log_settings_validate_choices() -> None:
    assert log_settings(fmt=None, level=None, env={}) == LogSettings("auto", "info")
    assert log_settings(fmt=None, level=None, env={"ROLLGUARD_LOG_FORMAT": "JSON"}).format == "json"
    with pytest.raises(SettingsError) as err:
        log_settings(fmt=None, level="loud", env={})
    assert str(err.value) == "--log-level: 'loud' is not one of debug, info, warning, error"


def test_sim_settings_speed_bounds() -> None:
    s = sim_settings(listen=None, kubeconfig_out="/tmp/k", with_prometheus=True, speed=10,
                     log=LogSettings(), env={})
    assert (s.listen, s.kubeconfig_out, s.with_prometheus, s.speed) == (
        ListenAddress("127.0.0.1", 0), Path("/tmp/k"), True, 10)
    with pytest.raises(SettingsError, match=r"--speed: 0 is outside"):
        sim_settings(listen=None, kubeconfig_out=None, with_prometheus=False, speed=0,
                     log=LogSettings(), env={})


def test_the_rollback_cap_notification_and_measurement_tuning_come_from_the_environment() -> None:
    s = run_settings(rules="r", kubeconfig=None, namespaces=[], dry_run=False, http_listen=None, log=LogSettings(),
                     env={"ROLLGUARD_MAX_ROLLBACKS": "5", "ROLLGUARD_ROLLBACK_WINDOW": "7200",
                          "ROLLGUARD_WRITE_MARGIN": "1.5", "ROLLGUARD_NOTIFY_MAX_ATTEMPTS": "3",
                          "ROLLGUARD_NOTIFY_DEADLINE": "60", "ROLLGUARD_MEASURE_TIMEOUT": "10"})
    assert (s.actions.max_rollbacks, s.actions.rollback_window, s.actions.write_margin) == (5, 7200.0, 1.5)
    assert (s.notify.max_attempts, s.notify.deadline, s.analysis.measure_timeout) == (3, 60.0, 10.0)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ROLLGUARD_MAX_ROLLBACKS", "2.5", "ROLLGUARD_MAX_ROLLBACKS: '2.5' is not a whole number"),
    ("ROLLGUARD_ROLLBACK_WINDOW", "10", "ROLLGUARD_ROLLBACK_WINDOW: 10.0 is outside 60..604800"),
    ("ROLLGUARD_WRITE_MARGIN", "9", "ROLLGUARD_WRITE_MARGIN: 9.0 is outside 0..7.5"),
])
def test_bad_tuning_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        run_settings(rules="r", kubeconfig=None, namespaces=[], dry_run=False, http_listen=None, log=LogSettings(),
                     env={name: value})
