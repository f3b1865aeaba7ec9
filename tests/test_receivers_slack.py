"""The local Slack refuses what real Slack refuses, in Slack's own error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from sim.receivers.slack import SlackReceiver, validate_blocks
from tests.test_notify_kit import SLACK_TOKEN

AUTH = {"Authorization": f"Bearer {SLACK_TOKEN}"}


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as rx:
        yield rx


async def call(rx: SlackReceiver, method: str, body: dict[str, Any] | None = None, *,
               headers: dict[str, str] | None = None, form: bool = False) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": body} if form else {"json": body}
        async with session.post(rx.url + method, headers=AUTH if headers is None else headers, **kwargs) as resp:
            return resp.status, await resp.json()


async def test_post_answers_like_slack(slack: SlackReceiver) -> None:
    status, answer = await call(slack, "chat.postMessage", {"channel": "#deploys", "text": "hi"})
    assert status == 200
    assert answer["ok"] is True
    assert answer["channel"] == slack.channel_id("deploys")
    assert answer["ts"].count(".") == 1
    assert len(answer["ts"]) == 17
    assert answer["message"]["text"] == "hi"


async def test_form_bodies_with_json_blocks_are_accepted(slack: SlackReceiver) -> None:
    blocks = '[{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]'
    status, answer = await call(slack, "chat.postMessage", {"channel": "deploys", "blocks": blocks}, form=True)
    assert (status, answer["ok"]) == (200, True), answer


@pytest.mark.parametrize(
    ("headers", "error"),
    [({}, "not_authed"), ({"Authorization": "Bearer nope"}, "invalid_auth"),
     ({"Authorization": "Bearer xoxb-someone-else"}, "invalid_auth")],
)
async def test_bad_credentials(slack: SlackReceiver, headers: dict[str, str], error: str) -> None:
    assert await call(slack, "auth.test", {}, headers=headers) == (200, {"ok": False, "error": error})


async def test_auth_test(slack: SlackReceiver) -> None:
    status, answer = await call(slack, "auth.test", {})
    assert (status, answer["ok"], answer["team_id"]) == (200, True, "T0ROLLGRD")


@pytest.mark.parametrize(
    ("method", "body", "error"),
    [
        ("chat.postMessage", {"text": "no channel"}, "channel_not_found"),
        ("chat.postMessage", {"channel": "C0NOSUCHCHAN", "text": "x"}, "channel_not_found"),
        ("chat.postMessage", {"channel": "#deploys"}, "no_text"),
        ("chat.postMessage", {"channel": "#deploys", "text": "x", "thread_ts": "yesterday"}, "invalid_thread_ts"),
        ("chat.postMessage", {"channel": "#deploys", "text": "x", "thread_ts": "1700000000.000999"},
         "thread_not_found"),
        ("chat.postMessage", {"channel": "#deploys", "text": "x" * 40_001}, "msg_too_long"),
        ("chat.update", {"channel": "#deploys", "ts": "1700000000.000001", "text": "x"}, "channel_not_found"),
        ("chat.no_such_method", {}, "unknown_method"),
    ],
)
async def test_malformed_calls_are_refused(slack: SlackReceiver, method: str, body: dict[str, Any], error: str) -> None:
    status, answer = await call(slack, method, body)
    assert (status, answer) == (200, {"ok": False, "error": error})
    assert slack.received[-1].accepted is False


async def test_update_needs_an_existing_message(slack: SlackReceiver) -> None:
    _, posted = await call(slack, "chat.postMessage", {"channel": "#deploys", "text": "x"})
    channel = posted["channel"]
    assert await call(slack, "chat.update", {"channel": channel, "ts": "1700000000.999999", "text": "y"}) == (
        200, {"ok": False, "error": "message_not_found"})
    status, answer = await call(slack, "chat.update", {"channel": channel, "ts": posted["ts"], "text": "y"})
    assert (status, answer["ok"], answer["text"]) == (200, True, "y")


async def test_invalid_blocks_answer_with_json_pointers(slack: SlackReceiver) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}},
              {"type": "header", "text": {"type": "mrkdwn", "text": "h"}},
              {"type": "image"}]
    status, answer = await call(slack, "chat.postMessage", {"channel": "#deploys", "text": "x", "blocks": blocks})
    assert status == 200
    assert (answer["ok"], answer["error"]) == (False, "invalid_blocks")
    assert answer["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
        "must be one of plain_text [json-pointer:/blocks/1/text/type]",
        "must be one of section, context, header, divider, actions [json-pointer:/blocks/2/type]",
    ]


def test_block_limits() -> None:
    divider = {"type": "divider"}
    assert validate_blocks([divider] * 50) == []
    assert validate_blocks([divider] * 51) == ["must contain at most 50 items [json-pointer:/blocks]"]
    assert validate_blocks([{"type": "section"}]) == ["must provide either text or fields [json-pointer:/blocks/0]"]
    assert validate_blocks([{"type": "divider", "colour": "red"}]) == [
        "invalid additional property: colour [json-pointer:/blocks/0]"]
    assert validate_blocks([{"type": "context", "elements": []}]) == [
        "must be an array of 1 to 10 items [json-pointer:/blocks/0/elements]"]
    button = {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_id": "a", "style": "danger"}
    assert validate_blocks([{"type": "actions", "elements": [button]}]) == []


async def test_rate_limit_injection_answers_429_with_retry_after(slack: SlackReceiver) -> None:
    slack.fail_next(2, status=429, retry_after=3)
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(slack.url + "auth.test", headers=AUTH) as resp:
                assert (resp.status, resp.headers["Retry-After"]) == (429, "3")
                assert await resp.json() == {"ok": False, "error": "ratelimited"}
    assert (await call(slack, "auth.test", {}))[1]["ok"] is True


async def test_incoming_webhook(slack: SlackReceiver) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(slack.webhook_url, json={"text": "hello"}) as resp:
            assert (resp.status, await resp.text()) == (200, "ok")
        async with session.post(slack.webhook_url, json={}) as resp:
            assert (resp.status, await resp.text()) == (400, "no_text")
        async with session.post(slack.webhook_url, data=b"not json", headers={"Content-Type": "application/json"}) as r:
            assert (r.status, await r.text()) == (400, "invalid_payload")
        async with session.post(slack.origin + "/services/T0/B0/wrong", json={"text": "x"}) as resp:
            assert (resp.status, await resp.text()) == (404, "no_service")
    assert slack.webhook_posts == [{"text": "hello"}]
