"""Field values with their own syntax: durations, regexes, templates and URLs."""

from __future__ import annotations

import re
from typing import Any

import yaml

from daemon.rules.durations import DurationError, parse_duration
from daemon.rules.templates import Language, check_template
from daemon.rules.yamlnodes import STR_TAG, NodeReader


class FieldReader(NodeReader):
    """`NodeReader` plus the values whose text is checked against a syntax of its own."""

    def _duration(self, node: yaml.Node | None, path: str, default: float, *, positive: bool = False) -> float:
        if node is None:
            return default
        value: Any = node.value if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG else None
        if value is None and isinstance(node, yaml.ScalarNode):
            value = self._constructor.construct_object(node)
        elif value is None:
            value = [] if isinstance(node, yaml.SequenceNode) else {}
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            self._error_at(node, path, str(exc))
            return default
        if positive and seconds <= 0:
            self._error_at(node, path, f'"{value}" must be longer than 0s')
            return default
        return seconds

    def _regex(self, node: yaml.Node, path: str) -> str | None:
        text = self._str(node, path)
        if text is None:
            return None
        try:
            re.compile(text)
        except re.error as exc:
            self._error_at(node, path, f"invalid regex {text!r}: {exc}")
            return None
        return text

    def _template(self, node: yaml.Node, path: str, language: Language) -> str | None:
        text = self._str(node, path)
        if text is None:
            return None
        problems = check_template(text, language)
        for problem in problems:
            self._error_at(node, path, problem)
        return None if problems else text

    def _url(self, node: yaml.Node, path: str, schemes: tuple[str, ...]) -> str | None:
        text = self._template(node, path, Language.URL)
        if text is None:
            return None
        scheme = text.split("://", 1)[0].lower() if "://" in text else ""
        if scheme not in schemes:
            allowed = " or ".join(f"{s}://" for s in schemes)
            self._error_at(node, path, f'"{text}" must start with {allowed}')
            return None
        return text
