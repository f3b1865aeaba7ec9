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
import math
from collections.abc import Callable
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

    def __init__(self, client: KubeClient, config: LeaseConfig, *, clock: Clock | None = None,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not config.retry_period < config.renew_deadline < config.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self._client = client
        self.config = config
        self._clock = clock or SystemClock()
        self.leading = asyncio.Event()
        self.changed = asyncio.Event()
        """Set at every change of leadership; a watcher clears it (see `Supervisor`)."""
        self.on_change = on_change
        """Called with the new state each time this replica starts or stops leading (must not block)."""
        self.transitions = 0
        """How many times this replica became leader."""
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._path = api_path("coordination.k8s.io/v1", "leases", config.namespace, config.name)

    @property
    def _duration_seconds(self) -> int:
        # The field is whole seconds; rounding down would let the others take over before this
        # replica's renew deadline has passed.
        return math.ceil(self.config.lease_duration)

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def holds_lease(self, margin: float) -> bool:
        """Whether this replica leads and its last renewal keeps it leading for at least `margin` more
        seconds: it stops leading at `renew_deadline` after a renewal, before the others may take over
        at `lease_duration`. Writers call this right before each write, so a stalled event loop or a
        renewal that is failing cannot let a deposed leader write."""
        if not self.leading.is_set():
            return False
        # Right before a renewal the lease has `renew_deadline - retry_period` left: a margin larger than
        # half of that would refuse writes of a healthy leader, so it is capped there (short test leases).
        margin = min(margin, (self.config.renew_deadline - self.config.retry_period) / 2)
        return self._clock.now() + margin < self._last_renew + self.config.renew_deadline

    async def run(self) -> None:
        """Campaign and renew until cancelled; on cancellation release the Lease if held."""
        try:
            while True:
                acquired = await self._attempt()
                if acquired:
                    if not self.leading.is_set():
                        self.transitions += 1
                        log.info("became leader", lease=self.config.name, identity=self.config.identity)
                        self._set_leading(True)
                elif self.leading.is_set() and self._clock.now() - self._last_renew >= self.config.renew_deadline:
                    self._stop_leading()
                await self._clock.sleep(self.config.retry_period)
        finally:
            if self.leading.is_set():
                self._set_leading(False)
                await asyncio.shield(self._release())

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        self.changed.set()
        if self.on_change is not None:
            self.on_change(leading)

    def _stop_leading(self) -> None:
        log.error("lost leadership: could not renew the lease in time", lease=self.config.name,
                  identity=self.config.identity)
        self._set_leading(False)

    async def _attempt(self) -> bool:
        """One acquire-or-renew; a leader's attempt is abandoned when its renew deadline passes.

        An API server that accepts the request and never answers must not keep a replica leading
        past `renew_deadline` (the others take over at `lease_duration`): client-go bounds each
        renewal the same way. The deadline is timed on the elector's clock.
        """
        if not self.leading.is_set():
            return await self._try_acquire_or_renew()
        left = self._last_renew + self.config.renew_deadline - self._clock.now()
        attempt = asyncio.create_task(self._try_acquire_or_renew(), name="lease-renew")
        deadline = asyncio.create_task(self._clock.sleep(left), name="lease-renew-deadline")
        try:
            await asyncio.wait((attempt, deadline), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (attempt, deadline):
                task.cancel()
            await asyncio.gather(attempt, deadline, return_exceptions=True)
        if not attempt.cancelled():
            return attempt.result()
        self._stop_leading()
        return False

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
                self._set_leading(False)
            return False
        new_spec = dict(spec)
        new_spec.update({"holderIdentity": self.config.identity, "renewTime": _micro_time(now),
                         "leaseDurationSeconds": self._duration_seconds})
        if not mine:
            new_spec["acquireTime"] = _micro_time(now)
            # client-go counts every change of hands, also after a release (empty holder).
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        lease["spec"] = new_spec
        try:
            await self._client.replace(self._path, lease)
        except KubeError as exc:
            level = "info" if isinstance(exc, KubeApiError) and exc.code == 409 else "warning"
            getattr(log, level)("could not update lease", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = (self.config.identity, new_spec["renewTime"]), now
        self._last_renew = now  # the renewTime written: the others count from no earlier than this
        return True

    async def _create(self, now: float) -> bool:
        stamp = _micro_time(now)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": {"holderIdentity": self.config.identity,
                         "leaseDurationSeconds": self._duration_seconds,
                         "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}
        try:
            await self._client.create(api_path("coordination.k8s.io/v1", "leases", self.config.namespace), body)
        except KubeError as exc:
            log.info("could not create lease", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = (self.config.identity, stamp), now
        self._last_renew = now
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
