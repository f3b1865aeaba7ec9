"""Alertmanager label matchers (`alertname=~"High.*"`), parsed and checked when a rule file loads.

The syntax is Alertmanager's: `NAME OP VALUE` with OP one of `=`, `!=`, `=~`, `!~`; NAME a label
name (`[A-Za-z_][A-Za-z0-9_]*`); VALUE either double-quoted (with `\\"`, `\\\\` and `\\n` escapes)
or bare (no spaces, quotes, commas or braces). Regex values are anchored at both ends, as
Alertmanager anchors them, and compiled with RE2 (`rules.regexes`). A label that is absent matches
as the empty string, again as in Alertmanager (`severity!="critical"` matches an alert without
`severity`). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from daemon.rules.regexes import RegexError, Searchable, compile_regex

MAX_MATCHER_CHARS = 1000
"""Longest matcher text, in characters."""
MAX_MATCHERS = 20
"""Most matchers in one `alerts` signal."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_VALUE = re.compile(r"[^\s\"',{}=!~]*")


class MatchOp(StrEnum):
    """A matcher's operator."""

    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message says where and what to write."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher; compare and print as its text."""

    name: str
    """The label name."""
    op: MatchOp
    """How the value is compared."""
    value: str
    """The value (unescaped), or the regex for `=~` / `!~`."""
    regex: Searchable | None = field(default=None, compare=False, repr=False)
    """The anchored, compiled regex for `=~` / `!~`."""

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an alert with these labels satisfies the matcher (an absent label is "")."""
        actual = labels.get(self.name, "")
        if self.op is MatchOp.EQUAL:
            return actual == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return actual != self.value
        assert self.regex is not None
        found = self.regex.search(actual) is not None
        return found if self.op is MatchOp.REGEX else not found

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{escaped}"'


def _unquote(text: str, at: int) -> tuple[str, int]:
    """The value of the double-quoted string starting at `text[at]` and the index after its closing quote."""
    out: list[str] = []
    i = at + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt not in '"\\n':
                raise MatcherError(f"unknown escape \\{nxt} at character {i + 1} (use \\\", \\\\ or \\n)")
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        if char == '"':
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise MatcherError(f"the quoted value starting at character {at + 1} is not closed")


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; MatcherError naming the problem (e.g. `'severity=="x"': ...`)."""
    if len(text) > MAX_MATCHER_CHARS:
        raise MatcherError(f"the matcher is {len(text)} characters, over the limit of {MAX_MATCHER_CHARS}")
    stripped = text.strip()
    name_match = _NAME.match(stripped)
    if name_match is None:
        raise MatcherError(f"{text!r} does not start with a label name (for example severity=\"critical\")")
    name = name_match.group()
    rest = stripped[name_match.end():].lstrip()
    op = next((o for o in (MatchOp.REGEX, MatchOp.NOT_REGEX, MatchOp.NOT_EQUAL, MatchOp.EQUAL)
               if rest.startswith(o.value)), None)
    if op is None:
        raise MatcherError(f"{text!r} has no operator after {name!r} (use =, !=, =~ or !~)")
    rest = rest[len(op.value):].lstrip()
    if rest.startswith('"'):
        value, end = _unquote(rest, 0)
        if rest[end:].strip():
            raise MatcherError(f"{text!r} has {rest[end:].strip()!r} after the quoted value")
    else:
        bare = _BARE_VALUE.fullmatch(rest)
        if bare is None:
            raise MatcherError(f"{text!r}: the value {rest!r} must be quoted (it holds spaces, quotes, commas, "
                               "braces or operators)")
        value = rest
    regex = None
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        try:
            compile_regex(value)  # for the message: it names the pattern as written
            regex = compile_regex(f"^(?:{value})$")
        except RegexError as exc:
            raise MatcherError(f"{text!r}: {exc}") from None
    return Matcher(name, op, value, regex)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    """Whether every matcher holds for `labels` (no matchers: every alert)."""
    return all(m.matches(labels) for m in matchers)
