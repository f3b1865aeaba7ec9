"""Label and field selectors, as the Kubernetes API server parses and applies them.

* `parse_label_selector("app=web,tier in (a,b),!canary")` → a predicate over a labels mapping
  (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`/`<` on integers; comma = AND).
* `selector_matches(label_selector_object, labels)`: a `metav1.LabelSelector` (`matchLabels` +
  `matchExpressions`), as the Deployment and ReplicaSet controllers and Services use it. An empty
  selector matches everything (the API server's validation, not this function, rejects empty
  selectors where they are not allowed).
* `parse_field_selector("metadata.name=web", rt)` → a predicate over whole objects; only the fields
  the real server supports for that resource are accepted.
* `label_selector_string(selector_object)`: the canonical text form kubectl prints (`app=web`).

Errors are `ApiError` 400 BadRequest (what a list request with a bad selector gets); `selector_matches`
raises `ValueError` for an invalid operator, which the API layer rejects at validation time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sim.resources import ResourceType
from sim.store import ApiError

LabelPredicate = Callable[[Mapping[str, str]], bool]
ObjectPredicate = Callable[[Mapping[str, Any]], bool]

_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


# ----- label keys and values -----


def label_key_error(key: str) -> str | None:
    """Why `key` is not a valid label key (prefix/name), or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, " \
                   "'-' or '.', and must start and end with an alphanumeric character"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.fullmatch(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a valid label value, or None when it is."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.fullmatch(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return None


# ----- label selector text -----

# Tokens of the label selector language; identifiers may contain anything but the operators,
# parentheses, commas, `!` and whitespace (the real lexer's definition).
_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")
_OPERATORS = ("=", "==", "!=", "in", "notin", ">", "<")


def _tokenise(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the token pattern matches any non-space character
            raise bad_request(f"unable to parse requirement: unexpected character at {pos} in {text!r}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenise(text)
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def take(self) -> str:
        token = self.peek()
        self.pos += 1
        return token

    def identifier(self, what: str) -> str:
        token = self.take()
        if token == "" or token in ("(", ")", ",", "!", "=", "==", "!=", ">", "<"):
            raise bad_request(f"unable to parse requirement: found '{token}', expected: {what}")
        return token

    def parse(self) -> list[LabelPredicate]:
        requirements: list[LabelPredicate] = []
        while self.peek() != "":
            requirements.append(self.requirement())
            token = self.take()
            if token == "":
                break
            if token != ",":
                raise bad_request(f"found '{token}', expected: ',' or 'end of string'")
            if self.peek() == "":
                raise bad_request("found '', expected: identifier after ','")
        return requirements

    def requirement(self) -> LabelPredicate:
        if self.peek() == "!":
            self.take()
            key = self.identifier("identifier after '!'")
            _check_key(key)
            if self.peek() not in ("", ","):
                raise bad_request(f"unable to parse requirement: found '{self.peek()}', expected: ',' or "
                                  "'end of string'")
            return lambda labels: key not in labels
        key = self.identifier("identifier")
        _check_key(key)
        if self.peek() in ("", ","):
            return lambda labels: key in labels
        operator = self.take()
        if operator not in _OPERATORS:
            raise bad_request(f"unable to parse requirement: found '{operator}', expected: '=', '!=', '==', "
                              "'in', notin'")
        if operator in ("in", "notin"):
            values = self.value_set()
            if operator == "in":
                return lambda labels: key in labels and labels[key] in values
            return lambda labels: key not in labels or labels[key] not in values
        value = "" if self.peek() in ("", ",") else self.identifier("identifier")
        if operator in (">", "<"):
            try:
                bound = int(value)
            except ValueError:
                raise bad_request(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be "
                                  f"an integer: {value!r}") from None
            return _numeric(key, bound, greater=operator == ">")
        _check_value(value)
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value

    def value_set(self) -> frozenset[str]:
        token = self.take()
        if token != "(":
            raise bad_request(f"unable to parse requirement: found '{token}', expected: '('")
        values: list[str] = []
        while True:
            token = self.peek()
            if token == ")":
                self.take()
                break
            if token in (",",):
                values.append("")  # "(a,,b)" holds the empty value, as in the real parser
                self.take()
                continue
            if token == "":
                raise bad_request("unable to parse requirement: found '', expected: ',', ')' or identifier")
            value = self.identifier("',', ')' or identifier")
            _check_value(value)
            values.append(value)
            separator = self.take()
            if separator == ")":
                break
            if separator != ",":
                raise bad_request(f"unable to parse requirement: found '{separator}', expected: ',' or ')'")
        if not values:
            raise bad_request("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty")
        return frozenset(values)


def _numeric(key: str, bound: int, *, greater: bool) -> LabelPredicate:
    def predicate(labels: Mapping[str, str]) -> bool:
        try:
            actual = int(labels[key])
        except (KeyError, ValueError):
            return False
        return actual > bound if greater else actual < bound

    return predicate


def _check_key(key: str) -> None:
    error = label_key_error(key)
    if error is not None:
        raise bad_request(f'unable to parse requirement: key: Invalid value: "{key}": {error}')


def _check_value(value: str) -> None:
    error = label_value_error(value)
    if error is not None:
        raise bad_request(f'unable to parse requirement: values[0][key]: Invalid value: "{value}": {error}')


def parse_label_selector(text: str) -> LabelPredicate:
    """A predicate for the label selector `text`; empty text matches everything. Bad text → ApiError 400."""
    requirements = _LabelParser(text).parse()
    if not requirements:
        return lambda labels: True
    if len(requirements) == 1:
        return requirements[0]
    return lambda labels: all(requirement(labels) for requirement in requirements)


# ----- LabelSelector objects -----


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy a `metav1.LabelSelector` (`matchLabels` AND every `matchExpressions` entry)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or ():
        key = expression.get("key", "")
        operator = expression.get("operator", "")
        values = expression.get("values") or ()
        if operator == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:
            raise ValueError(f'"{operator}" is not a valid label selector operator')
    return True


def label_selector_errors(selector: Mapping[str, Any], path: str) -> list[tuple[str, str, str]]:
    """Validation errors of a LabelSelector object as (field, reason, message) tuples."""
    errors: list[tuple[str, str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        key_error = label_key_error(str(key))
        if key_error:
            errors.append((f"{path}.matchLabels", "FieldValueInvalid", f'Invalid value: "{key}": {key_error}'))
        value_error = label_value_error(str(value))
        if value_error:
            errors.append((f"{path}.matchLabels", "FieldValueInvalid", f'Invalid value: "{value}": {value_error}'))
    for index, expression in enumerate(selector.get("matchExpressions") or ()):
        where = f"{path}.matchExpressions[{index}]"
        operator = expression.get("operator", "")
        values = expression.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errors.append((f"{where}.values", "FieldValueRequired",
                               "Required value: must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errors.append((f"{where}.values", "FieldValueForbidden",
                               "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            errors.append((f"{where}.operator", "FieldValueInvalid",
                           f'Invalid value: "{operator}": not a valid selector operator'))
        key_error = label_key_error(str(expression.get("key", "")))
        if key_error:
            errors.append((f"{where}.key", "FieldValueInvalid",
                           f'Invalid value: "{expression.get("key", "")}": {key_error}'))
    return errors


def label_selector_string(selector: Mapping[str, Any] | None) -> str:
    """The text form of a LabelSelector (`app=web,tier in (a,b)`), sorted by key as Go prints it.

    `<none>` for a missing selector, as kubectl shows it; an empty selector is the empty string.
    """
    if selector is None:
        return "<none>"
    parts: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        parts.append((key, f"{key}={value}"))
    for expression in selector.get("matchExpressions") or ():
        key = expression.get("key", "")
        values = ",".join(sorted(expression.get("values") or ()))
        text = {
            "In": f"{key} in ({values})",
            "NotIn": f"{key} notin ({values})",
            "Exists": key,
            "DoesNotExist": f"!{key}",
        }.get(expression.get("operator", ""), key)
        parts.append((key, text))
    return ",".join(text for _, text in sorted(parts, key=lambda part: part[0]))


# ----- field selectors -----


def _path_getter(*path: str) -> Callable[[Mapping[str, Any]], str]:
    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for part in path:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(part)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


def _event_source(obj: Mapping[str, Any]) -> str:
    return str((obj.get("source") or {}).get("component") or obj.get("reportingComponent") or "")


_COMMON: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "metadata.name": _path_getter("metadata", "name"),
    "metadata.namespace": _path_getter("metadata", "namespace"),
}

_CORE_EVENT_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    **{f"involvedObject.{part}": _path_getter("involvedObject", part)
       for part in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": _path_getter("reason"),
    "reportingComponent": _path_getter("reportingComponent"),
    "source": _event_source,
    "type": _path_getter("type"),
}

# events.k8s.io/v1 names the same fields after its own shape (regarding.*, reportingController).
_V1_EVENT_FIELDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    **{f"regarding.{part}": _path_getter("regarding", part)
       for part in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
    "reason": _path_getter("reason"),
    "reportingController": _path_getter("reportingController"),
    "type": _path_getter("type"),
}

_FIELDS: dict[tuple[str, str], dict[str, Callable[[Mapping[str, Any]], str]]] = {
    ("", "pods"): {
        "spec.nodeName": _path_getter("spec", "nodeName"),
        "spec.restartPolicy": _path_getter("spec", "restartPolicy"),
        "spec.schedulerName": _path_getter("spec", "schedulerName"),
        "spec.serviceAccountName": _path_getter("spec", "serviceAccountName"),
        "spec.hostNetwork": lambda obj: "true" if (obj.get("spec") or {}).get("hostNetwork") else "false",
        "status.phase": _path_getter("status", "phase"),
        "status.podIP": _path_getter("status", "podIP"),
        "status.nominatedNodeName": _path_getter("status", "nominatedNodeName"),
    },
    ("", "events"): _CORE_EVENT_FIELDS,
    ("events.k8s.io", "events"): _V1_EVENT_FIELDS,
    ("", "namespaces"): {"status.phase": _path_getter("status", "phase")},
    ("", "secrets"): {"type": _path_getter("type")},
    ("apps", "replicasets"): {"status.replicas": _path_getter("status", "replicas")},
    ("batch", "jobs"): {"status.successful": _path_getter("status", "succeeded")},
}


def _split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` not preceded by a backslash (field selector values escape `\\,` `\\=`)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            nxt = value[index + 1]
            if nxt not in ("\\", ",", "="):
                raise bad_request(f"invalid field selector: invalid escape sequence: \\{nxt}")
            out.append(nxt)
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _field_requirement(term: str) -> tuple[str, str, str]:
    """(field, operator, value) of one `field<op>value` term."""
    for operator in ("!=", "==", "="):
        # Find the first unescaped occurrence of the operator.
        index = 0
        while True:
            index = term.find(operator, index)
            if index < 0:
                break
            if index > 0 and term[index - 1] == "\\":
                index += 1
                continue
            # "!=" wins over "=" at the same place; "==" over "=".
            if operator == "=" and index > 0 and term[index - 1] == "!":
                index += 1
                continue
            return term[:index].strip(), operator, _unescape(term[index + len(operator):].strip())
    raise bad_request(f"invalid selector: '{term}'; can't understand '{term}'")


def parse_field_selector(text: str, rt: ResourceType) -> ObjectPredicate:
    """A predicate over objects of `rt` for the field selector `text`; unsupported field → ApiError 400."""
    supported = {**_COMMON, **_FIELDS.get((rt.group, rt.plural), {})}
    checks: list[tuple[Callable[[Mapping[str, Any]], str], bool, str]] = []
    for term in _split_unescaped(text, ","):
        if not term.strip():
            continue
        field, operator, value = _field_requirement(term)
        getter = supported.get(field)
        if getter is None:
            raise bad_request(f"field label not supported: {field}")
        checks.append((getter, operator != "!=", value))
    if not checks:
        return lambda obj: True

    def predicate(obj: Mapping[str, Any]) -> bool:
        return all((getter(obj) == value) is equal for getter, equal, value in checks)

    return predicate

