"""A local Slack: the Web API subset rollguard uses, plus an incoming webhook.

Endpoints (as Slack serves them; JSON or form bodies, token in `Authorization: Bearer` or `token`):
    POST /api/auth.test          who am I
    POST /api/chat.postMessage   channel + text/blocks (+ thread_ts) → {"ok", "channel", "ts", "message"}
    POST /api/chat.update        channel ID + ts + text/blocks → {"ok", "channel", "ts", "text", "message"}
    POST /services/T…/B…/X…      incoming webhook → 200 "ok", or 400 invalid_payload / no_text, 404 no_service

Answers follow Slack: Web API errors are HTTP 200 with `{"ok": false, "error": "<code>"}` (and for
bad blocks an `errors` list with json-pointers); rate limiting is HTTP 429 with Retry-After and
`{"ok": false, "error": "ratelimited"}`. Block Kit is checked for the block types rollguard uses
(header, section, context, divider, actions) with Slack's documented limits.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sim.receivers import LocalReceiver, read_body, respond

TEAM_ID = "T0ROLLGRD"
BOT_ID = "B0ROLLGRD"
BOT_USER_ID = "U0ROLLGRD"

_TS = re.compile(r"^\d{10}\.\d{6}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BLOCK_ID = 255
MAX_MESSAGE_TEXT = 40_000


@dataclass
class SlackMessage:
    """A message as the local Slack stores it."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None
    """The root's ts for a threaded reply; None for a top-level message."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Earlier versions ({"text", "blocks"}), oldest first, one per chat.update."""


def validate_blocks(blocks: Any) -> list[str]:
    """Block Kit errors in Slack's wording (`<problem> [json-pointer:/blocks/N/...]`); empty if valid."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"must contain at most {MAX_BLOCKS} items [json-pointer:/blocks]")
    for index, block in enumerate(blocks):
        errors.extend(_validate_block(block, f"/blocks/{index}"))
    return errors


def _text_object(obj: Any, where: str, *, plain_only: bool = False, limit: int | None = None) -> list[str]:
    if not isinstance(obj, dict):
        return [f"must be an object [json-pointer:{where}]"]
    kind = obj.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind not in allowed:
        return [f"must be one of {', '.join(allowed)} [json-pointer:{where}/type]"]
    errors: list[str] = []
    extra = set(obj) - {"type", "text", "emoji" if kind == "plain_text" else "verbatim"}
    errors.extend(f"invalid additional property: {key} [json-pointer:{where}]" for key in sorted(extra))
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"must be a non-empty string [json-pointer:{where}/text]")
    elif limit is not None and len(text) > limit:
        errors.append(f"must be less than {limit + 1} characters [json-pointer:{where}/text]")
    return errors


def _validate_block(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"must be an object [json-pointer:{where}]"]
    kind = block.get("type")
    allowed_keys: set[str] = {"type", "block_id"}
    errors: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None and (not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID):
        errors.append(f"must be a string of at most {MAX_BLOCK_ID} characters [json-pointer:{where}/block_id]")
    if kind == "section":
        allowed_keys |= {"text", "fields", "accessory"}
        if "text" not in block and "fields" not in block:
            errors.append(f"must provide either text or fields [json-pointer:{where}]")
        if "text" in block:
            errors.extend(_text_object(block["text"], f"{where}/text", limit=MAX_SECTION_TEXT))
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list) or not fields or len(fields) > MAX_SECTION_FIELDS:
                errors.append(f"must be an array of 1 to {MAX_SECTION_FIELDS} items [json-pointer:{where}/fields]")
            else:
                for i, item in enumerate(fields):
                    errors.extend(_text_object(item, f"{where}/fields/{i}", limit=MAX_FIELD_TEXT))
        if "accessory" in block:
            errors.extend(_validate_element(block["accessory"], f"{where}/accessory"))
    elif kind == "header":
        allowed_keys |= {"text"}
        errors.extend(_text_object(block.get("text"), f"{where}/text", plain_only=True, limit=MAX_HEADER_TEXT))
    elif kind == "context":
        allowed_keys |= {"elements"}
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
            errors.append(f"must be an array of 1 to {MAX_CONTEXT_ELEMENTS} items [json-pointer:{where}/elements]")
        else:
            for i, element in enumerate(elements):
                errors.extend(_text_object(element, f"{where}/elements/{i}", limit=MAX_SECTION_TEXT))
    elif kind == "divider":
        pass
    elif kind == "actions":
        allowed_keys |= {"elements"}
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > MAX_ACTIONS_ELEMENTS:
            errors.append(f"must be an array of 1 to {MAX_ACTIONS_ELEMENTS} items [json-pointer:{where}/elements]")
        else:
            for i, element in enumerate(elements):
                errors.extend(_validate_element(element, f"{where}/elements/{i}"))
    else:
        return [f"must be one of section, context, header, divider, actions [json-pointer:{where}/type]"]
    errors.extend(
        f"invalid additional property: {key} [json-pointer:{where}]" for key in sorted(set(block) - allowed_keys)
    )
    return errors


def _validate_element(element: Any, where: str) -> list[str]:
    # Only buttons: the one interactive element a notification could carry (a link to a dashboard).
    if not isinstance(element, dict) or element.get("type") != "button":
        return [f"must be a button [json-pointer:{where}/type]"]
    errors = _text_object(element.get("text"), f"{where}/text", plain_only=True, limit=MAX_BUTTON_TEXT)
    extra = set(element) - {"type", "text", "action_id", "url", "value", "style"}
    errors.extend(f"invalid additional property: {key} [json-pointer:{where}]" for key in sorted(extra))
    if element.get("style") not in (None, "primary", "danger"):
        errors.append(f"must be one of primary, danger [json-pointer:{where}/style]")
    return errors


class SlackReceiver(LocalReceiver):
    """A local Slack Web API + incoming webhook that validates and records what it is sent.

    `tokens`: the bot tokens it accepts (any `xoxb-`/`xoxp-` token when None).
    """

    def __init__(self, *, tokens: Iterable[str] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(host=host)
        self._tokens = None if tokens is None else frozenset(tokens)
        self._channels: dict[str, str] = {}
        self._seq = 0
        # The secret part of the webhook URL: random, so tests can check it never leaks.
        self.webhook_path = f"/services/{TEAM_ID}/{BOT_ID}/{secrets.token_hex(12)}"
        self.messages: dict[tuple[str, str], SlackMessage] = {}
        """Stored messages by (channel ID, ts)."""
        self.webhook_posts: list[dict[str, Any]] = []
        """Accepted incoming-webhook bodies, in order."""

    # --- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Web API base URL, for `SlackNotifier(base_url=...)`."""
        return f"{self.origin}/api/"

    @property
    def webhook_url(self) -> str:
        """A valid incoming-webhook URL (its last path segment is the secret)."""
        return f"{self.origin}{self.webhook_path}"

    def channel_id(self, name: str) -> str:
        """The ID the local Slack gives a channel name ("#deploys" and "deploys" are the same channel)."""
        bare = name.lstrip("#")
        if bare not in self._channels:
            self._channels[bare] = "C" + hashlib.sha256(bare.encode()).hexdigest()[:10].upper()
        return self._channels[bare]

    # --- queries for tests -----------------------------------------------------------------------

    def roots(self) -> list[SlackMessage]:
        """Top-level messages, oldest first."""
        return sorted((m for m in self.messages.values() if m.thread_ts is None), key=lambda m: m.ts)

    def replies(self, root: SlackMessage) -> list[SlackMessage]:
        """Messages in `root`'s thread, oldest first."""
        return sorted(
            (m for m in self.messages.values() if m.thread_ts == root.ts and m.channel == root.channel),
            key=lambda m: m.ts,
        )

    def calls(self, method: str) -> list[Any]:
        """Bodies of accepted calls to one Web API method, e.g. "chat.update"."""
        return [r.body for r in self.received if r.accepted and r.path == f"/api/{method}"]

    # --- server ----------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_post("/services/{team}/{bot}/{secret}", self._webhook)
        return app

    def _fault_response(
        self, status: int, retry_after: float | None, echo: str | None
    ) -> tuple[Any, Mapping[str, str]]:
        if status == 429:
            code = "ratelimited"
        elif status >= 500:
            code = "service_unavailable" if status == 503 else "internal_error"
        else:
            code = "invalid_arguments"
        return {"ok": False, "error": f"{code}: {echo}" if echo else code}, {}

    def _next_ts(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq:06d}"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        body, parse_error = await read_body(request)
        fault = await self._maybe_fault(request, body)
        if fault is not None:
            return fault
        args: dict[str, Any] = dict(request.query)
        if isinstance(body, dict):
            args.update(body)
        method = request.match_info["method"]

        def fail(error: str, errors: list[str] | None = None) -> web.Response:
            answer: dict[str, Any] = {"ok": False, "error": error}
            if errors:
                answer["errors"] = errors
                answer["response_metadata"] = {"messages": [f"[ERROR] {e}" for e in errors]}
            self._record(request, body, 200, answer, accepted=False, errors=tuple(errors or (error,)))
            return respond(200, answer)

        if parse_error is not None or not isinstance(body, dict | str):
            return fail("invalid_json")
        token_error = self._check_token(request, args)
        if token_error is not None:
            return fail(token_error)
        try:
            if method == "auth.test":
                answer: dict[str, Any] = {
                    "ok": True, "url": f"{self.origin}/", "team": "rollguard-local", "user": "rollguard",
                    "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False,
                }
            elif method == "chat.postMessage":
                answer = self._post_message(args)
            elif method == "chat.update":
                answer = self._update(args)
            else:
                raise _Reject("unknown_method")
        except _Reject as reject:
            return fail(reject.code, reject.errors)
        self._record(request, body, 200, answer, accepted=True)
        return respond(200, answer)

    def _check_token(self, request: web.Request, args: Mapping[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else args.get("token")
        if not token:
            return "not_authed"
        if not isinstance(token, str) or not re.match(r"^xox[bp]-", token):
            return "invalid_auth"
        if self._tokens is not None and token not in self._tokens:
            return "invalid_auth"
        return None

    def _content(self, args: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """(text, blocks), or `_Reject`. Form bodies carry blocks as a JSON string."""
        text = args.get("text") or ""
        blocks: Any = args.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks)
            except json.JSONDecodeError:
                raise _Reject("invalid_blocks_format") from None
        if not isinstance(text, str):
            raise _Reject("invalid_arguments", ["must be a string [json-pointer:/text]"])
        if not text and not blocks:
            raise _Reject("no_text")
        if len(text) > MAX_MESSAGE_TEXT:
            raise _Reject("msg_too_long")
        if blocks is not None:
            errors = validate_blocks(blocks)
            if errors:
                raise _Reject("invalid_blocks", errors)
        return text, list(blocks or [])

    def _resolve_channel(self, value: Any, *, names_allowed: bool) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        if value in self._channels.values():
            return value
        if _CHANNEL_ID.match(value):
            return None  # looks like an ID, but not one this workspace has
        return self.channel_id(value) if names_allowed else None

    def _post_message(self, args: Mapping[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(args.get("channel"), names_allowed=True)
        if channel is None:
            raise _Reject("channel_not_found")
        text, blocks = self._content(args)
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None:
            if not isinstance(thread_ts, str) or not _TS.match(thread_ts):
                raise _Reject("invalid_thread_ts")
            root = self.messages.get((channel, thread_ts))
            if root is None:
                raise _Reject("thread_not_found")
            # Slack threads are one level deep: a reply to a reply joins the root's thread.
            thread_ts = root.thread_ts or root.ts
        ts = self._next_ts()
        message = SlackMessage(channel=channel, ts=ts, text=text, blocks=blocks, thread_ts=thread_ts)
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": _message_json(message)}

    def _update(self, args: Mapping[str, Any]) -> dict[str, Any]:
        # chat.update takes a channel ID, not a name: the notifier must use the ID postMessage returned.
        channel = self._resolve_channel(args.get("channel"), names_allowed=False)
        if channel is None:
            raise _Reject("channel_not_found")
        ts = args.get("ts")
        if not isinstance(ts, str) or not _TS.match(ts):
            raise _Reject("message_not_found")
        message = self.messages.get((channel, ts))
        if message is None:
            raise _Reject("message_not_found")
        text, blocks = self._content(args)
        message.history.append({"text": message.text, "blocks": message.blocks})
        message.text, message.blocks = text, blocks
        return {"ok": True, "channel": channel, "ts": ts, "text": text, "message": _message_json(message)}

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        body, parse_error = await read_body(request)
        fault = await self._maybe_fault(request, body)
        if fault is not None:
            return fault

        def answer(status: int, text: str, *, accepted: bool) -> web.Response:
            self._record(request, body, status, text, accepted=accepted, errors=() if accepted else (text,))
            return web.Response(status=status, text=text, content_type="text/html")

        if request.path != self.webhook_path:
            return answer(404, "no_service", accepted=False)
        if parse_error is not None or not isinstance(body, dict):
            return answer(400, "invalid_payload", accepted=False)
        try:
            self._content(body)
        except _Reject as reject:
            return answer(400, "no_text" if reject.code == "no_text" else "invalid_payload", accepted=False)
        self.webhook_posts.append(body)
        return answer(200, "ok", accepted=True)


class _Reject(Exception):
    """A request Slack would refuse: its error code and, for blocks, the detailed errors."""

    def __init__(self, code: str, errors: list[str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.errors = errors or []


def _message_json(message: SlackMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "app_id": "A0ROLLGRD",
        "text": message.text, "ts": message.ts, "team": TEAM_ID,
    }
    if message.blocks:
        out["blocks"] = message.blocks
    if message.thread_ts is not None:
        out["thread_ts"] = message.thread_ts
    return out
