"""Stand-ins of self-healing GitOps controllers (Argo CD, Flux) for tests and the demo.

    git = FakeGit()
    revision = git.commit("https://git.example/shop.git", "apps/backend", [deployment_manifest])
    async with running_gitops(cluster.store, cluster.clock, git, self_heal_delay=5.0):
        ...  # Applications / Kustomizations stored in the cluster now own their Deployments

`FakeGit` holds the "Git" side: per repository and path, a list of commits (a 40-hex revision and
the Deployment manifests). `GitOpsControllers` is one named task that, every `tick` seconds, reconciles
every stored object of these kinds, with the fields the real controllers use:

- Argo CD `Application` (argoproj.io/v1alpha1): `spec.source.{repoURL,path,targetRevision}`,
  `spec.destination.namespace`, `spec.syncPolicy.automated.{selfHeal,enabled}`. A new Git revision is
  synced when automated sync is on; drift of a synced revision is reverted `self_heal_delay` seconds after
  it is first seen, only with `selfHeal: true` (Argo CD's default self-heal timeout is 5 s). It writes
  `status.sync.{status,revision}` (revision: what Git's head was compared with),
  `status.operationState.syncResult.revision` (what was last synced) and tracks what it applies with the
  `argocd.argoproj.io/tracking-id` annotation (`APP:apps/Deployment:NS/NAME`, the default since 3.0).
- Flux `Kustomization` (kustomize.toolkit.fluxcd.io/v1) and `HelmRelease` (helm.toolkit.fluxcd.io/v2):
  `spec.suspend`, `spec.interval`, `spec.path` (Kustomization) or `spec.chart.spec.chart` (HelmRelease,
  read as the path in the repository), `spec.targetNamespace`. Unless suspended, each interval applies
  Git's head (drift included) and writes `status.lastAppliedRevision` (`main@sha1:REV`; HelmRelease:
  `status.lastAttemptedRevision` and `status.history[0].chartVersion`), labelling what it applies with
  `kustomize.toolkit.fluxcd.io/{name,namespace}` / `helm.toolkit.fluxcd.io/{name,namespace}`.

Flux objects name their repository through `spec.sourceRef`: a `GitRepository`
(source.toolkit.fluxcd.io/v1) whose `spec.url` is the repository and whose `status.artifact.revision`
(`main@sha1:REV`) the stand-in keeps at the repository's newest commit, suspended or not (as
source-controller does).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.clock import Clock
from sim import crds
from sim.crds import CRDS
from sim.resources import DEPLOYMENTS, ResourceType
from sim.store import ApiError, Obj, Store, copy_json
from sim.strategies import apply_defaults, prepare_update, validate

log = structlog.get_logger(__name__)

APPLICATIONS = ResourceType("argoproj.io", "v1alpha1", "applications", "Application", singular="application",
                            short_names=("app", "apps"), has_generation=True, storage="applications.argoproj.io")
KUSTOMIZATIONS = ResourceType("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization",
                              singular="kustomization", short_names=("ks",), subresources=("status",),
                              has_generation=True, storage="kustomizations.kustomize.toolkit.fluxcd.io")
GITREPOSITORIES = ResourceType("source.toolkit.fluxcd.io", "v1", "gitrepositories", "GitRepository",
                               singular="gitrepository", short_names=("gitrepo",), subresources=("status",),
                               has_generation=True, storage="gitrepositories.source.toolkit.fluxcd.io")
HELMRELEASES = ResourceType("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease", singular="helmrelease",
                            short_names=("hr",), subresources=("status",), has_generation=True,
                            storage="helmreleases.helm.toolkit.fluxcd.io")
TRACKING_ID = "argocd.argoproj.io/tracking-id"
_FLUX_LABELS = {"Kustomization": "kustomize.toolkit.fluxcd.io", "HelmRelease": "helm.toolkit.fluxcd.io"}


def crd_manifest(rt: ResourceType) -> Obj:
    """The CustomResourceDefinition of one of these kinds (schema-less: unknown fields are kept)."""
    version: Obj = {"name": rt.version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    if "status" in rt.subresources:
        version["subresources"] = {"status": {}}
    return {"apiVersion": CRDS.api_version, "kind": CRDS.kind, "metadata": {"name": rt.bucket},
            "spec": {"group": rt.group, "scope": "Namespaced", "versions": [version],
                     "names": {"plural": rt.plural, "singular": rt.singular, "kind": rt.kind,
                               "listKind": rt.list_kind, "shortNames": list(rt.short_names)}}}


GITOPS_CRDS = tuple(crd_manifest(rt) for rt in (APPLICATIONS, KUSTOMIZATIONS, HELMRELEASES, GITREPOSITORIES))


@dataclass
class FakeGit:
    """The "Git" side: commits per (repository URL, path); the newest is the head."""

    commits: dict[tuple[str, str], list[tuple[str, list[Obj]]]] = field(default_factory=dict)
    latest: dict[str, str] = field(default_factory=dict)
    """The newest revision of each repository (whatever path it changed)."""

    def commit(self, repo_url: str, path: str, manifests: Sequence[Obj]) -> str:
        """Record a commit of `manifests` (Deployments) at `path`; returns its 40-hex revision."""
        history = self.commits.setdefault((repo_url, path), [])
        revision = hashlib.sha1(f"{repo_url}:{path}:{len(history)}:{manifests!r}".encode()).hexdigest()
        history.append((revision, [copy_json(dict(m)) for m in manifests]))
        self.latest[repo_url] = revision
        return revision

    def head(self, repo_url: str, path: str) -> tuple[str, list[Obj]] | None:
        history = self.commits.get((repo_url, path))
        return history[-1] if history else None


def _duration(text: Any, default: float) -> float:
    """A Go duration as Flux writes them (`30s`, `1m`, `1h`, `1m30s`) in seconds."""
    if not isinstance(text, str) or not text:
        return default
    total, number = 0.0, ""
    for char in text:
        if char.isdigit() or char == ".":
            number += char
        elif number:
            total += float(number) * {"s": 1, "m": 60, "h": 3600}.get(char, 1)
            number = ""
    return total or default


class GitOpsControllers:
    """Argo CD's and Flux's reconcilers, simplified to the fields above; one task, `sim-gitops`."""

    def __init__(self, store: Store, clock: Clock, git: FakeGit, *, self_heal_delay: float = 5.0,
                 tick: float = 0.5) -> None:
        self.store = store
        self.clock = clock
        self.git = git
        self.self_heal_delay = self_heal_delay
        """Seconds between seeing drift and reverting it (Argo CD self-heal)."""
        self.tick = tick
        """Seconds between passes."""
        self.applied: list[tuple[str, str, str]] = []
        """(kind, namespace/name of the owner, revision) of every apply, in order: what a test counts."""
        self._drift_seen: dict[tuple[str, str, str], float] = {}
        self._last_run: dict[tuple[str, str, str], float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sim-gitops")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                self.reconcile_all()
            except Exception:  # a bug here must not stop the stand-in silently: log, carry on
                log.exception("sim gitops pass failed")
            await self.clock.sleep(self.tick)

    def reconcile_all(self) -> None:
        """One pass over every Application, Kustomization and HelmRelease."""
        for repo in list(self.store.iter_objects(GITREPOSITORIES)):
            self._git_repository(repo)
        for rt in (APPLICATIONS, KUSTOMIZATIONS, HELMRELEASES):
            for owner in list(self.store.iter_objects(rt)):
                try:
                    if rt is APPLICATIONS:
                        self._application(owner)
                    else:
                        self._flux(rt, owner)
                except ApiError as error:  # a conflict: the next pass sees the new state
                    log.info("sim gitops write failed", kind=rt.kind, error=error.message)

    # ----- Argo CD -----

    def _application(self, app: Obj) -> None:
        meta, spec = app["metadata"], app.get("spec") or {}
        source = spec.get("source") or {}
        head = self.git.head(str(source.get("repoURL", "")), str(source.get("path", "")))
        if head is None:
            return
        revision, manifests = head
        namespace = str((spec.get("destination") or {}).get("namespace") or meta["namespace"])
        status = app.get("status") or {}
        synced = ((status.get("operationState") or {}).get("syncResult") or {}).get("revision")
        automated = (spec.get("syncPolicy") or {}).get("automated")
        auto = isinstance(automated, Mapping) and automated.get("enabled", True) is not False
        self_heal = auto and bool(automated.get("selfHeal")) if isinstance(automated, Mapping) else False
        key = ("Application", meta["namespace"], meta["name"])
        tracking = f"{meta['name']}:apps/Deployment:{namespace}/"
        drift = self._drifted(namespace, manifests)
        now = self.clock.now()
        apply = False
        if auto and synced != revision:
            apply = True
        elif drift and self_heal:
            first = self._drift_seen.setdefault(key, now)
            apply = now - first >= self.self_heal_delay
        if not drift:
            self._drift_seen.pop(key, None)
        if apply:
            self._apply(namespace, manifests, annotations=lambda name: {TRACKING_ID: tracking + name}, labels={})
            self._drift_seen.pop(key, None)
            self.applied.append(("Application", f"{meta['namespace']}/{meta['name']}", revision))
            synced, drift = revision, False
        new_status = copy_json(status)
        new_status["sync"] = {"status": "OutOfSync" if drift or synced != revision else "Synced",
                              "revision": revision,
                              "comparedTo": {"source": copy_json(source),
                                             "destination": copy_json(spec.get("destination") or {})}}
        if synced is not None:
            new_status.setdefault("operationState", {})["syncResult"] = {"revision": synced}
        if new_status != status:
            updated = copy_json(app)
            updated["status"] = new_status
            self.store.replace(APPLICATIONS, updated, namespace=meta["namespace"], name=meta["name"],
                               expect_rv=meta["resourceVersion"])

    # ----- Flux -----

    def _git_repository(self, repo: Obj) -> None:
        revision = self.git.latest.get(str((repo.get("spec") or {}).get("url", "")))
        if revision is None:
            return
        status = {"artifact": {"revision": f"main@sha1:{revision}"},
                  "observedGeneration": repo["metadata"].get("generation", 1)}
        if repo.get("status") != status:
            updated = copy_json(repo)
            updated["status"] = status
            self.store.replace(GITREPOSITORIES, updated, namespace=repo["metadata"]["namespace"],
                               name=repo["metadata"]["name"], expect_rv=repo["metadata"]["resourceVersion"])

    def _repo_url(self, rt: ResourceType, owner: Obj) -> str:
        spec = owner.get("spec") or {}
        ref = spec.get("sourceRef") if rt is KUSTOMIZATIONS else ((spec.get("chart") or {}).get("spec") or {}).get(
            "sourceRef")
        if not isinstance(ref, Mapping):
            return ""
        repo = self.store.peek(GITREPOSITORIES, str(ref.get("namespace") or owner["metadata"]["namespace"]),
                               str(ref.get("name", "")))
        return str(((repo or {}).get("spec") or {}).get("url", ""))

    def _flux(self, rt: ResourceType, owner: Obj) -> None:
        meta, spec = owner["metadata"], owner.get("spec") or {}
        if spec.get("suspend") is True:
            return
        key = (rt.kind, meta["namespace"], meta["name"])
        now = self.clock.now()
        if now - self._last_run.get(key, float("-inf")) < _duration(spec.get("interval"), 60.0):
            return
        self._last_run[key] = now
        path = spec.get("path") if rt is KUSTOMIZATIONS else ((spec.get("chart") or {}).get("spec") or {}).get("chart")
        repo = self._repo_url(rt, owner)
        head = self.git.head(repo, str(path or ""))
        if head is None:
            return
        revision, manifests = head
        namespace = str(spec.get("targetNamespace") or meta["namespace"])
        prefix = _FLUX_LABELS[rt.kind]
        if self._drifted(namespace, manifests) or self._stale_status(rt, owner, revision):
            self._apply(namespace, manifests, annotations=lambda name: {},
                        labels={f"{prefix}/name": meta["name"], f"{prefix}/namespace": meta["namespace"]})
            self.applied.append((rt.kind, f"{meta['namespace']}/{meta['name']}", revision))
        status = copy_json(owner.get("status") or {})
        if rt is KUSTOMIZATIONS:
            status["lastAppliedRevision"] = status["lastAttemptedRevision"] = f"main@sha1:{revision}"
        else:
            status["lastAttemptedRevision"] = revision[:12]
            status["history"] = [{"chartName": str(path), "chartVersion": revision[:12], "status": "deployed"}]
        status["observedGeneration"] = meta.get("generation", 1)
        status["conditions"] = [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                                 "message": f"Applied revision: main@sha1:{revision}"}]
        if status != owner.get("status"):
            updated = copy_json(owner)
            updated["status"] = status
            self.store.replace(rt, updated, namespace=meta["namespace"], name=meta["name"],
                               expect_rv=meta["resourceVersion"])

    @staticmethod
    def _stale_status(rt: ResourceType, owner: Obj, revision: str) -> bool:
        status = owner.get("status") or {}
        applied = status.get("lastAppliedRevision") if rt is KUSTOMIZATIONS else status.get("lastAttemptedRevision")
        return not str(applied or "").endswith(revision if rt is KUSTOMIZATIONS else revision[:12])

    # ----- applying -----

    def _desired(self, manifest: Obj) -> Obj:
        desired = copy_json(manifest)
        apply_defaults(DEPLOYMENTS, desired)
        return desired

    def _drifted(self, namespace: str, manifests: Sequence[Obj]) -> bool:
        """Whether a live Deployment's template or replicas differ from Git's (or it is missing)."""
        for manifest in manifests:
            live = self.store.peek(DEPLOYMENTS, namespace, manifest["metadata"]["name"])
            desired = self._desired(manifest)
            if live is None or any(live["spec"].get(f) != desired["spec"].get(f) for f in ("template", "replicas")):
                return True
        return False

    def _apply(self, namespace: str, manifests: Sequence[Obj], *, annotations: Any,
               labels: Mapping[str, str]) -> None:
        """Create or update each Deployment with Git's spec; other annotations (rollguard's) are kept,
        as `kubectl apply` / server-side apply keep fields they do not own."""
        for manifest in manifests:
            name = manifest["metadata"]["name"]
            desired = self._desired(manifest)
            meta = desired["metadata"]
            meta["namespace"] = namespace
            meta.setdefault("annotations", {}).update(annotations(name))
            meta.setdefault("labels", {}).update(labels)
            live = self.store.peek(DEPLOYMENTS, namespace, name)
            if live is None:
                validate(DEPLOYMENTS, desired)
                desired["status"] = {}
                self.store.create(DEPLOYMENTS, desired, namespace=namespace)
                continue
            updated = copy_json(live)
            updated["spec"] = desired["spec"]
            updated["metadata"].setdefault("annotations", {}).update(meta["annotations"])
            updated["metadata"].setdefault("labels", {}).update(meta["labels"])
            prepare_update(DEPLOYMENTS, live, updated)
            validate(DEPLOYMENTS, updated, live)
            self.store.replace(DEPLOYMENTS, updated, namespace=namespace, name=name,
                               expect_rv=live["metadata"]["resourceVersion"])


@contextlib.asynccontextmanager
async def running_gitops(store: Store, clock: Clock, git: FakeGit, *, self_heal_delay: float = 5.0,
                         tick: float = 0.5, install_crds: bool = True) -> AsyncIterator[GitOpsControllers]:
    """The stand-ins, running until the block ends; their CRDs are stored first (`install_crds`)."""
    if install_crds:
        for crd in GITOPS_CRDS:
            if store.peek(CRDS, "", crd["metadata"]["name"]) is None:
                created = copy_json(crd)
                crds.prepare_create(CRDS, created)  # its status, as the API server sets it
                store.create(CRDS, created)
    controllers = GitOpsControllers(store, clock, git, self_heal_delay=self_heal_delay, tick=tick)
    await controllers.start()
    try:
        yield controllers
    finally:
        await controllers.stop()
