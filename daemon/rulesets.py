"""The rules in force, reloaded when the files change; a bad file never replaces good rules.

`RuleSet.load()` reads the rules directory once (at start: errors are fatal, the daemon must not
start without valid rules). `RuleSet.watch()` then polls the files' names, sizes and modification
times (a ConfigMap volume swaps a symlink, which inotify-less polling sees the same way) and
reloads when anything changed. A reload with any error keeps the last good policies running and
says so loudly: an error log line per problem, a metric, and `last_error` for `/readyz` details.
Running analyses keep the policy they started with; new rollouts get the new rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import structlog

from daemon.clock import Clock, SystemClock
from daemon.metrics import Metrics
from daemon.rules.loader import load_rules
from daemon.rules.model import RollbackPolicy, RuleError

log = structlog.get_logger("rollguard.rules")


class RulesInvalid(Exception):
    """The rules could not be loaded at start; every problem is in `errors`."""

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


class RuleSet:
    """The current policies, and the policy that applies to a Deployment."""

    def __init__(self, directory: Path, *, metrics: Metrics | None = None, clock: Clock | None = None) -> None:
        self.directory = directory
        self.policies: tuple[RollbackPolicy, ...] = ()
        self.last_error: str | None = None
        self.generation = 0
        """Bumped at every successful (re)load."""
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()

    def load(self) -> None:
        """Load at start; raises `RulesInvalid` with every problem."""
        if not self.directory.is_dir():
            raise RulesInvalid((RuleError(str(self.directory), None, "", "is not a directory of rule files"),))
        self._fingerprint = _fingerprint(self.directory)
        result = load_rules([self.directory])
        if result.errors:
            raise RulesInvalid(result.errors)
        self._install(result.policies)

    def reload(self) -> bool:
        """Reload now; returns True when the new rules were taken, False when the old ones were kept."""
        self._fingerprint = _fingerprint(self.directory)
        result = load_rules([self.directory])
        if result.errors:
            self.last_error = "; ".join(str(e) for e in result.errors)
            for error in result.errors:
                log.error("rule file rejected; the last good rules keep running", problem=str(error))
            if self._metrics is not None:
                self._metrics.rules_reload_errors.inc()
            return False
        self._install(result.policies)
        return True

    async def watch(self, *, interval: float = 2.0) -> None:
        """Poll for changes forever (a root task)."""
        while True:
            await self._clock.sleep(interval)
            if _fingerprint(self.directory) != self._fingerprint:
                log.info("rule files changed, reloading", directory=str(self.directory))
                self.reload()

    def _install(self, policies: tuple[RollbackPolicy, ...]) -> None:
        self.policies = policies
        self.last_error = None
        self.generation += 1
        log.info("rules loaded", policies=[p.name for p in policies],
                 rules=sum(len(p.rules) for p in policies), generation=self.generation)

    def policy_for(self, namespace: str, labels: Mapping[str, str]) -> RollbackPolicy | None:
        """The first policy (in file order) whose selector matches; None when none does."""
        for policy in self.policies:
            if policy.selector.matches(namespace, labels):
                return policy
        return None

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Namespaces named by selectors; empty if any policy selects every namespace."""
        names: list[str] = []
        for policy in self.policies:
            if not policy.selector.namespaces:
                return ()
            names.extend(n for n in policy.selector.namespaces if n not in names)
        return tuple(names)
