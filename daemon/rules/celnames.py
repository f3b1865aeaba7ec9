"""Names in CEL text, found by a small lexer that skips string literals and comments: which signals,
baselines and `increase()` calls an expression names, and the dotted name at an error's column.
Run after the checker accepted the text (or to explain why it did not)."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

BASELINE = "baseline"
"""The prefix of baseline variables: `baseline.<signal>`."""
INCREASE = "increase"
"""The relative-change function, `increase(<signal>)`; evaluated as the variable `increase.<signal>`."""

IDENTIFIER = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")


@dataclass(frozen=True)
class Call:
    """One `increase(...)` in an expression: its span in the text and the signal it names (None: not a name)."""

    start: int
    end: int
    signal: str | None


_INCREASE_ARGUMENT = re.compile(r"\s*\(\s*(?:([_a-zA-Z][_a-zA-Z0-9]*)\s*\))?")


def increase_calls(text: str) -> list[Call]:
    """Every call of `increase` in `text`, outside string literals and comments."""
    calls = []
    for start, end in identifiers(text):
        if text[start:end] != INCREASE or text[start - 1 : start] == ".":
            continue
        argument = _INCREASE_ARGUMENT.match(text, end)
        if argument is None:
            continue
        calls.append(Call(start, argument.end() if argument.group(1) else end, argument.group(1)))
    return calls


def chain_at(text: str, line: int, column: int) -> str:
    """The dotted name around the `.` CEL's column points at, e.g. `health.okay`."""
    source = text.splitlines()[line - 1] if text.splitlines() else text
    dot = column - 1
    start = dot
    while start > 0 and (source[start - 1].isalnum() or source[start - 1] in "_."):
        start -= 1
    end = dot + 1
    while end < len(source) and (source[end].isalnum() or source[end] == "_"):
        end += 1
    return source[start:end]


def references(text: str, signals: Collection[str]) -> tuple[frozenset[str], frozenset[str]]:
    """Signals and baselines named in `text`, found by a small CEL lexer that skips string literals and
    comments. Run after the checker accepted the text, so every name it finds is a real reference."""
    named: set[str] = set()
    named_baselines: set[str] = set()
    for chain in name_chains(text):
        if chain[0] == BASELINE and len(chain) > 1 and chain[1] in signals:
            named_baselines.add(chain[1])
        elif chain[0] in signals:
            named.add(chain[0])
    return frozenset(named), frozenset(named_baselines)


def name_chains(text: str) -> list[list[str]]:
    chains: list[list[str]] = []
    i, n = 0, len(text)
    previous = ""
    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        string = re.match(r"(?i)(?:r|b|rb|br)?('''|\"\"\"|'|\")", text[i:])
        if string and (string.end() == 1 or not text[i - 1 : i].isalnum()):
            raw = "r" in string.group(0).lower()
            i = skip_string(text, i + string.end(), string.group(1), raw=raw)
            previous = '"'
            continue
        ident = IDENTIFIER.match(text, i)
        if ident:
            j = ident.end()
            chain = [ident.group()]
            while True:
                more = re.compile(r"\s*\.\s*([_a-zA-Z][_a-zA-Z0-9]*)").match(text, j)
                if not more:
                    break
                chain.append(more.group(1))
                j = more.end()
            if re.compile(r"\s*\(").match(text, j):
                chain.pop()  # a call: the last name is a function, not a variable
            if previous != "." and chain:
                chains.append(chain)
            previous = "a"
            i = j
            continue
        if not ch.isspace():
            previous = ch
        i += 1
    return chains


def identifiers(text: str) -> list[tuple[int, int]]:
    """Spans of the identifiers in `text`, skipping string literals and comments."""
    spans = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        string = re.match(r"(?i)(?:r|b|rb|br)?('''|\"\"\"|'|\")", text[i:])
        if string and (string.end() == 1 or not text[i - 1 : i].isalnum()):
            i = skip_string(text, i + string.end(), string.group(1), raw="r" in string.group(0).lower())
            continue
        ident = IDENTIFIER.match(text, i)
        if ident:
            spans.append(ident.span())
            i = ident.end()
            continue
        i += 1
    return spans


def skip_string(text: str, i: int, quote: str, *, raw: bool) -> int:
    while i < len(text):
        if not raw and text[i] == "\\":
            i += 2
            continue
        if text.startswith(quote, i):
            return i + len(quote)
        i += 1
    return i
