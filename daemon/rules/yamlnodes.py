"""Reading composed YAML nodes with their positions: the typed accessors every part of the loader uses.

The loader never constructs YAML into Python objects first; it walks the node tree, so every value
keeps the line it came from. `NodeReader` holds the errors of one file and offers the structural
checks (mappings with known keys, lists, strings, numbers, booleans), each appending an error with
the file, the line of the offending node and the field path when the value is not what was asked.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import yaml

from daemon.rules.model import RuleError

STR_TAG = "tag:yaml.org,2002:str"
_TAG_NAMES = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a timestamp",
}


class NodeReader:
    """Typed access to the nodes of one file, appending every problem to `errors`."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[RuleError] = []
        self._constructor = yaml.SafeLoader("")

    def _mapping(
        self,
        node: yaml.Node,
        path: str,
        *,
        required: Sequence[str],
        optional: Sequence[str],
        what: str = "field",
    ) -> dict[str, yaml.Node] | None:
        """The known keys of a mapping node. Unknown, duplicate and missing keys are errors."""
        entries = self._free_mapping(node, path)
        if entries is None:
            return None
        allowed = (*required, *optional)
        fields: dict[str, yaml.Node] = {}
        for key, key_node, value in entries:
            if key in allowed:
                fields[key] = value
                continue
            guess = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            plural = "providers" if what == "provider" else "fields"
            known = ", ".join(sorted(allowed)) or "none"
            self._error_at(key_node, join_path(path, key), f"unknown {what} ({hint}known {plural}: {known})")
        for key in required:
            if key not in fields:
                self._error_at(node, join_path(path, key), "required field is missing")
        return fields

    def _free_mapping(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node, yaml.Node]] | None:
        """(key, key node, value node) of a mapping with any string keys; duplicates are errors."""
        if not isinstance(node, yaml.MappingNode):
            self._error_at(node, path or "(document)", f"expected a mapping, got {describe_node(node)}")
            return None
        entries: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: dict[str, int] = {}
        for key_node, value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STR_TAG:
                self._error_at(key_node, path or "(document)", f"keys must be strings, got {describe_node(key_node)}")
                continue
            key = str(key_node.value)
            if key in seen:
                self._error_at(key_node, join_path(path, key), f"duplicate key (first at line {seen[key]})")
                continue
            seen[key] = node_line(key_node)
            entries.append((key, key_node, value))
        return entries

    def _string_map(self, node: yaml.Node, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, _, value in self._free_mapping(node, path) or ():
            text = self._str(value, join_path(path, key))
            if text is not None:
                out[key] = text
        return out

    def _list(self, node: yaml.Node, path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self._error_at(node, path, f"expected a list, got {describe_node(node)}")
            return []
        return list(node.value)

    def _str(self, node: yaml.Node, path: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG:
            return str(node.value)
        hint = ""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith((":bool", ":int", ":float", ":null")):
            hint = f'; quote it: "{node.value}"'
        self._error_at(node, path, f"expected a string, got {describe_node(node)}{hint}")
        return None

    def _int(self, node: yaml.Node, path: str) -> int | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
            value = self._constructor.construct_object(node)
            if isinstance(value, int):
                return value
        self._error_at(node, path, f"expected a whole number, got {describe_node(node)}")
        return None

    def _bool(self, node: yaml.Node, path: str) -> bool | None:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return bool(self._constructor.construct_object(node))
        self._error_at(node, path, f"expected true or false, got {describe_node(node)}")
        return None

    # ---- errors ---------------------------------------------------------------------------------

    def _error_at(self, node: yaml.Node, path: str, message: str) -> None:
        self._error(node_line(node), path, message)

    def _error(self, line: int, path: str, message: str) -> None:
        self.errors.append(RuleError(self.file, line, path, message))


def node_line(node: yaml.Node) -> int:
    """The 1-based line where `node` starts."""
    return int(node.start_mark.line) + 1


def join_path(path: str, key: str) -> str:
    """`path.key`, or `key` at the top of a document."""
    return f"{path}.{key}" if path else key


def describe_node(node: yaml.Node) -> str:
    """What a node is, for "expected X, got Y" messages: `a list`, `a string ("5 minutes")`, `null`."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    name = _TAG_NAMES.get(str(node.tag), "a value")
    if node.tag == STR_TAG:
        text = str(node.value)
        return f'{name} ("{text}")' if len(text) <= 40 and "\n" not in text else name
    return f"{name} ({node.value})" if name != "null" else "null"
