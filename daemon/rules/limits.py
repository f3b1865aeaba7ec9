"""Bounds on rule files, checked before the YAML is composed, so a hostile file is refused quickly.

A rule file comes from whoever may edit the rules ConfigMap; it must never crash the daemon, stall
its event loop or exhaust its memory. Size is checked before reading, nesting depth, aliases, the
number of values and of documents on libyaml's event stream (iterative, no recursion) before any node tree is
built, and the counts of signals and rules per policy where those lists are read.
"""

from __future__ import annotations

import yaml

from daemon.rules.model import RuleError

MAX_FILE_BYTES = 1024 * 1024
"""Largest rule file, in bytes: 1 MiB, the most a ConfigMap can hold."""
MAX_DIRECTORY_BYTES = 8 * 1024 * 1024
"""Largest total of the rule files read from one directory, in bytes (8 MiB)."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings in a rule file, in levels (a policy needs about 8)."""
MAX_POLICIES_PER_FILE = 100
"""Most YAML documents (policies) in one file."""
MAX_SIGNALS_PER_POLICY = 50
"""Most entries under `spec.signals` of one policy."""
MAX_RULES_PER_POLICY = 100
"""Most entries under `spec.rules` of one policy."""
MAX_NODES_PER_FILE = 50_000
"""Most YAML nodes (scalars, lists, mappings) in one file; a full policy has a few hundred."""
MAX_REGEX_CHARS = 1000
"""Longest regex in a rule file, in characters."""
LOAD_BUDGET_SECONDS = 5.0
"""Longest the daemon waits for one file to load on a reload, in seconds; past it the file is refused."""

FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (it keeps the node marks, so the lines in
errors are the same), else the pure-Python one."""


def size_problem(file: str, size: int) -> RuleError | None:
    """An error when a file of `size` bytes is over `MAX_FILE_BYTES`."""
    if size <= MAX_FILE_BYTES:
        return None
    return RuleError(file, None, "", f"the file is {size} bytes, over the limit of {MAX_FILE_BYTES} bytes (1 MiB)")


def structure_problem(file: str, text: str) -> RuleError | None:
    """The first bound the YAML in `text` breaks (depth, an alias, too many values or documents), or None.

    Reads libyaml's event stream, which needs no recursion however deep the input. Invalid YAML is
    not reported here: composing the file reports it with its position.
    """
    depth = 0
    documents = 0
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=FAST_LOADER):
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES_PER_FILE:
                    return _at(file, event, f"more than {MAX_NODES_PER_FILE} YAML values in one file, the limit")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return _at(file, event, f"nested deeper than the limit of {MAX_DEPTH} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                return _at(
                    file, event, f"aliases are not allowed in rule files (*{event.anchor}); write the value out"
                )
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > MAX_POLICIES_PER_FILE:
                    return _at(
                        file, event, f"more than {MAX_POLICIES_PER_FILE} documents in one file, the limit of policies"
                    )
    except yaml.MarkedYAMLError as exc:
        # libyaml stops at its own bound of 1000 levels while scanning ahead, before the parser
        # hands over the 65th level; any other error is reported when the file is composed.
        if exc.problem is not None and "nesting depth" in exc.problem and exc.problem_mark is not None:
            line = int(exc.problem_mark.line) + 1
            return RuleError(file, line, "", f"nested deeper than the limit of {MAX_DEPTH} levels")
        return None
    except yaml.YAMLError:
        return None
    return None


def _at(file: str, event: yaml.Event, message: str) -> RuleError:
    mark = event.start_mark
    return RuleError(file, int(mark.line) + 1 if mark is not None else None, "", message)
