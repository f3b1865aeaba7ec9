"""The resource types the simulated API server serves: group, version, names, kind, scope."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    """One REST resource, e.g. `deployments` in `apps/v1`."""

    group: str
    """API group; "" for the core group."""
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_generation: bool = False
    """Whether `metadata.generation` is maintained (bumped on spec changes)."""
    storage: str = ""
    """Storage bucket; resources that are views of the same objects share one (both Event APIs)."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def bucket(self) -> str:
        return self.storage or self.qualified

    @property
    def qualified(self) -> str:
        """`deployments.apps`, or `pods` for the core group: the name used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, singular="namespace",
                          short_names=("ns",), subresources=("status",))
PODS = ResourceType("", "v1", "pods", "Pod", singular="pod", short_names=("po",),
                    subresources=("status", "log"), categories=("all",), has_generation=True)
SERVICES = ResourceType("", "v1", "services", "Service", singular="service", short_names=("svc",),
                        subresources=("status",), categories=("all",))
CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap", singular="configmap", short_names=("cm",))
SECRETS = ResourceType("", "v1", "secrets", "Secret", singular="secret")
EVENTS = ResourceType("", "v1", "events", "Event", singular="event", short_names=("ev",), storage="events")
DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment", singular="deployment",
                           short_names=("deploy",), subresources=("status", "scale"), categories=("all",),
                           has_generation=True)
REPLICASETS = ResourceType("apps", "v1", "replicasets", "ReplicaSet", singular="replicaset", short_names=("rs",),
                           subresources=("status", "scale"), categories=("all",), has_generation=True)
JOBS = ResourceType("batch", "v1", "jobs", "Job", singular="job", subresources=("status",), categories=("all",),
                    has_generation=True)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", singular="lease")
EVENTS_V1 = ResourceType("events.k8s.io", "v1", "events", "Event", singular="event", short_names=("ev",),
                         storage="events")

ALL: tuple[ResourceType, ...] = (NAMESPACES, PODS, SERVICES, CONFIGMAPS, SECRETS, EVENTS, DEPLOYMENTS,
                                 REPLICASETS, JOBS, LEASES, EVENTS_V1)


def group_versions() -> dict[str, list[ResourceType]]:
    """Resources by group-version (`v1`, `apps/v1`, ...), in registration order."""
    out: dict[str, list[ResourceType]] = {}
    for rt in ALL:
        out.setdefault(rt.api_version, []).append(rt)
    return out


def find(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource type served at `/apis/{group}/{version}/{plural}` (group "" for `/api/v1`)."""
    for rt in ALL:
        if (rt.group, rt.version, rt.plural) == (group, version, plural):
            return rt
    return None
