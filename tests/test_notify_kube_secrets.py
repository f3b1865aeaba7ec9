"""Policies' Secrets read through the Kubernetes API: values, misses, malformed data, the cache."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.clock import FakeClock
from daemon.kube.client import KubeClient, KubeUnavailable
from daemon.kube.secrets import KubeSecretSource, SecretMalformed, SecretNotFound
from sim.resources import NAMESPACES, SECRETS
from sim.store import Store
from tests.simkit import sim_server

KEY = "LOBBYroutingKEYdoNOTleak01234567"


def _secret(name: str, data: dict[str, str], *, raw: dict[str, str] | None = None) -> dict[str, object]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "rollguard"},
            "data": {**encoded, **(raw or {})}}


def _namespace(store: Store) -> None:
    store.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rollguard"}})


def _replace(store: Store, name: str, data: dict[str, str]) -> None:
    current = store.get(SECRETS, "rollguard", name)
    current["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    store.replace(SECRETS, current, namespace="rollguard", name=name)


async def test_reads_a_key_and_rereads_it_after_the_ttl(tmp_path: Path) -> None:
    clock = FakeClock()
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        _namespace(cluster.store)
        cluster.store.create(SECRETS, _secret("lobby-pagerduty", {"routing-key": KEY}), namespace="rollguard")
        source = KubeSecretSource(kube, namespace="rollguard", ttl=30, clock=clock)
        with capture_logs() as logs:
            assert await source.read("lobby-pagerduty", "routing-key") == KEY
        gets = [(r.verb, r.namespace, r.name) for r in cluster.audit if r.resource == "secrets"]
        assert gets == [("get", "rollguard", "lobby-pagerduty")], "one GET, by name (RBAC resourceNames fit)"
        assert KEY not in repr(logs)

        _replace(cluster.store, "lobby-pagerduty", {"routing-key": "ROTATEDroutingKEYdoNOTleak012345"})
        await clock.advance(29)
        assert await source.read("lobby-pagerduty", "routing-key") == KEY, "read again within the ttl"
        await clock.advance(2)
        assert await source.read("lobby-pagerduty", "routing-key") == "ROTATEDroutingKEYdoNOTleak012345"
        assert len([r for r in cluster.audit if r.resource == "secrets"]) == 2


async def test_a_missing_secret_or_key_is_a_lookup_error_naming_them(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        _namespace(cluster.store)
        source = KubeSecretSource(kube, namespace="rollguard")
        with pytest.raises(SecretNotFound) as missing:
            await source.read("lobby-pagerduty", "routing-key")
        assert str(missing.value) == "Secret rollguard/lobby-pagerduty does not exist"
        assert isinstance(missing.value, LookupError)

        # Created after the miss: found at once (misses are not cached).
        cluster.store.create(SECRETS, _secret("lobby-pagerduty", {"other": KEY}), namespace="rollguard")
        with pytest.raises(SecretNotFound) as no_key:
            await source.read("lobby-pagerduty", "routing-key")
        assert str(no_key.value) == "Secret rollguard/lobby-pagerduty has no key 'routing-key' (keys: other)"
        assert KEY not in str(no_key.value)


async def test_a_value_that_is_not_base64_text_is_malformed(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster, await KubeClient.connect(cluster.kubeconfig) as kube:
        _namespace(cluster.store)
        bad = {"routing-key": base64.b64encode(b"\xff\xfe\x00").decode()}
        cluster.store.create(SECRETS, _secret("lobby-pagerduty", {}, raw=bad), namespace="rollguard")
        source = KubeSecretSource(kube, namespace="rollguard")
        with pytest.raises(SecretMalformed) as malformed:
            await source.read("lobby-pagerduty", "routing-key")
        assert str(malformed.value) == "Secret rollguard/lobby-pagerduty key 'routing-key' is not base64 of UTF-8 text"
        assert isinstance(malformed.value, ValueError)


async def test_an_unreachable_api_server_is_neither_missing_nor_malformed(tmp_path: Path) -> None:
    async with sim_server(tmp_path) as cluster:
        kube = await KubeClient.connect(cluster.kubeconfig)
    try:
        source = KubeSecretSource(kube, namespace="rollguard")
        with pytest.raises(KubeUnavailable) as unreachable:
            await source.read("lobby-pagerduty", "routing-key")
        assert not isinstance(unreachable.value, LookupError | ValueError)
    finally:
        await kube.close()
