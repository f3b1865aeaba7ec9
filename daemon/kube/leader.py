"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Several replicas run; only the one holding the Lease acts (rolls back, writes state, records
Events). The algorithm follows client-go's leader elector (k8s-rollout-spec section 7):

* GET the Lease; 404 → CREATE it holding it ourselves.
* Held by someone else and not expired → follower. Expiry is judged by *local* time: when this
  replica last saw the record change, plus `leaseDurationSeconds` — never by the holder's clock.
* Otherwise PUT with the resourceVersion just read (a 409 means another replica won the race),
  keeping `acquireTime`/`leaseTransitions` when renewing, bumping `leaseTransitions` on takeover.
* A leader that cannot renew within `renew_deadline` stops leading at once, before the lease can
  expire for the others, so two replicas never act at the same time.
* On a clean stop the leader releases the Lease (empty holder), so a successor takes over at once.

kubernetes_asyncio ships a LeaseLock too, but it writes naive local times, does not maintain
`leaseTransitions` and cannot tell "lost the race" from "API down"; this one speaks the API's JSON
through the same client as the rest of the daemon.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.clock import Clock, SystemClock
from daemon.kube.client import KubeApiError, KubeClient, KubeError, api_path

log = structlog.get_logger("rollguard.leader")


def _micro_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    """Timing of the election, in seconds (client-go's defaults: 15 / 10 / 2)."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Campaigns for the Lease forever; `leading` is set exactly while this replica may act."""

    def __init__(self, client: KubeClient, config: LeaseConfig, *, clock: Clock | None = None) -> None:
        if not config.retry_period < config.renew_deadline < config.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self._client = client
        self.config = config
        self._clock = clock or SystemClock()
        self.leading = asyncio.Event()
        self.transitions = 0
        """How many times this replica became leader."""
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._path = api_path("coordination.k8s.io/v1", "leases", config.namespace, config.name)

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def run(self) -> None:
        """Campaign and renew until cancelled; on cancellation release the Lease if held."""
        try:
            while True:
                acquired = await self._try_acquire_or_renew()
                now = self._clock.now()
                if acquired:
                    self._last_renew = now
                    if not self.leading.is_set():
                        self.transitions += 1
                        log.info("became leader", lease=self.config.name, identity=self.config.identity)
                        self.leading.set()
                elif self.leading.is_set() and now - self._last_renew >= self.config.renew_deadline:
                    log.error("lost leadership: could not renew the lease in time", lease=self.config.name,
                              identity=self.config.identity)
                    self.leading.clear()
                await self._clock.sleep(self.config.retry_period)
        finally:
            if self.leading.is_set():
                self.leading.clear()
                await asyncio.shield(self._release())

    async def _try_acquire_or_renew(self) -> bool:
        now = self._clock.now()
        try:
            lease = await self._client.get(self._path)
        except KubeApiError as exc:
            if exc.code != 404:
                log.warning("cannot read lease", lease=self.config.name, error=exc.message)
                return False
            return await self._create(now)
        except KubeError as exc:
            log.warning("cannot read lease", lease=self.config.name, error=str(exc))
            return False
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        observed = (holder, str(spec.get("renewTime") or ""))
        if observed != self._observed:
            self._observed, self._observed_at = observed, now
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        mine = holder == self.config.identity
        if holder and not mine and now < self._observed_at + duration:
            if self.leading.is_set():
                log.error("another replica holds the lease", lease=self.config.name, holder=holder)
                self.leading.clear()
            return False
        new_spec = dict(spec)
        new_spec.update({"holderIdentity": self.config.identity, "renewTime": _micro_time(now),
                         "leaseDurationSeconds": int(self.config.lease_duration)})
        if not mine:
            new_spec["acquireTime"] = _micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        lease["spec"] = new_spec
        try:
            await self._client.replace(self._path, lease)
        except KubeError as exc:
            level = "info" if isinstance(exc, KubeApiError) and exc.code == 409 else "warning"
            getattr(log, level)("could not update lease", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = (self.config.identity, new_spec["renewTime"]), now
        return True

    async def _create(self, now: float) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": {"holderIdentity": self.config.identity,
                         "leaseDurationSeconds": int(self.config.lease_duration),
                         "acquireTime": _micro_time(now), "renewTime": _micro_time(now), "leaseTransitions": 0}}
        try:
            await self._client.create(api_path("coordination.k8s.io/v1", "leases", self.config.namespace), body)
        except KubeError as exc:
            log.info("could not create lease", lease=self.config.name, error=str(exc))
            return False
        return True

    async def _release(self) -> None:
        """Give the Lease up so a successor need not wait for it to expire."""
        try:
            lease = await self._client.get(self._path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.config.identity:
                return
            spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro_time(self._clock.now())})
            lease["spec"] = spec
            await self._client.replace(self._path, lease)
            log.info("released lease", lease=self.config.name, identity=self.config.identity)
        except KubeError as exc:
            log.warning("could not release lease", lease=self.config.name, error=str(exc))
