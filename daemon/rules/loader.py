"""Load rule files into `RollbackPolicy` objects, strictly, reporting every problem with file, line and field.

A file may hold several YAML documents (`---`); a directory contributes its `*.yaml` and `*.yml` files,
sorted by name (not recursive). The YAML is composed into nodes (never constructed into Python
objects first), so every error carries the line of the offending key or value:

    rules/backend.yaml:14: spec.rules[2].for: "5 minutes" is not a duration (use 5m)

Strict means: unknown keys, duplicate keys, wrong types, bad durations, unknown actions or providers,
invalid regexes and templates, CEL syntax and type errors, names a `when` uses that no signal
defines, `baseline.x` without a baseline, `rollback` as an `onInconclusive`/`onError` choice, and
duplicate rule or policy names are all errors. All errors of a file are collected; a file with any
error contributes no policy, so a caller can keep its last good rules.

The work is split by concern: `yamlnodes` (typed node access with positions) ← `fields` (durations,
regexes, templates, URLs) ← `signal_parsing` (`spec.signals`) ← `policy_parsing` (the rest of a
policy); this module reads files and directories and walks the documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from daemon.rules.model import (
    LoadResult,
    RollbackPolicy,
    RuleError,
    Source,
)
from daemon.rules.policy_parsing import PolicyReader


def load_rules(paths: Iterable[str | Path]) -> LoadResult:
    """Load every rule file named in `paths` (files, or directories of `*.yaml`/`*.yml` files).

    Policy names must be unique across all files; a later duplicate is an error in its file.
    """
    policies: list[RollbackPolicy] = []
    errors: list[RuleError] = []
    files: list[str] = []
    defined: dict[str, Source] = {}
    for path in paths:
        found, problem = _expand(Path(path), str(path))
        if problem is not None:
            errors.append(problem)
            continue
        for file in found:
            files.append(file)
            result = load_file(file)
            file_errors = list(result.errors)
            for policy in result.policies:
                first = defined.get(policy.name)
                if first is not None:
                    file_errors.append(
                        RuleError(
                            file,
                            policy.source.line,
                            "metadata.name",
                            f'policy "{policy.name}" is already defined at {first}',
                        )
                    )
            if file_errors:
                errors.extend(sorted(file_errors, key=lambda e: e.line or 0))
                continue
            for policy in result.policies:
                defined[policy.name] = policy.source
            policies.extend(result.policies)
    return LoadResult(tuple(policies), tuple(errors), tuple(files))


def load_file(path: str | Path) -> LoadResult:
    """Load one rule file; `path` is shown in errors exactly as given."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LoadResult((), (RuleError(name, None, "", f"cannot read: {reason}"),), (name,))
    loader = _FileLoader(name)
    policies = loader.load(text)
    errors = tuple(sorted(loader.errors, key=lambda e: e.line or 0))
    return LoadResult(() if errors else tuple(policies), errors, (name,))


def _expand(path: Path, shown: str) -> tuple[list[str], RuleError | None]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            return [], RuleError(shown, None, "", "no *.yaml or *.yml files in this directory")
        return [str(p) for p in files], None
    if not path.exists():
        return [], RuleError(shown, None, "", "no such file or directory")
    return [shown], None


class _FileLoader(PolicyReader):
    """Turns the documents of one file into policies, appending every problem to `errors`."""

    def load(self, text: str) -> list[RollbackPolicy]:
        policies: list[RollbackPolicy] = []
        names: dict[str, int] = {}
        try:
            for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
                if document is None or (isinstance(document, yaml.ScalarNode) and document.tag.endswith(":null")):
                    continue
                policy = self._policy(document)
                if policy is None:
                    continue
                if policy.name in names:
                    self._error(
                        policy.source.line,
                        "metadata.name",
                        f'policy "{policy.name}" is already defined at line {names[policy.name]}',
                    )
                    continue
                names[policy.name] = policy.source.line
                policies.append(policy)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = ": ".join(part for part in (exc.context, exc.problem) if part)
            self.errors.append(RuleError(self.file, line, "", f"invalid YAML: {problem}"))
        except yaml.YAMLError as exc:
            self.errors.append(RuleError(self.file, None, "", f"invalid YAML: {exc}"))
        return policies
