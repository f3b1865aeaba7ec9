"""The live page: one self-contained HTML file shipped with the package (`page.html`), served at `/`."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src data:; connect-src 'self'")
"""Content-Security-Policy of the page: it loads nothing from anywhere, and only calls its own API."""


@cache
def live_page() -> bytes:
    """The page's bytes (read once)."""
    return files("daemon.view").joinpath("page.html").read_bytes()
