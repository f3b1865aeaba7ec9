"""The rules in force, reloaded when the files change; a bad file refuses only its own policies.

`RuleSet.load()` reads the rules directory once at start. Each file stands alone: a file with any
error (or a policy name an earlier file already uses) is *refused* and contributes no policy, the
other files' policies run. `RulesInvalid` is raised only when no file at all is valid, since the
daemon could then do nothing useful. `RuleSet.watch()` then polls the files' names, sizes and
modification times (a ConfigMap volume swaps a symlink, which inotify-less polling sees the same
way) and reloads when anything changed. A reload parses each file in a worker thread, within a time
budget, so the event loop (and the leader lease renewal) never waits on it; when a file's new
version is refused, its last good version keeps running. The refused files are in `refused`
(path → message), in the gauge `rollguard_rule_files_refused{file}`, in an error log line per
problem, and handed to the `on_refused` hook (for a Warning Event). Running analyses keep the policy
they started with; new rollouts get the new rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import structlog
from prometheus_client import Gauge

from daemon.clock import Clock, SystemClock
from daemon.metrics import Metrics
from daemon.rules.limits import LOAD_BUDGET_SECONDS
from daemon.rules.loader import combine, load_file, plan_files
from daemon.rules.model import LoadResult, RollbackPolicy, RuleError

log = structlog.get_logger("rollguard.rules")


class RulesInvalid(Exception):
    """No rule file could be loaded at start; every problem is in `errors`."""

    def __init__(self, errors: tuple[RuleError, ...]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def _fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in sorted(directory.glob("*")):
        if path.suffix in (".yaml", ".yml"):
            try:
                stat = path.stat()  # follows the ConfigMap's ..data symlink
            except OSError:
                continue
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def _file_of(result: LoadResult) -> str:
    return result.files[0] if result.files else result.errors[0].file


class RuleSet:
    """The current policies, the refused files, and the policy that applies to a Deployment."""

    def __init__(
        self,
        directory: Path,
        *,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        on_refused: Callable[[Mapping[str, str]], None] | None = None,
        load_budget: float = LOAD_BUDGET_SECONDS,
        can_run: Callable[[RollbackPolicy], RuleError | None] | None = None,
    ) -> None:
        self.directory = directory
        self.policies: tuple[RollbackPolicy, ...] = ()
        self.generation = 0
        """Bumped at every (re)load."""
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._on_refused = on_refused
        self._load_budget = load_budget
        """Seconds one file may take to load on a reload before it is refused."""
        self._can_run = can_run
        """Whether this daemon can run a policy (it has the providers its signals need); a file with a
        policy it cannot run is refused like an invalid one."""
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._good: dict[str, LoadResult] = {}
        self._refused: dict[str, str] = {}
        self._refused_gauge = (
            Gauge("rollguard_rule_files_refused", "1 for each rule file refused (its policies do not run).",
                  ["file"], registry=metrics.registry)
            if metrics is not None else None
        )

    @property
    def refused(self) -> dict[str, str]:
        """The refused files: path → every problem, `; `-separated. Empty when every file loaded."""
        return dict(self._refused)

    def load(self) -> None:
        """Load at start; raises `RulesInvalid` with every problem when no file at all is valid."""
        if not self.directory.is_dir():
            raise RulesInvalid((RuleError(str(self.directory), None, "", "is not a directory of rule files"),))
        self._fingerprint = _fingerprint(self.directory)
        results = [self._runnable(item if isinstance(item, LoadResult) else load_file(item))
                   for item in plan_files([self.directory])]
        if not any(not result.errors for result in results if result.files):
            raise RulesInvalid(tuple(error for result in results for error in result.errors))
        self._apply(results, keep_last_good=False)

    async def reload(self) -> bool:
        """Reload now, each file in a worker thread; True when every file was taken, False when any
        file was refused (its last good version, if any, keeps running)."""
        self._fingerprint = _fingerprint(self.directory)
        results = [self._runnable(item if isinstance(item, LoadResult) else await self._load_off_loop(item))
                   for item in plan_files([self.directory])]
        self._apply(results, keep_last_good=True)
        if self._refused and self._metrics is not None:
            self._metrics.rules_reload_errors.inc()
        return not self._refused

    async def watch(self, *, interval: float = 2.0) -> None:
        """Poll for changes forever (a root task)."""
        while True:
            await self._clock.sleep(interval)
            if _fingerprint(self.directory) != self._fingerprint:
                log.info("rule files changed, reloading", directory=str(self.directory))
                await self.reload()

    def policy_for(self, namespace: str, labels: Mapping[str, str]) -> RollbackPolicy | None:
        """The first policy (in file order) whose selector matches; None when none does."""
        for policy in self.policies:
            if policy.selector.matches(namespace, labels):
                return policy
        return None

    def _runnable(self, result: LoadResult) -> LoadResult:
        """The file's result, refused when a policy needs what this daemon lacks."""
        if self._can_run is None or result.errors:
            return result
        problems = tuple(p for p in (self._can_run(policy) for policy in result.policies) if p is not None)
        return LoadResult((), problems, result.files) if problems else result

    async def _load_off_loop(self, file: str) -> LoadResult:
        try:
            return await asyncio.wait_for(asyncio.to_thread(load_file, file), self._load_budget)
        except TimeoutError:
            # The thread cannot be stopped; it finishes in the background and its result is dropped.
            message = f"took longer than the limit of {self._load_budget:g}s to load"
            return LoadResult((), (RuleError(file, None, "", message),), (file,))

    def _apply(self, results: Iterable[LoadResult], *, keep_last_good: bool) -> None:
        taken: list[LoadResult] = []
        refused: dict[str, list[str]] = {}
        for result in results:
            file = _file_of(result)
            if not result.errors:
                taken.append(result)
                continue
            refused[file] = [str(error) for error in result.errors]
            if keep_last_good and file in self._good:
                taken.append(self._good[file])
        combined = combine(taken)
        for error in combined.errors:  # a policy name an earlier file already defines
            refused.setdefault(error.file, []).append(str(error))
        self._good = {_file_of(r): r for r in taken if _file_of(r) not in {e.file for e in combined.errors}}
        self._set_refused({file: "; ".join(problems) for file, problems in refused.items()})
        self._install(combined.policies)

    def _set_refused(self, refused: dict[str, str]) -> None:
        for file, message in refused.items():
            log.error("rule file refused; its last good version (if any) keeps running", file=file, problem=message)
        if self._refused_gauge is not None:
            for file in self._refused.keys() - refused.keys():
                self._refused_gauge.remove(file)
            for file in refused:
                self._refused_gauge.labels(file=file).set(1)
        self._refused = refused
        if refused and self._on_refused is not None:
            self._on_refused(dict(refused))

    def _install(self, policies: tuple[RollbackPolicy, ...]) -> None:
        self.policies = policies
        self.generation += 1
        log.info("rules loaded", policies=[p.name for p in policies],
                 rules=sum(len(p.rules) for p in policies), generation=self.generation)
