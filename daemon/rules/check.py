"""`rollguard check`: validate rule files and say what is wrong, one line per problem, or what was found.

Every bad input is a line and exit code 1, never a traceback: the loader bounds size, depth and
counts (`rules.limits`) before composing, and anything it still raises is reported as the file's
error. A file without any policy is an error here (it is most likely a mistake), although the daemon
accepts one. Two policies that can select the same Deployment are a warning: the daemon applies
only the first of them in file order to it (`RuleSet.policy_for`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from daemon.rules.loader import combine, load_file, plan_files
from daemon.rules.model import LoadResult, RollbackPolicy, RuleError


def check_paths(paths: Sequence[str]) -> tuple[int, list[str]]:
    """Load `paths` (files or directories) and return the exit code (0 all good, 1 any error) and the
    lines to print: every error as `file:line: field: message`, or one summary line per file such as
    `rules/backend-staging.yaml: 1 policy, 4 rules OK`, followed by any `warning:` lines."""
    result = combine([item if isinstance(item, LoadResult) else _load_guarded(item) for item in plan_files(paths)])
    policies: dict[str, int] = defaultdict(int)
    rules: dict[str, int] = defaultdict(int)
    for policy in result.policies:
        policies[policy.source.file] += 1
        rules[policy.source.file] += len(policy.rules)
    failed = {error.file for error in result.errors}
    empty = [
        RuleError(file, None, "", "no RollbackPolicy in this file")
        for file in result.files
        if file not in failed and not policies[file]
    ]
    if result.errors or empty:
        return 1, [str(error) for error in (*result.errors, *empty)]
    lines = [
        f"{file}: {_count(policies[file], 'policy', 'policies')}, {_count(rules[file], 'rule', 'rules')} OK"
        for file in result.files
    ]
    return 0, lines + overlap_warnings(result.policies)


def overlap_warnings(policies: Sequence[RollbackPolicy]) -> list[str]:
    """A warning per pair of policies that can select the same Deployment, where that is decidable
    without the cluster: the same namespaces, and one's matchLabels contained in the other's."""
    warnings: list[str] = []
    for index, first in enumerate(policies):
        for later in policies[index + 1:]:
            a, b = first.selector, later.selector
            if set(a.namespaces) != set(b.namespaces):
                continue
            a_labels, b_labels = set(a.match_labels.items()), set(b.match_labels.items())
            if not (a_labels <= b_labels or b_labels <= a_labels):
                continue
            warnings.append(
                f"{later.source}: warning: policies \"{first.name}\" ({first.source}) and \"{later.name}\" can "
                f"select the same Deployment; only the first in file order, \"{first.name}\", applies to it"
            )
    return warnings


def _load_guarded(file: str) -> LoadResult:
    try:
        return load_file(file)
    except Exception as exc:  # a bug in the loader must still end as a line, not a traceback
        message = f"cannot load: {type(exc).__name__}: {exc}"
        return LoadResult((), (RuleError(file, None, "", message),), (file,))


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"
