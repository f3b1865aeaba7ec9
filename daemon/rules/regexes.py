"""Regexes from rule files, compiled with RE2 so matching takes time linear in the text.

A pattern is written in Python `re` syntax and checked with `re` first (so a syntax error reads as
it always has), then compiled with RE2 (`google-re2`). RE2 has no backreferences and no lookaround:
those are what make a regex backtrack catastrophically on a hostile log line, so a pattern that
needs them is refused at load with the reason.
"""

from __future__ import annotations

import re
from typing import Protocol

import re2

from daemon.rules.limits import MAX_REGEX_CHARS


class Searchable(Protocol):
    """What the providers need from a compiled pattern."""

    def search(self, text: str) -> object | None:
        """A match object when the pattern occurs somewhere in `text`, else None."""
        ...


class RegexError(ValueError):
    """A pattern that cannot be used; the message says why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would otherwise print every refused pattern on stderr
    options.max_mem = 8 << 20  # bytes for the compiled program; ample for any sane pattern
    return options


_OPTIONS = _options()


def compile_regex(text: str) -> Searchable:
    """Compile `text` (Python `re` syntax) for linear-time search; raises `RegexError` with the reason."""
    if len(text) > MAX_REGEX_CHARS:
        raise RegexError(f"the regex is {len(text)} characters, over the limit of {MAX_REGEX_CHARS}")
    try:
        re.compile(text)
    except re.error as exc:
        raise RegexError(f"invalid regex {text!r}: {exc}") from None
    try:
        compiled: Searchable = re2.compile(text, options=_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(
            f"regex {text!r} is not supported: {reason} (backreferences, lookaround and \\Z are refused "
            "because they can backtrack catastrophically; rewrite it without them)"
        ) from None
    return compiled
