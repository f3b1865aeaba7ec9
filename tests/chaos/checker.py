"""The invariant checker: reads only what an outsider sees, and reports each broken promise with evidence.

Inputs (`Observation`): the API server's audit log (who wrote what, with request bodies), the final
Deployment, the harness's own watch of the Deployment's revisions, the Slack and PagerDuty receivers'
records, the daemon's log output and its `/api/v1/analyses`. Nothing of the daemon's internals.

Event reasons are read from the Events the daemon created. Reasons this checker does not know (a
lifecycle may add e.g. `RollbackFenced` or `Superseded`) count as an announced verdict; what makes
"a human was paged" is a PagerDuty trigger with the revision's dedup key, whatever the reason.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sim.apiserver import AuditRecord

NOT_VERDICTS = frozenset({"AnalysisStarted", "RuleMatched", "RollbackJobSucceeded", "RollbackJobFailed",
                          "ApprovalIgnored", "RollbackCompleted", "Recovered", "RollbackSkipped",
                          "InvalidState", "AlertMisrouted", "RuleFileRefused", "AnalysisError"})
"""Events that do not end an analysis (a fenced undo that nobody hears about is exactly what I1 catches)."""
PAGES = frozenset({"RolledBack", "RollbackFailed", "ReviewRequested", "RolloutFailed", "RollbackFenced",
                   "RollbackRolloutFailed"})
PHASES = {"RolledBack": {"rolling-back", "rolled-back"}, "AnalysisPassed": {"passed"},
          "ReviewRequested": {"review"}, "RollbackFailed": {"rollback-failed"}, "AnalysisStarted": {"analysing"},
          "RolloutFailed": {"failed", "rolling-back", "rolled-back", "review", "rollback-failed", "fenced"},
          "RollbackFenced": {"fenced"}, "AnalysisSuperseded": {"superseded"}, "RollbackDenied": {"denied"},
          "RollbackRolloutFailed": {"rollback-failed"}}
STATE = "rollguard.io/state"
SECRET_SHAPES = (re.compile(r"xox[abprs]-[0-9A-Za-z-]{10,}"),)
_REVISION = re.compile(r"\brevision (\d+)")
_JOB_NAME = re.compile(r"-rollback-r(\d+)-")


@dataclass(frozen=True)
class DeployRecord:
    """A deploy the harness made (or the concurrent writer made): its revision, template and intent."""

    step: int
    kind: str
    image: str
    intent: str
    at: float
    revision: int
    template_hash: str


@dataclass
class Observation:
    audit: list[AuditRecord]
    users: tuple[str, ...]
    identities: dict[str, str]
    deploys: list[DeployRecord]
    timeline: list[Any]
    deployment: dict[str, Any]
    slack: list[dict[str, Any]]
    slack_roots: list[str]
    pagerduty: list[dict[str, Any]]
    logs: str
    analyses: list[str]
    dry_run: bool
    leader_election: bool
    lease_seconds: float
    secrets: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Violation:
    invariant: str
    message: str
    evidence: tuple[str, ...] = ()

    def describe(self) -> str:
        return "\n".join([f"{self.invariant}: {self.message}", *(f"    {e}" for e in self.evidence)])


@dataclass(frozen=True)
class Event:
    at: float
    reason: str
    message: str
    revision: int


@dataclass(frozen=True)
class Undo:
    at: float
    code: int
    analysed_revision: int
    analysed_hash: str
    live_revision: str
    live_hash: str


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _revision_at(obs: Observation, at: float) -> int:
    revision = 0
    for seen in obs.timeline:
        if seen.at <= at:
            revision = seen.revision
    return revision


def _writes(obs: Observation) -> list[AuditRecord]:
    return [r for r in obs.audit if r.user in obs.users and r.verb not in ("get", "list", "watch")]


def events(obs: Observation) -> list[Event]:
    """The daemon's Events, each with the revision it is about: the one its message names; for a
    rollback's completion, the revision that was rolled back; otherwise the one live at the time."""
    found = []
    done = [u for u in undos(obs) if u.code < 300]
    for r in _writes(obs):
        if r.resource == "events" and r.verb == "create" and r.code < 300:
            body = _json(r.body) or {}
            reason = str(body.get("reason", ""))
            message = str(body.get("message") or body.get("note") or "")
            match = _REVISION.search(message)
            if reason in ("RollbackCompleted", "Recovered") and any(u.at <= r.at for u in done):
                revision = [u for u in done if u.at <= r.at][-1].analysed_revision
            else:
                revision = int(match.group(1)) if match else _revision_at(obs, r.at)
            found.append(Event(r.at, reason, message, revision))
    return found


def undos(obs: Observation) -> list[Undo]:
    found = []
    for r in _writes(obs):
        if r.resource != "deployments" or r.verb != "patch" or r.subresource:
            continue
        body = _json(r.body)
        if not isinstance(body, list) or not any(op.get("path") == "/spec/template" for op in body
                                                  if isinstance(op, dict)):
            continue
        state: dict[str, Any] = {}
        for op in body:
            if isinstance(op, dict) and op.get("path") == "/metadata/annotations":
                state = _json(str((op.get("value") or {}).get(STATE, ""))) or {}
        rollout = state.get("rollout") or {}
        found.append(Undo(r.at, r.code, int(rollout.get("revision") or 0), str(rollout.get("hash") or ""),
                          r.object_revision, r.object_template_hash))
    return found


def paged(obs: Observation, revision: int) -> bool:
    key = f"rollguard/staging/backend/{revision}"
    return any(e.get("dedup_key") == key and e.get("event_action") == "trigger" for e in obs.pagerduty)


def check(obs: Observation) -> list[Violation]:
    """Every violated invariant, with evidence; [] when all hold."""
    return [*check_silence(obs), *check_rollbacks(obs), *check_jobs(obs), *check_traces(obs),
            *check_writers(obs), *check_secrets(obs)]


def check_silence(obs: Observation) -> list[Violation]:
    """I1: nothing bad stays silent; no analysis ends without an announced verdict."""
    out: list[Violation] = []
    done = [u for u in undos(obs) if u.code < 300]
    evs = events(obs)
    for deploy in obs.deploys:
        if deploy.intent != "bad" or not deploy.revision:
            continue
        rolled = any(u.analysed_revision == deploy.revision for u in done)
        if not rolled and not paged(obs, deploy.revision):
            said = [f"{e.reason}: {e.message[:160]}" for e in evs if e.revision == deploy.revision]
            out.append(Violation("I1", f"revision {deploy.revision} ({deploy.kind}, {deploy.image}) is bad but was "
                                       "neither rolled back nor paged about",
                                 tuple(said) or ("no Event about it",)))
    for start in unfinished_analyses(obs, evs):
        said = sorted({e.reason for e in evs if e.revision == start.revision})
        out.append(Violation("I1", f"the analysis of revision {start.revision} ended without an announced "
                                   "verdict", (f"its Events: {', '.join(said)}",)))
    return out


def unfinished_analyses(obs: Observation, evs: list[Event] | None = None) -> list[Event]:
    """The `AnalysisStarted` Events with no verdict Event for their revision yet, not superseded by a
    later deploy and not paged about. While the daemons run, these are analyses in progress; once the
    run has settled, each is an analysis that ended silently (I1)."""
    evs = events(obs) if evs is None else evs
    later = {d.revision: d.at for d in obs.deploys}
    open_ = []
    for start in (e for e in evs if e.reason == "AnalysisStarted"):
        superseded = any(rev > start.revision and at > start.at for rev, at in later.items())
        ended = any(e.revision == start.revision and e.reason not in NOT_VERDICTS for e in evs)
        if not superseded and not ended and not paged(obs, start.revision):
            open_.append(start)
    return open_


def check_rollbacks(obs: Observation) -> list[Violation]:
    """I2 (one rollback per revision, only of the analysed template) and I7 (never of a healthy one)."""
    out: list[Violation] = []
    done = [u for u in undos(obs) if u.code < 300]
    for revision, n in Counter(u.analysed_revision for u in done).items():
        if n > 1:
            out.append(Violation("I2", f"revision {revision} was rolled back {n} times",
                                 tuple(f"undo at {u.at:.3f}" for u in done if u.analysed_revision == revision)))
    for u in done:
        if u.live_hash and u.analysed_hash != u.live_hash:
            newer = next((d for d in obs.deploys if d.template_hash == u.live_hash), None)
            out.append(Violation("I2", f"an undo for revision {u.analysed_revision} (template {u.analysed_hash}) "
                                       f"overwrote template {u.live_hash} (revision {u.live_revision}"
                                       f"{', ' + newer.image if newer else ''})"))
    healthy = {d.template_hash: d for d in obs.deploys if d.intent == "healthy"}
    for u in done:
        if u.analysed_hash in healthy:
            d = healthy[u.analysed_hash]
            out.append(Violation("I7", f"healthy revision {u.analysed_revision} ({d.kind}, {d.image}) was rolled "
                                       "back"))
    return out


def check_jobs(obs: Observation) -> list[Violation]:
    """I3: at most one pre-rollback Job per revision, and none when no rollback follows it."""
    out: list[Violation] = []
    jobs: Counter[int] = Counter()
    for r in _writes(obs):
        if r.resource == "jobs" and r.verb == "create" and r.code < 300:
            meta = (_json(r.body) or {}).get("metadata") or {}
            match = _JOB_NAME.search(str(meta.get("generateName") or meta.get("name") or ""))
            jobs[int(match.group(1)) if match else 0] += 1
    rolled = {u.analysed_revision for u in undos(obs) if u.code < 300}
    # A newer deploy that lands while the Job runs cannot be foreseen: the rollback is then fenced, which
    # must be announced as such (I4 checks its page). Any other Job without its rollback is a violation.
    fenced = {e.revision for e in events(obs) if e.reason == "RollbackFenced" and "had already run" in e.message}
    for revision, n in sorted(jobs.items()):
        if n > 1:
            out.append(Violation("I3", f"{n} pre-rollback Jobs ran for revision {revision}"))
        if revision not in rolled and revision not in fenced:
            out.append(Violation("I3", f"a pre-rollback Job ran for revision {revision} but no rollback followed"))
    return out


def check_traces(obs: Observation) -> list[Violation]:
    """I4: each verdict has its Event, state annotation and notifications."""
    out: list[Violation] = []
    evs = events(obs)
    slack_text = json.dumps(obs.slack, ensure_ascii=False)
    for e in evs:
        if e.reason in NOT_VERDICTS:
            continue
        title = e.message.split(": ", 1)[0]
        if title not in slack_text:
            out.append(Violation("I4", f"{e.reason} for revision {e.revision} was never posted to Slack",
                                 (e.message[:200],)))
        key = f"rollguard/staging/backend/{e.revision}"
        if e.reason in PAGES and not any(p.get("dedup_key") == key and p.get("event_action") == "trigger"
                                         and title in str((p.get("payload") or {}).get("summary", ""))
                                         for p in obs.pagerduty):
            out.append(Violation("I4", f"{e.reason} for revision {e.revision} paged nobody "
                                       f"(no PagerDuty trigger {key} saying it)", (e.message[:200],)))
    for u in (u for u in undos(obs) if u.code < 300):
        told = [e for e in evs if e.revision == u.analysed_revision and e.reason not in NOT_VERDICTS
                and e.at >= u.at]
        reasons = ", ".join(e.reason for e in evs if e.revision == u.analysed_revision)
        if not told:
            out.append(Violation("I4", f"revision {u.analysed_revision} was rolled back (undo at {u.at:.3f}) but no "
                                       "Event says so", (f"its Events: {reasons}",)))
        key = f"rollguard/staging/backend/{u.analysed_revision}"
        if not obs.dry_run and not any(p.get("dedup_key") == key and p.get("event_action") == "trigger"
                                       and "Rolled back" in str((p.get("payload") or {}).get("summary", ""))
                                       for p in obs.pagerduty):
            out.append(Violation("I4", f"revision {u.analysed_revision} was rolled back but no page says so",
                                 (f"PagerDuty triggers for {key}: " + "; ".join(
                                     str((p.get("payload") or {}).get("summary", ""))[:80] for p in obs.pagerduty
                                     if p.get("dedup_key") == key) or "none",)))
    if obs.dry_run:
        return out
    # The undo's own patch stores the state ("rolling-back"): it is a decision as much as its Event.
    decisions = sorted([*(e for e in evs if e.reason in PHASES),
                        *(Event(u.at, "RolledBack", "", u.analysed_revision) for u in undos(obs) if u.code < 300)],
                       key=lambda e: e.at)
    raw = (obs.deployment.get("metadata", {}).get("annotations") or {}).get(STATE)
    contradiction = state_contradiction(decisions, _json(raw or "") or {})
    if contradiction is not None:
        out.append(contradiction)
    return out


def state_contradiction(decisions: list[Event], state: dict[str, Any]) -> Violation | None:
    """The state annotation must agree with the last decision on record (`decisions` in time order).

    One decision may come after a newer rollout's own: a rollback already under way when a newer deploy
    landed is not cancelled, and its fence then finds the newer revision live and says so
    (`RollbackFenced`: "Rollback of … revision M not done: superseded by revision N: …"). Such a fence,
    naming the revision the state is about, is not the last word on the Deployment; any other late
    decision is."""
    revision = (state.get("rollout") or {}).get("revision")
    phase = state.get("phase")
    relevant = [e for e in decisions if not (e.reason == "RollbackFenced" and isinstance(revision, int)
                                             and e.revision < revision
                                             and f"superseded by revision {revision}: " in e.message)]
    if not relevant:
        return None
    last = relevant[-1]
    if revision != last.revision or phase not in PHASES[last.reason]:
        return Violation("I4", f"the state annotation says revision {revision} phase {phase}, but the last "
                               f"decision was {last.reason} for revision {last.revision}")
    return None


def check_writers(obs: Observation) -> list[Violation]:
    """I5: nothing written in dry-run, nothing written by a replica that is not the leader."""
    out: list[Violation] = []
    writes = [r for r in _writes(obs) if r.resource != "leases" and r.code < 300]
    if obs.dry_run and writes:
        out.append(Violation("I5", f"{len(writes)} writes in dry-run",
                             tuple(f"{r.verb} {r.resource}/{r.name} by {r.user}" for r in writes[:5])))
    if not obs.leader_election:
        return out
    leases = [r for r in obs.audit if r.resource == "leases" and r.verb in ("create", "update", "patch")
              and r.code < 300 and r.user in obs.users]
    for r in writes:
        before = [lease for lease in leases if lease.at <= r.at]
        holder = None
        if before:
            spec = (_json(before[-1].body) or {}).get("spec") or {}
            holder = spec.get("holderIdentity")
        identity = obs.identities.get(r.user)
        fresh = bool(before) and r.at - before[-1].at <= obs.lease_seconds
        if holder != identity or not fresh:
            out.append(Violation("I5", f"{r.user} wrote {r.verb} {r.resource}/{r.name} while the lease said "
                                       f"{holder!r} (renewed {r.at - before[-1].at:.1f}s before)" if before else
                                 f"{r.user} wrote {r.verb} {r.resource}/{r.name} before any lease"))
    return out


def _mask(secret: str) -> str:
    return secret[:4] + "…"


def check_secrets(obs: Observation) -> list[Violation]:
    """I6: no secret in logs, Events, annotations, notifications or `/api/v1/analyses`."""
    places = {
        "daemon logs": obs.logs,
        "Events and other API writes": "\n".join(r.body for r in _writes(obs)),
        "Deployment annotations": json.dumps(obs.deployment.get("metadata", {}).get("annotations") or {}),
        "Slack messages": json.dumps(obs.slack),
        "PagerDuty events": json.dumps(obs.pagerduty),
        "/api/v1/analyses": "\n".join(obs.analyses),
    }
    out: list[Violation] = []
    for where, text in places.items():
        for secret in obs.secrets:
            if secret in text:
                out.append(Violation("I6", f"a secret ({_mask(secret)}) appears in {where}"))
        for shape in SECRET_SHAPES:
            if (m := shape.search(text)) and not any(m.group(0) in s for s in obs.secrets):
                out.append(Violation("I6", f"a token-shaped string ({_mask(m.group(0))}) appears in {where}"))
    return out
