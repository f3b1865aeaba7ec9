"""The tasks of each Deployment's rollout: at most one runs per Deployment — the analysis of its
current rollout, or the long action that replaced it (a rollback with its Job, an `onFailure`).

An analysis that crashes (a bug, never a measurement: those are signals' errors) is announced and
restarted from its saved state, `MAX_RESTARTS` times, then left to a human.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.actions import Actions
from daemon.analysis import Analysis
from daemon.analysis_seams import Measurer
from daemon.clock import Clock
from daemon.kube.rollout_state import RolloutId, RolloutPhase
from daemon.kube.state import AnalysisState
from daemon.metrics import Metrics
from daemon.rollout import Rollout, RolloutKind
from daemon.rules.model import Action

log = structlog.get_logger("rollguard.reconcile")

Key = tuple[str, str]
MAX_RESTARTS = 3
"""An analysis that crashes is restarted from its saved state this many times, then left to a human."""


@dataclass
class Tracked:
    """What is known about one Deployment's current rollout."""

    identity: RolloutId
    phase: RolloutPhase
    kind: RolloutKind | None = None
    rollout: Rollout | None = None
    state: AnalysisState = field(default_factory=AnalysisState)
    rolled_back_from: Rollout | None = None
    """For rollguard's own rollback: the bad rollout it undoes."""
    analysis: Analysis | None = None
    task: asyncio.Task[None] | None = None

    def current_state(self) -> AnalysisState:
        """A live analysis holds the newest state; otherwise the last one stored here."""
        return self.analysis.state if self.analysis is not None and self.live() else self.state

    def live(self) -> bool:
        return self.task is not None and not self.task.done()


class TaskRunner:
    """Starts, stops and remembers the per-Deployment tasks (see the module docstring)."""

    def __init__(self, *, measurer: Measurer, actions: Actions, clock: Clock, metrics: Metrics | None) -> None:
        self._measurer = measurer
        self._actions = actions
        self._clock = clock
        self._metrics = metrics
        self.finished: deque[dict[str, Any]] = deque(maxlen=100)
        """Views of recently ended analyses, newest first (for `/api/v1/analyses`)."""


    def start_analysis(self, key: Key, tracked: Tracked, rollout: Rollout, *, announce: bool = False,
                        max_action: Action = Action.ROLLBACK) -> None:
        analysis = Analysis(rollout, tracked.state, measurer=self._measurer, decider=self._actions,
                            clock=self._clock, metrics=self._metrics, max_action=max_action)
        tracked.analysis = analysis
        if tracked.phase is RolloutPhase.COMPLETE:
            analysis.rollout_completed(tracked.state.completed_at or self._clock.now())

        async def run() -> None:
            if self._metrics:
                self._metrics.analyses_active.inc()
            try:
                if announce:
                    analysis.state = await self._actions.started(rollout, analysis.state)
                for restart in range(MAX_RESTARTS + 1):
                    try:
                        await analysis.run()
                        return
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        log.exception("analysis crashed", namespace=key[0], deployment=key[1],
                                      revision=rollout.id.revision)
                        again = restart < MAX_RESTARTS
                        analysis.state = await self._actions.analysis_error(
                            rollout, analysis.state, f"{type(exc).__name__}: {str(exc)[:300]}", restarting=again)
                        if not again:
                            return
                        await self._clock.sleep(min(60.0, 2.0 ** restart))
            finally:
                if self._metrics:
                    self._metrics.analyses_active.dec()
                tracked.state = analysis.state
                self.record_finished(tracked)

        tracked.task = asyncio.create_task(run(), name=f"analysis-{key[0]}-{key[1]}-{rollout.id.revision}")

    def spawn(self, key: Key, tracked: Tracked, rollout: Rollout,
               action: Callable[[], Awaitable[AnalysisState]], what: str) -> None:
        """Run a long action (a rollback with its Job, an onFailure) as the Deployment's task."""

        async def run() -> None:
            try:
                tracked.state = await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(f"{what} crashed", namespace=key[0], deployment=key[1], revision=rollout.id.revision)

        tracked.task = asyncio.create_task(run(), name=f"{what}-{key[0]}-{key[1]}-{rollout.id.revision}")

    def record_finished(self, tracked: Tracked) -> None:
        if tracked.analysis is not None:
            view = tracked.analysis.view()
            view["phase"] = tracked.state.phase
            self.finished.appendleft(view)

    async def stop(self, tracked: Tracked, why: str) -> None:
        task = tracked.task
        if task is None or task.done():
            return
        log.info("analysis cancelled", why=why, deployment=tracked.identity.name, revision=tracked.identity.revision)
        state = tracked.current_state()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        tracked.state = state
