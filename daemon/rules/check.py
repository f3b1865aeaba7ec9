"""`rollguard check`: validate rule files and say what is wrong, one line per problem, or what was found."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from daemon.rules.loader import load_rules


def check_paths(paths: Sequence[str]) -> tuple[int, list[str]]:
    """Load `paths` (files or directories) and return the exit code (0 all good, 1 any error) and the
    lines to print: every error as `file:line: field: message`, or one summary line per file such as
    `rules/backend-staging.yaml: 1 policy, 4 rules OK`."""
    result = load_rules(paths)
    if result.errors:
        return 1, [str(error) for error in result.errors]
    policies: dict[str, int] = defaultdict(int)
    rules: dict[str, int] = defaultdict(int)
    for policy in result.policies:
        policies[policy.source.file] += 1
        rules[policy.source.file] += len(policy.rules)
    lines = [
        f"{file}: {_count(policies[file], 'policy', 'policies')}, {_count(rules[file], 'rule', 'rules')} OK"
        for file in result.files
    ]
    return 0, lines


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"
