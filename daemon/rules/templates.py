"""Templates in signal definitions: `{{namespace}}`, `{{deployment}}`, `{{revision}}`, `{{podTemplateHash}}`,
`{{podPrefix}}` and `{{labels.KEY}}`, rendered so that a value can never inject syntax.

Two renderers, one per language a template is written in:

* `render_promql`: a placeholder must sit inside a quoted PromQL string. Its value is escaped as the
  inside of that literal (backslash, quote, control characters), and when the literal is the
  right-hand side of a `=~` or `!~` matcher the value is regex-escaped first, so
  `pod=~"{{podPrefix}}.*"` matches the prefix literally and a value cannot widen the regex.
  A placeholder outside any string is refused: there is no safe way to paste a value into raw PromQL.
* `render_url`: each value is percent-encoded for its position. In the host it must be an RFC 1123
  label (what Kubernetes namespace and Service names are); in the port it must be digits; in the
  path, query or fragment it is encoded with `quote(safe="")`, so `/`, `?`, `#`, `@` and `&` stay data.

`check_template` finds the problems a template has before any value exists, so the loader can
report them with the file and line; the renderers raise `TemplateError` for problems of values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

VARIABLES = ("namespace", "deployment", "revision", "podTemplateHash", "podPrefix")
"""Names usable between the braces, besides `labels.KEY`."""

_PLACEHOLDER = re.compile(r"\{\{\s*(?P<name>[^{}]*?)\s*\}\}")
# A Kubernetes label key: optional DNS-subdomain prefix and a name of alphanumerics, `-`, `_`, `.`.
_LABEL_KEY = re.compile(r"(?:[a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_RFC1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# RE2 metacharacters; escaping exactly these keeps the escaped value valid RE2 (RE2 rejects some
# escapes Python's re.escape produces, such as "\ " and "\#").
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


class TemplateError(ValueError):
    """A template or a value cannot be rendered safely; the message says which placeholder and why."""


class Language(StrEnum):
    """The language a template is written in, which decides how values are escaped."""

    PROMQL = "promql"
    URL = "url"


@dataclass(frozen=True)
class Placeholder:
    """One `{{...}}` in a template."""

    name: str
    """The variable name between the braces, for example `namespace` or `labels.app`."""
    start: int
    """Offset of the opening `{{` in the template."""
    end: int
    """Offset just past the closing `}}`."""


def placeholders(template: str) -> list[Placeholder]:
    """Every `{{...}}` in `template`, in order."""
    return [Placeholder(m.group("name"), m.start(), m.end()) for m in _PLACEHOLDER.finditer(template)]


def check_template(template: str, language: Language) -> list[str]:
    """Problems of `template` itself (unknown variables, unsafe positions); empty when it can be rendered."""
    problems: list[str] = []
    for placeholder in placeholders(template):
        problem = _check_name(placeholder.name)
        if problem:
            problems.append(problem)
    stray = _PLACEHOLDER.sub("", template)
    if "{{" in stray or "}}" in stray:
        problems.append("unbalanced {{ or }} (a placeholder is written {{name}})")
    if problems:
        return problems
    try:
        if language is Language.PROMQL:
            _promql_contexts(template)
        else:
            _url_positions(template)
    except TemplateError as exc:
        problems.append(str(exc))
    return problems


def render_promql(template: str, variables: Mapping[str, str]) -> str:
    """`template` with each placeholder replaced by its value, escaped for the PromQL string it sits in."""
    contexts = _promql_contexts(template)
    out: list[str] = []
    last = 0
    for placeholder, context in contexts:
        out.append(template[last : placeholder.start])
        value = _value(placeholder.name, variables)
        if context.regex:
            value = "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in value)
        out.append(_escape_promql_string(value, context.quote, placeholder.name))
        last = placeholder.end
    out.append(template[last:])
    return "".join(out)


def render_url(template: str, variables: Mapping[str, str]) -> str:
    """`template` with each placeholder replaced by its value, encoded for its position in the URL."""
    positions = _url_positions(template)
    out: list[str] = []
    last = 0
    for placeholder, position in positions:
        out.append(template[last : placeholder.start])
        value = _value(placeholder.name, variables)
        if position == "host":
            if not _RFC1123_LABEL.fullmatch(value):
                raise TemplateError(
                    f"{{{{{placeholder.name}}}}} = {value!r} cannot be part of a host name "
                    "(it must be an RFC 1123 label: lowercase letters, digits and '-', at most 63)"
                )
            out.append(value)
        elif position == "port":
            if not value.isascii() or not value.isdigit():
                raise TemplateError(f"{{{{{placeholder.name}}}}} = {value!r} is not a port number")
            out.append(value)
        else:
            out.append(quote(value, safe=""))
        last = placeholder.end
    out.append(template[last:])
    return "".join(out)


def _check_name(name: str) -> str | None:
    if name in VARIABLES:
        return None
    if name.startswith("labels."):
        key = name.removeprefix("labels.")
        if _LABEL_KEY.fullmatch(key):
            return None
        return f"{{{{{name}}}}}: {key!r} is not a label key"
    known = ", ".join(f"{{{{{v}}}}}" for v in (*VARIABLES, "labels.KEY"))
    return f"unknown template variable {{{{{name}}}}} (known: {known})"


def _value(name: str, variables: Mapping[str, str]) -> str:
    try:
        return variables[name]
    except KeyError:
        if name.startswith("labels."):
            raise TemplateError(
                f"{{{{{name}}}}} has no value: the pod template has no label {name.removeprefix('labels.')!r}"
            ) from None
        raise TemplateError(f"{{{{{name}}}}} has no value") from None


@dataclass(frozen=True)
class _StringContext:
    quote: str
    """The quote character of the enclosing PromQL string literal: `"`, `'` or a backtick."""
    regex: bool
    """True when the literal is the right-hand side of a `=~` or `!~` matcher."""


def _promql_contexts(template: str) -> list[tuple[Placeholder, _StringContext]]:
    """Which string literal each placeholder sits in; `TemplateError` if one sits outside any string.

    A small PromQL lexer: it tracks string literals (with backslash escapes in `"` and `'` strings,
    none in backtick strings) and `#` comments, and remembers the operator before each literal.
    """
    found: list[tuple[Placeholder, _StringContext]] = []
    pending = placeholders(template)
    i = 0
    n = len(template)
    previous_token = ""
    while i < n and pending:
        ch = template[i]
        if pending[0].start == i:
            raise TemplateError(
                f"{{{{{pending[0].name}}}}} must sit inside a quoted PromQL string, "
                f'for example namespace="{{{{{pending[0].name}}}}}", where its value is escaped'
            )
        if ch in "\"'`":
            regex = previous_token in ("=~", "!~")
            j = i + 1
            while j < n and template[j] != ch:
                if pending and pending[0].start == j:
                    found.append((pending.pop(0), _StringContext(ch, regex)))
                    j = found[-1][0].end
                    continue
                j += 2 if template[j] == "\\" and ch != "`" else 1
            if j >= n:
                raise TemplateError(f"unterminated PromQL string starting with {ch} at offset {i}")
            previous_token = ch
            i = j + 1
            continue
        if ch == "#":
            end = template.find("\n", i)
            i = n if end < 0 else end
            continue
        if not ch.isspace():
            previous_token = template[i : i + 2] if template[i : i + 2] in ("=~", "!~") else ch
            i += 2 if previous_token in ("=~", "!~") else 1
            continue
        i += 1
    if pending:
        # Only reachable when a placeholder follows an unterminated comment line; refuse it all the same.
        raise TemplateError(f"{{{{{pending[0].name}}}}} must sit inside a quoted PromQL string")
    return found


def _escape_promql_string(value: str, quote_char: str, name: str) -> str:
    """`value` written as the inside of a PromQL string literal quoted with `quote_char`."""
    if quote_char == "`":
        # Raw strings have no escapes: a backtick cannot be represented, so it is refused.
        if "`" in value:
            raise TemplateError(f"{{{{{name}}}}} = {value!r} contains a backtick and sits in a `raw` PromQL string")
        return value
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == quote_char:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _url_positions(template: str) -> list[tuple[Placeholder, str]]:
    """The URL component (host, port, path, query, fragment) each placeholder sits in.

    Placeholders in the scheme or the user-info are refused: a value there could redirect the
    request to another host or carry credentials.
    """
    found: list[tuple[Placeholder, str]] = []
    scheme_end = template.find("://")
    for placeholder in placeholders(template):
        # Judge the position by the literal text before the placeholder, other placeholders masked.
        before = _PLACEHOLDER.sub("x", template[: placeholder.start])
        if scheme_end < 0 or placeholder.start < scheme_end + 3:
            raise TemplateError(f"{{{{{placeholder.name}}}}} cannot be used in the URL scheme")
        rest = before[before.find("://") + 3 :]
        if "#" in rest:
            position = "fragment"
        elif "?" in rest:
            position = "query"
        elif "/" in rest:
            position = "path"
        else:
            authority_after = re.split(r"[/?#]", template[placeholder.end :], maxsplit=1)[0]
            if "@" in rest or "@" in authority_after:
                raise TemplateError(f"{{{{{placeholder.name}}}}} cannot be used in the URL user-info")
            position = "port" if ":" in rest else "host"
        found.append((placeholder, position))
    return found
