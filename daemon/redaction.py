"""Scrubbing secrets from anything rollguard shows: URLs, log lines, Events, Measurement messages.

Pure text functions, no I/O, importable from every layer (`signals`, `kube`, `notify` do not import
each other; they all may import this):

* `redact_url(url)`: a URL without its user-info (`user:pass@`) and with the values of
  secret-looking query parameters replaced: `token`, `key`, `sig`, `signature`, `password`,
  `secret`, `access_token`, `api_key`, `auth`, … (case-insensitive; any name containing `token`,
  `secret`, `password`, `signature`, `apikey`/`api_key`, `credential` counts too).
* `redact_text(text)`: the same for every URL or `?name=value` inside a longer text (an exception
  message quoting the URL it failed on).
* `SCRUBBER`: the process-wide `Scrubber`, `redact_text` plus every redactor registered with
  `SCRUBBER.add(fn)` — the notifiers' `Redactor.redact` registers the secret values it knows
  (tokens, routing keys). The log pipeline (`daemon.logs`) and the Event recorder use it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

__all__ = ["REDACTED", "SCRUBBER", "Scrubber", "redact_text", "redact_url"]

REDACTED = "[REDACTED]"
"""What a secret is replaced with (the notifiers' redactor uses the same marker)."""

# `scheme://user:pass@host` anywhere in a text; `@` inside the path or query is not user-info.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s\"'<>]*@")
_SECRET_NAME = (r"(?:[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|signature|api[_-]?key|access[_-]?key"
                r"|private[_-]?key|credential)[A-Za-z0-9_.-]*|key|sig|pwd|auth|authorization|x-amz-signature)")
# `?name=value` / `&name=value` with a secret-looking name; the value runs to the next separator, less
# trailing punctuation of the sentence around it (`…?token=abc: HTTP 503` keeps its colon).
_SECRET_PARAM = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME}=)[^&;#\s\"'<>]*?(?=[:.,)\]]*(?:[&;#\s\"'<>]|$))",
                           re.IGNORECASE)


def redact_text(text: str) -> str:
    """`text` with every URL's user-info removed and every secret-looking query value replaced."""
    text = _USERINFO.sub(lambda m: m.group("scheme"), text)
    return _SECRET_PARAM.sub(lambda m: m.group("name") + REDACTED, text)


def redact_url(url: object) -> str:
    """`url` (a string or a `yarl.URL`) as safe to show: no user-info, no secret query values."""
    return redact_text(str(url))


class Scrubber:
    """`redact_text` followed by every registered redactor; thread-safe to add to, cheap to call."""

    def __init__(self) -> None:
        self._redactors: tuple[Callable[[str], str], ...] = ()
        self._lock = threading.Lock()
        self.generation = 0
        """Bumped whenever what is scrubbed may have grown: a text scrubbed under an older generation
        (a memoised result, `daemon.logs`) must be scrubbed again."""

    def add(self, redactor: Callable[[str], str]) -> None:
        """Register one more text → text redactor (e.g. a notifier `Redactor.redact`); adding twice is a no-op."""
        with self._lock:
            if redactor not in self._redactors:
                self._redactors = (*self._redactors, redactor)
            self.generation += 1

    def changed(self) -> None:
        """A registered redactor has learnt another secret (`Redactor.add`): earlier results are void."""
        with self._lock:
            self.generation += 1

    def scrub(self, text: str) -> str:
        """`text` with URL secrets and every registered secret removed."""
        text = redact_text(text)
        for redactor in self._redactors:
            text = redactor(text)
        return text

    __call__ = scrub


SCRUBBER = Scrubber()
"""The process-wide scrubber: the log pipeline and the Event recorder scrub with it."""
