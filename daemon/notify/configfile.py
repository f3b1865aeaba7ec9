"""The `--notify-config` file: read it, and check it with `file:line: field: message` errors.

The format is the factory's (see `daemon.notify.factory` and the README's "Notifications"): a mapping
of notifier name (slack, pagerduty, console, nop) to its settings. `check_notify_config` validates the
shape and every value without needing the secrets themselves (CI has none): each `*From` reference
must be well formed, and what it points at is read only by `rollguard run` and `rollguard notify test`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from daemon.notify.factory import build_notifiers
from daemon.notify.model import NotifyConfigError
from daemon.rules.yamlnodes import node_line

ROOT = "notify"
"""The prefix factory messages carry; a file's fields are named without it."""


def load_notify_config(path: Path) -> dict[str, Any]:
    """The configuration in `path`; raises NotifyConfigError (`file:line: message`) if it is not a YAML mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise NotifyConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise NotifyConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise NotifyConfigError(f"{path}:1: must be a mapping of notifier name to settings")
    return loaded


def check_notify_config(path: Path) -> list[str]:
    """Problems in the notifier configuration file, as `file:line: field: message`; empty when it is fine."""
    try:
        config = load_notify_config(path)
    except NotifyConfigError as exc:
        return [str(exc)]
    try:
        build_notifiers(config, env={}, where=ROOT, check_only=True)
    except NotifyConfigError as exc:
        return [_locate(path, str(exc))]
    return []


def _locate(path: Path, message: str) -> str:
    """`notify.slack.timeout: must be …` → `FILE:LINE: slack.timeout: must be …` (line of that field)."""
    field, _, text = message.partition(": ")
    parts = field.split(".")
    if parts[0] == ROOT:
        parts = parts[1:]
    line = _line_of(path, parts)
    return f"{path}:{line}: {'.'.join(parts)}: {text}" if parts else f"{path}:{line}: {text}"


def _line_of(path: Path, parts: list[str]) -> int:
    """The line of the deepest node along `parts` that exists (1 when the file has none of them)."""
    try:
        node: yaml.Node | None = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return 1
    line = 1
    for part in parts:
        if not isinstance(node, yaml.MappingNode):
            break
        found = _child(node, part)
        if found is None:
            break
        key, node = found
        line = node_line(key)
    return line


def _child(node: yaml.MappingNode, name: str) -> tuple[yaml.Node, yaml.Node] | None:
    entries: Mapping[str, tuple[yaml.Node, yaml.Node]] = {
        str(k.value): (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    return entries.get(name)
