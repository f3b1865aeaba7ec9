"""Slack: one thread per rollout with a root kept current, Retry-After honoured, webhook mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from daemon.clock import FakeClock
from daemon.notify import AlertKind, NotificationPipeline, Redactor
from daemon.notify.slack import InMemoryThreadStore, SlackNotifier, SlackWebhookNotifier
from sim.receivers.slack import SlackReceiver
from tests.test_notify_kit import SLACK_TOKEN, eventually, make_alert


@pytest.fixture
async def slack() -> AsyncIterator[SlackReceiver]:
    async with SlackReceiver(tokens=[SLACK_TOKEN]) as rx:
        yield rx


@pytest.fixture
async def notifier(slack: SlackReceiver) -> AsyncIterator[SlackNotifier]:
    n = SlackNotifier(token=SLACK_TOKEN, channel="#deploys", redactor=Redactor(), base_url=slack.url, timeout=2)
    yield n
    await n.aclose()


async def test_started_then_complete_is_one_root_one_reply_and_the_root_updated(
    slack: SlackReceiver, notifier: SlackNotifier
) -> None:
    started = make_alert(AlertKind.ROLLOUT_STARTED, title="deploying backend:v2", rule=None, action=None)
    complete = make_alert(AlertKind.ROLLOUT_COMPLETE, title="analysis passed", rule=None, action=None, at=1_700_000_600)
    assert (await notifier.send(started)).ok
    assert (await notifier.send(complete)).ok

    assert [r.errors for r in slack.received if not r.accepted] == []
    roots = slack.roots()
    assert len(roots) == 1, f"expected one root message, got {len(roots)}"
    root = roots[0]
    assert root.channel == slack.channel_id("deploys")
    replies = slack.replies(root)
    assert [r.text for r in replies] == ["Rollout complete: analysis passed (staging/backend rev 7)"]
    # The root was edited once and now shows the current status, keeping the opening details.
    assert len(root.history) == 1
    assert "Rollout started" in root.history[0]["text"]
    assert root.text == "staging/backend revision 7: Rollout complete — analysis passed"
    assert "Rollout complete" in root.blocks[1]["text"]["text"]
    assert any("deploying backend:v2" in str(block) for block in root.blocks[3:])
    # chat.update went to the channel ID Slack answered with, not the name.
    assert [call["channel"] for call in slack.calls("chat.update")] == [root.channel]


async def test_each_rollout_gets_its_own_thread(slack: SlackReceiver, notifier: SlackNotifier) -> None:
    for revision in (7, 8):
        for kind in (AlertKind.ROLLOUT_STARTED, AlertKind.ROLLBACK_STARTED):
            alert = make_alert(kind, revision=revision, rollout_key=f"staging/backend/{revision}")
            assert (await notifier.send(alert)).ok
    roots = slack.roots()
    assert len(roots) == 2
    assert [len(slack.replies(root)) for root in roots] == [1, 1]


async def test_a_retry_after_a_failed_root_update_does_not_repeat_the_reply(
    slack: SlackReceiver, notifier: SlackNotifier
) -> None:
    assert (await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED))).ok
    root = slack.roots()[0]
    rollback = make_alert(AlertKind.ROLLBACK_STARTED)
    # The threaded reply goes through, then chat.update hits a 503.
    slack.fail_next(status=503, path="/api/chat.update")
    result = await notifier.send(rollback)
    assert (result.ok, result.retry) == (False, True), result
    assert len(slack.replies(root)) == 1
    assert "Rollout started" in root.text, "the root must not have been updated yet"
    # The pipeline's retry only redoes the update.
    assert (await notifier.send(rollback)).ok
    assert len(slack.replies(root)) == 1, "the reply must be posted exactly once across retries"
    assert "Rollback executed" in root.text


async def test_a_failed_reply_is_posted_on_retry(slack: SlackReceiver, notifier: SlackNotifier) -> None:
    assert (await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED))).ok
    slack.fail_next(status=500, path="/api/chat.postMessage")
    failed = make_alert(AlertKind.ROLLOUT_FAILED)
    assert (await notifier.send(failed)).retry
    assert (await notifier.send(failed)).ok
    root = slack.roots()[0]
    assert [r.text.split(":")[0] for r in slack.replies(root)] == ["Rollout failed"]
    assert "Rollout failed" in root.text


async def test_pipeline_honours_slack_retry_after(slack: SlackReceiver, notifier: SlackNotifier) -> None:
    clock = FakeClock()
    pipeline = NotificationPipeline([notifier], clock=clock, backoff_base=0.1, backoff_cap=0.2, deadline_seconds=60)
    slack.fail_next(status=429, retry_after=5)
    await pipeline.start()
    try:
        pipeline.submit(make_alert(AlertKind.ROLLOUT_STARTED))
        await eventually(lambda: len(slack.received) == 1, what="the rate-limited attempt")
        await eventually(lambda: bool(clock._sleepers), what="the pipeline to wait")
        await clock.advance(4.9)
        assert len(slack.received) == 1, "retried before Retry-After (5 s) had passed"
        await clock.advance(0.2)
        await eventually(lambda: len(slack.roots()) == 1, what="the retried post")
        assert [r.status for r in slack.received] == [429, 200]
    finally:
        await pipeline.stop(drain_timeout=1)


async def test_webhook_mode_posts_one_message_per_alert() -> None:
    async with SlackReceiver() as rx:
        notifier = SlackWebhookNotifier(url=rx.webhook_url, redactor=Redactor(), timeout=2)
        try:
            for kind in (AlertKind.ROLLOUT_STARTED, AlertKind.ROLLOUT_COMPLETE):
                assert (await notifier.send(make_alert(kind))).ok
        finally:
            await notifier.aclose()
        assert [post["text"] for post in rx.webhook_posts] == [
            "Rollout started: error rate 9.1% > 5% for 1m (staging/backend rev 7)",
            "Rollout complete: error rate 9.1% > 5% for 1m (staging/backend rev 7)",
        ]


async def test_mrkdwn_control_characters_are_escaped(slack: SlackReceiver, notifier: SlackNotifier) -> None:
    assert (await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED, title="<!channel> & co"))).ok
    text = str(slack.roots()[0].blocks)
    assert "&lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text


async def test_long_evidence_stays_within_slack_limits(slack: SlackReceiver, notifier: SlackNotifier) -> None:
    evidence = tuple(f"line {i}: " + "x" * 200 for i in range(100))
    assert (await notifier.send(make_alert(AlertKind.ROLLOUT_STARTED, evidence=evidence))).ok
    assert (await notifier.send(make_alert(AlertKind.NOTIFY_MATCHED, evidence=evidence))).ok
    assert [r.errors for r in slack.received if not r.accepted] == []


async def test_a_new_notifier_with_the_same_thread_store_keeps_the_rollout_in_one_thread(
    slack: SlackReceiver,
) -> None:
    store = InMemoryThreadStore()
    before = SlackNotifier(token=SLACK_TOKEN, channel="#deploys", redactor=Redactor(), base_url=slack.url, timeout=2,
                           thread_store=store)
    started = make_alert(AlertKind.ROLLOUT_STARTED, title="deploying backend:v2", rule=None, action=None)
    assert (await before.send(started)).ok
    await before.aclose()
    assert store.get("staging/backend/7") == (slack.channel_id("deploys"), slack.roots()[0].ts)

    # The daemon restarted: a new notifier, the same (persisted) store.
    after = SlackNotifier(token=SLACK_TOKEN, channel="#deploys", redactor=Redactor(), base_url=slack.url, timeout=2,
                          thread_store=store)
    rollback = make_alert(AlertKind.ROLLBACK_STARTED, title="error rate 9.1% > 5% for 1m", at=1_700_000_600)
    assert (await after.send(rollback)).ok
    await after.aclose()

    roots = slack.roots()
    assert len(roots) == 1, f"a restart must not open a second thread: {[m.text for m in roots]}"
    assert [(m.thread_ts, m.text) for m in slack.replies(roots[0])] == [
        (roots[0].ts, "Rollback executed: error rate 9.1% > 5% for 1m (staging/backend rev 7)")]
    assert roots[0].text == "staging/backend revision 7: Rollback executed — error rate 9.1% > 5% for 1m"
    assert [call["ts"] for call in slack.calls("chat.update")] == [roots[0].ts]
