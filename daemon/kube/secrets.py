"""Read keys of Secrets in the daemon's namespace through the Kubernetes API, with a short cache.

Policies name the Secrets holding their own PagerDuty routing key or Slack webhook URL
(`routingKeyFrom: {secret, key}`); the notify package reads them through its `SecretSource`
Protocol, which `KubeSecretSource` implements with plain strings (this module knows nothing of
notify). A Secret's data is cached for `ttl` seconds, then read again, so a rotated key is used
within that time. Failures are not cached: a Secret created after a miss is found at once.

    Exception
     ├── LookupError
     │    └── SecretNotFound     the Secret, or the key in it, does not exist (HTTP 404 / no such key)
     ├── ValueError
     │    └── SecretMalformed    the key's value is not base64 of UTF-8 text
     └── KubeError               (from daemon.kube.client) forbidden, API server unreachable: transient

Messages name the namespace, Secret and key, never a value; nothing here logs values.
RBAC: `get` on `secrets` in the daemon's namespace, restricted with `resourceNames`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from daemon.clock import Clock, SystemClock
from daemon.kube.client import KubeApiError, KubeClient, api_path

DEFAULT_TTL = 30.0


class SecretNotFound(LookupError):
    """The Secret or its key does not exist."""


class SecretMalformed(ValueError):
    """The key exists but its value is not base64-encoded UTF-8 text."""


@dataclass(frozen=True)
class _Cached:
    data: Mapping[str, str]
    """The Secret's `data`, still base64-encoded (decoded only for the key asked for)."""
    read_at: float
    """Clock time of the GET."""


class KubeSecretSource:
    """`SecretSource` on the Kubernetes API: GET /api/v1/namespaces/NS/secrets/NAME, cached `ttl` seconds."""

    def __init__(self, kube: KubeClient, *, namespace: str, ttl: float = DEFAULT_TTL,
                 clock: Clock | None = None) -> None:
        """`namespace`: the daemon's own (where the chart lets it read Secrets); `ttl`: seconds a read
        Secret is reused before it is read again."""
        self._kube = kube
        self.namespace = namespace
        self._ttl = ttl
        self._clock = clock if clock is not None else SystemClock()
        self._cache: dict[str, _Cached] = {}

    async def read(self, secret: str, key: str) -> str:
        """The text value of `key` in Secret `secret`; raises SecretNotFound, SecretMalformed or KubeError."""
        data = await self._data(secret)
        if key not in data:
            keys = ", ".join(sorted(data)) or "none"
            raise SecretNotFound(f"Secret {self.namespace}/{secret} has no key {key!r} (keys: {keys})")
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise SecretMalformed(f"Secret {self.namespace}/{secret} key {key!r} is not base64 of UTF-8 "
                                  "text") from None

    async def _data(self, secret: str) -> Mapping[str, str]:
        now = self._clock.now()
        cached = self._cache.get(secret)
        if cached is not None and now - cached.read_at < self._ttl:
            return cached.data
        try:
            obj = await self._kube.get(api_path("v1", "secrets", self.namespace, secret))
        except KubeApiError as exc:
            if exc.code == 404:
                self._cache.pop(secret, None)
                raise SecretNotFound(f"Secret {self.namespace}/{secret} does not exist") from None
            raise
        raw = obj.get("data") or {}
        data = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        self._cache[secret] = _Cached(data, now)
        return data
