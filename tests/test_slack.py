"""Slack paging through the real slack-sdk client against a fake Slack Web API."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import T0, mark_sent
from fake_slack import TOKEN, FakeSlack
from local_server import running
from structlog.testing import capture_logs

from crisiswatch.config import Brand, LiveSettings, Notify, QuietHours, Route, Settings, Slack
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Mention, Page, PageKind, ScoredMention, Severity, Stage, Totals
from crisiswatch.notify import chart
from crisiswatch.notify.dispatch import BROKEN_TRIES, Dispatcher
from crisiswatch.notify.slack import CLOCK_SLACK, UNAUTHORIZED, SlackNotifier
from crisiswatch.notify.slack_blocks import escape, fit, page_blocks, ping, thread_reply
from crisiswatch.store import Store, page_key

PageFactory = Callable[..., Page]
ROUTES = {
    "default": Route(channel="#crisis", mention={"critical": ["U0CRISIS", "S0COMMS"]}),
}
HOSTILE = [
    "<!channel> wake up",
    "@here @channel @everyone look",
    "<https://evil.example|click here> <@U999> <!subteam^S999>",
    "&lt;!here&gt; pre-escaped & <b>",
    "x" * 10_000,
]


class Sleeps:
    """An injected sleep: records each wait, never really sleeps, may run a hook."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.hook: Callable[[int], None] | None = None

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.hook:
            self.hook(len(self.waits))
        await asyncio.sleep(0)


fake = running(FakeSlack)


def notifier(
    fake: FakeSlack,
    store: Store,
    sleeps: Sleeps | None = None,
    routes: dict[str, Route] = ROUTES,
    **kwargs: Any,
) -> SlackNotifier:
    slack = Slack(enabled=True, base_url=fake.base_url, ops_channel="#ops")
    settings = Settings(
        brands=[Brand(id="kestrel", name="Kestrel Bank", keywords=["kestrel"])],
        routes=routes,
        notify=Notify(slack=slack),
    )
    return SlackNotifier(
        LiveSettings(settings), store, token=TOKEN, sleep=sleeps or Sleeps(), **kwargs
    )


TWO_ROUTES = {
    "default": Route(channel="C0SOCIAL"),
    "exec": Route(channel="C0EXEC", mention={"critical": ["U0ONCALL"]}),
}


def moving_life(make_page: PageFactory) -> list[Page]:
    """`life`, where the escalation brings a critical rule's own route (exec)."""
    opened, worse, resolved = life(make_page)
    return [
        replace(opened, incident=replace(opened.incident, route="default")),
        replace(worse, incident=replace(worse.incident, route="exec")),
        replace(resolved, incident=replace(resolved.incident, route="exec")),
    ]


def channels_and_threads(
    fake: FakeSlack,
) -> tuple[list[tuple[tuple[str, str], dict[str, Any]]], list[list[str]]]:
    """The top-level messages in posting order, and each one's thread replies' texts."""
    posted = sorted(fake.messages.items(), key=lambda item: item[0][1])  # by ts
    top = [(where, m) for where, m in posted if not m.get("thread_ts")]
    threads = [
        [str(m["text"]) for (c, _), m in posted if c == channel and m.get("thread_ts") == ts]
        for (channel, ts), _ in top
    ]
    return top, threads


def life(make_page: PageFactory) -> list[Page]:
    """An incident opened, escalated, then resolved."""
    opened = make_page(PageKind.OPENED, severity=Severity.WARNING, stage=Stage.SPARK)
    worse = make_page(
        PageKind.ESCALATED,
        T0 + timedelta(minutes=10),
        ("severity warning → critical", "stage spark → flame"),
    )
    resolved = make_page(PageKind.RESOLVED, T0 + timedelta(hours=2), ("quiet since 12:10 UTC",))
    return [opened, worse, resolved]


def sample(text: str, n: int = 0, negative: float = 0.92, **mention: Any) -> ScoredMention:
    fields: dict[str, Any] = {
        "id": f"x:{n}",
        "source": "x",
        "created_at": T0,
        "text": text,
        "author": f"user{n}",
        "author_followers": 1200,
        "url": f"https://x.com/user{n}/status/{n}",
    }
    fields.update(mention)
    return ScoredMention(Mention(**fields), "kestrel", ("cards",), negative)


class TestIncidentLife:
    async def test_post_then_update_and_thread_replies(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Opened posts; escalated and resolved edit that message and reply in its thread."""
        dispatcher = Dispatcher([notifier(fake, store)], store)
        for page in life(make_page):
            await dispatcher.dispatch(page)
        calls = [(c.method, c.args.get("thread_ts")) for c in fake.calls]
        post, *rest = fake.calls
        channel, ts = fake.channels["#crisis"], "1700000001.000100"
        assert calls == [
            ("chat.postMessage", None),
            ("chat.update", None),
            ("chat.postMessage", ts),
            ("chat.update", None),
            ("chat.postMessage", ts),
        ]
        assert post.args["channel"] == "#crisis"
        assert post.args["unfurl_links"] is False and post.args["unfurl_media"] is False
        assert all(c.args["channel"] == channel and c.args["ts"] == ts for c in rest[::2])
        assert "severity warning → critical" in rest[1].args["text"]
        assert "<@U0CRISIS> <!subteam^S0COMMS>" in rest[1].args["text"]  # worse: call people
        assert "Resolved" in rest[2].args["blocks"][0]["text"]["text"]
        actions = [b for b in rest[2].args["blocks"] if b["type"] == "actions"]
        assert [e["action_id"] for a in actions for e in a["elements"]] == ["false_alarm"]
        assert dispatcher.sent == 3 and dispatcher.failed == 0

    async def test_opening_page_carries_the_context_to_act(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Headline, numbers, terms, posts with links and buttons, and the route's people."""
        page = make_page(
            samples=(
                sample("the atm ate my card", 1, engagement=85),
                sample("still no card", 2),
                sample("is the kestrel app down for anyone?", 3, negative=0.3),
            )
        )
        await Dispatcher([notifier(fake, store)], store).dispatch(page)
        post = fake.calls[0].args
        blocks = post["blocks"]
        text = orjson.dumps(blocks).decode()
        assert blocks[0]["type"] == "header"
        assert blocks[0]["text"]["text"] == "🚨 CRITICAL · 🟠 flame — Kestrel Bank"
        assert post["text"].startswith("<@U0CRISIS> <!subteam^S0COMMS> 🚨 CRITICAL")
        for part in ("40 in 5m vs 8.0 expected", "75% vs usual 20%", "9 → 40", "atm"):
            assert part in text, part
        assert "<https://x.com/user1/status/1|open on x.com>" in text
        assert "*user1* · 1,200 followers · 85 interactions · x" in text
        assert "*user2* · 1,200 followers · x" in text  # no interactions known: none shown
        actions = next(b for b in blocks if b["type"] == "actions")["elements"]
        assert [a["text"]["text"] for a in actions] == [
            "Acknowledge",
            "Snooze 1 h",
            "Resolve",
            "False alarm",
        ]
        posts = [b for b in blocks if "accessory" in b]
        # a post scored negative can be corrected as not negative, any other as a complaint
        assert [b["accessory"]["text"]["text"] for b in posts] == [
            "Not negative",
            "Not negative",
            "Complaint",
        ]
        assert posts[2]["accessory"]["action_id"] == "complaint:2"
        assert orjson.loads(posts[0]["accessory"]["value"]) == {
            "incident": page.incident.id,
            "mention": "x:1",
        }

    async def test_restart_edits_the_message_posted_before(
        self, fake: FakeSlack, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """A new process with the same store edits the recorded message; it never re-posts."""
        opened, worse, resolved = life(make_page)
        first = await Store.open(tmp_path / "s.db")
        await Dispatcher([notifier(fake, first)], first).dispatch(opened)
        await first.close()
        second = await Store.open(tmp_path / "s.db")
        dispatcher = Dispatcher([notifier(fake, second)], second)
        for page in (opened, worse, resolved):  # the opening page is replayed: not sent again
            await dispatcher.dispatch(page)
        await second.close()
        assert len(fake.ok_calls("chat.update")) == 2
        posts = fake.ok_calls("chat.postMessage")
        thread = posts[1].args["thread_ts"]
        assert [p.args.get("thread_ts") for p in posts] == [None, thread, thread]

    async def test_a_reply_slack_took_before_the_answer_was_lost_is_not_repeated(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Slack posts a thread reply but its answer never comes back: the retry finds the reply
        in the thread by its metadata and does not post it again."""
        opened, worse, _ = life(make_page)
        dispatcher = Dispatcher([notifier(fake, store, timeout=1)], store)
        await dispatcher.dispatch(opened)
        fake.hold(lambda method, args: bool(args.get("thread_ts")), take=True)
        await dispatcher.dispatch(worse)
        assert dispatcher.failed == 1 and await store.pending("slack") == 1
        fake.release()
        await dispatcher.flush()
        assert await store.pending("slack") == 0 and dispatcher.sent == 2
        (_, replies), *_ = fake.threads().values()
        assert len(replies) == 1 and "Worse" in replies[0]
        (lookup,) = [c for c in fake.calls if c.method == "conversations.replies"]
        since = time.time() - float(lookup.args["oldest"])  # only what followed the attempt
        assert CLOCK_SLACK.total_seconds() <= since < CLOCK_SLACK.total_seconds() + 60

    async def test_a_message_deleted_in_slack_is_posted_again(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Someone deleted the incident's message: the next page posts a new one with its
        reply in the new thread, and the page after edits the new one. Nothing is lost."""
        opened, worse, resolved = life(make_page)
        dispatcher = Dispatcher([notifier(fake, store)], store)
        await dispatcher.dispatch(opened)
        fake.messages.clear()
        await dispatcher.dispatch(worse)
        await dispatcher.dispatch(resolved)
        assert dispatcher.sent == 3 and dispatcher.failed == 0
        [(shown, replies)] = fake.threads().values()
        assert "Resolved" in shown["blocks"][0]["text"]["text"]
        assert len(replies) == 2 and "Worse" in replies[0] and "Resolved" in replies[1]
        assert [c.error for c in fake.calls if c.method == "chat.update"] == [
            "message_not_found",
            None,
        ]

    async def test_an_incident_moved_to_a_worse_rules_route_pages_its_channel(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A critical rule with a route of its own joins a warning incident: the escalation is
        posted in that route's channel, calling its people; the old message becomes a pointer
        without buttons and its thread says where the incident went; the resolution edits the
        new message; sending the escalation again does not move it again."""
        slack = notifier(fake, store, routes=TWO_ROUTES)
        opened, moved, resolved = moving_life(make_page)
        for page in (opened, moved, moved, resolved):
            await slack.send(page)
        top, (old, new) = channels_and_threads(fake)
        assert [channel for (channel, _), _ in top] == ["C0SOCIAL", "C0EXEC"]
        assert old == ["⤴️ Now critical: this incident is followed in <#C0EXEC> from here on"]
        assert "<@U0ONCALL>" in new[0] and "Resolved" in new[-1] and len(new) == 2
        assert "Resolved" in top[1][1]["blocks"][0]["text"]["text"]
        assert [block["type"] for block in top[0][1]["blocks"]] == ["section"]  # no buttons
        assert "followed in <#C0EXEC>" in top[0][1]["text"]

    async def test_a_move_survives_a_failed_attempt_and_a_deleted_old_message(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The move is made by whichever attempt succeeds: a 500 on the first does not leave
        the escalation in the old channel, and an old message deleted in Slack is let go."""
        dispatcher = Dispatcher([notifier(fake, store, routes=TWO_ROUTES)], store)
        opened, moved, _ = moving_life(make_page)
        await dispatcher.dispatch(opened)
        fake.fail("chat.update", status=500, error="internal_error")
        await dispatcher.dispatch(moved)
        assert await store.pending("slack") == 1
        fake.messages.clear()  # and meanwhile someone deleted the old message
        await dispatcher.flush()
        assert await store.pending("slack") == 0 and dispatcher.sent == 2
        top, _ = channels_and_threads(fake)
        assert [channel for (channel, _), _ in top] == ["C0EXEC"]

    async def test_a_move_of_an_incident_posted_before_routes_were_stored(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, tmp_path: Path
    ) -> None:
        """An incident open across the upgrade has a message with no route stored: it moves
        when its route names another channel (by id) than the message's."""
        dispatcher = Dispatcher([notifier(fake, store, routes=TWO_ROUTES)], store)
        opened, moved, _ = moving_life(make_page)
        await dispatcher.dispatch(opened)
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("UPDATE messages SET route = NULL")
        await dispatcher.dispatch(moved)
        top, _ = channels_and_threads(fake)
        assert [channel for (channel, _), _ in top] == ["C0SOCIAL", "C0EXEC"]

    async def test_a_move_from_an_archived_channel_still_reaches_the_new_one(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The old route's channel was archived (or the bot removed from it): the old message
        is let go and the incident's pages go to the new route's channel, none given up."""
        dispatcher = Dispatcher([notifier(fake, store, routes=TWO_ROUTES)], store)
        opened, moved, resolved = moving_life(make_page)
        await dispatcher.dispatch(opened)
        fake.fail("chat.update", error="is_archived")
        await dispatcher.dispatch(moved)
        await dispatcher.dispatch(resolved)
        assert dispatcher.sent == 3 and dispatcher.failed == 0
        top, _ = channels_and_threads(fake)
        assert [channel for (channel, _), _ in top] == ["C0SOCIAL", "C0EXEC"]

    async def test_a_repost_slack_took_before_the_answer_was_lost_is_not_repeated(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The new message for a deleted one reaches Slack but its answer is lost: the retry
        finds it by its metadata and edits it rather than posting a third (the route names its
        channel by id, as finding a message needs)."""
        opened, worse, _ = life(make_page)
        routes = {"default": Route(channel="C0CRISIS")}
        dispatcher = Dispatcher([notifier(fake, store, routes=routes, timeout=1)], store)
        await dispatcher.dispatch(opened)
        fake.messages.clear()
        fake.hold(lambda method, args: method == "chat.postMessage", take=True)
        await dispatcher.dispatch(worse)
        fake.release()
        await dispatcher.flush()
        assert await store.pending("slack") == 0 and dispatcher.sent == 2
        [message] = [m for m in fake.messages.values() if not m.get("thread_ts")]
        assert "CRITICAL" in message["blocks"][0]["text"]["text"]
        [(_, replies)] = fake.threads().values()
        assert len(replies) == 1

    async def test_a_page_held_past_newer_ones_does_not_bring_back_old_state(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Quiet hours hold the warning's opening page; the escalation to critical and the
        resolution go at once. When the quiet hours end, the held page is superseded: the
        message still says Resolved, and the outbox is empty."""
        quiet = QuietHours(start="22:00", end="08:00", timezone="UTC", min_severity="critical")
        routes = {"default": Route(channel="#crisis", quiet_hours=quiet)}
        slack = notifier(fake, store, routes=routes)
        clock = [T0.replace(hour=23)]
        dispatcher = Dispatcher([slack], store, live=slack.live, clock=lambda: clock[0])
        opened, worse, resolved = (
            replace(page, at=page.at + timedelta(hours=11)) for page in life(make_page)
        )
        for page in (opened, worse, resolved):
            clock[0] = page.at
            await dispatcher.dispatch(page)
        assert await store.pending("slack") == 1
        clock[0] = T0.replace(day=2, hour=8, minute=1)
        await dispatcher.flush()
        [(shown, replies)] = fake.threads().values()
        assert "Resolved" in shown["blocks"][0]["text"]["text"] and len(replies) == 2
        assert len(fake.ok_calls("chat.update")) == 1  # the resolution's, none since
        assert [r["status"] for r in await store.outbox()] == ["superseded", "sent", "sent"]
        assert await store.pending("slack") == 0

    async def test_a_rate_limited_look_waits_rather_than_posting_twice(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A post whose answer was lost is looked for in the channel's history; when that look
        is rate limited past the client's retries, the page waits and looks again rather than
        posting what may be there already."""
        opened, _, _ = life(make_page)
        routes = {"default": Route(channel="C0CRISIS")}
        dispatcher = Dispatcher([notifier(fake, store, routes=routes, timeout=1)], store)
        fake.hold(lambda method, args: method == "chat.postMessage", take=True)
        await dispatcher.dispatch(opened)
        fake.release()
        fake.fail("conversations.history", status=429, retry_after=1, times=3)
        await dispatcher.flush()
        assert await store.pending("slack") == 1
        await dispatcher.flush()
        assert await store.pending("slack") == 0 and dispatcher.sent == 1
        assert len([m for m in fake.messages.values() if not m.get("thread_ts")]) == 1


@pytest.mark.usefixtures("full_disk")
class TestOnAFullDisk:
    """The state store cannot be written: pages still reach Slack, as they would otherwise."""

    async def test_an_incident_is_still_one_message_edited_with_its_thread(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        dispatcher = Dispatcher([notifier(fake, store)], store)
        with capture_logs() as logs:
            for page in life(make_page):
                await dispatcher.dispatch(page)
        ts = "1700000001.000100"
        assert [(c.method, c.args.get("thread_ts")) for c in fake.calls] == [
            ("chat.postMessage", None),
            ("chat.update", None),
            ("chat.postMessage", ts),
            ("chat.update", None),
            ("chat.postMessage", ts),
        ]
        assert dispatcher.sent == 3 and dispatcher.failed == 0
        assert await store.outbox() == []
        errors = {e["event"] for e in logs if e["log_level"] == "error"}
        assert {"page.unqueued", "slack.message_unrecorded"} <= errors

    async def test_a_thread_reply_tried_again_once_the_disk_has_room_is_not_posted_twice(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """Slack took the reply but its answer was lost; the retry, after the disk has room
        again, looks in the thread first (the mark of the first try was kept here)."""
        opened, worse, _ = life(make_page)
        dispatcher = Dispatcher([notifier(fake, store, timeout=1)], store)
        await dispatcher.dispatch(opened)
        fake.hold(lambda method, args: bool(args.get("thread_ts")), take=True)
        await dispatcher.dispatch(worse)
        fake.release()
        full_disk[0] = False
        await dispatcher.flush()
        [(_, replies)] = fake.threads().values()
        assert len(replies) == 1

    async def test_a_move_to_a_route_in_the_same_channel_posts_a_new_message(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The worse rule's route calls its own people in a new message, as with a store that
        works (a posting mark left here had made it edit the old message's pointer instead)."""
        routes = {
            "default": Route(channel="C0CRISIS"),
            "exec": Route(channel="C0CRISIS", mention={"critical": ["U0ONCALL"]}),
        }
        opened, worse, _ = moving_life(make_page)
        slack = notifier(fake, store, routes=routes)
        for page in (opened, worse):
            await slack.send(page)
        top, _ = channels_and_threads(fake)
        assert len(top) == 2

    async def test_what_was_remembered_reaches_the_store_once_it_has_room(
        self,
        fake: FakeSlack,
        store: Store,
        make_page: PageFactory,
        full_disk: list[bool],
        tmp_path: Path,
    ) -> None:
        """A restart after the disk had room again edits the message posted while it was full
        (it had posted a second one: the message lived only in the first process), and its
        escalation counts from when it was posted, not from when the store took it."""
        opened, worse, resolved = life(make_page)
        slack = notifier(fake, store)
        await slack.send(opened)
        posted_by = datetime.now(UTC)
        full_disk[0] = False
        await slack.send(worse)
        assert await store.message(opened.incident.id, "slack") is not None
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            [(at,)] = db.execute("SELECT posted_at FROM messages").fetchall()
        assert datetime.fromisoformat(at) <= posted_by
        await notifier(fake, store).send(resolved)  # a restart
        top, _ = channels_and_threads(fake)
        assert len(top) == 1

    async def test_an_acknowledgement_edits_the_message_posted_meanwhile(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        slack = notifier(fake, store)
        opened = make_page()
        await Dispatcher([slack], store).dispatch(opened)
        assert await slack.reply(opened.incident.id, "acknowledged by <@U1>")
        assert [(c.method, c.args.get("thread_ts")) for c in fake.calls] == [
            ("chat.postMessage", None),
            ("chat.postMessage", "1700000001.000100"),
        ]


class TestPostingMarks:
    """The marks of posts under way (the store's `posting` rows) last only until the post is
    recorded, so a service that pages for months does not keep one per thread reply."""

    async def test_a_mark_lasts_only_until_its_post_is_recorded(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, tmp_path: Path
    ) -> None:
        """While a thread reply's answer is lost its mark stays (the retry looks for the reply
        in the thread); once recorded, or given up, no mark is left."""
        opened, worse, resolved = life(make_page)
        dispatcher = Dispatcher([notifier(fake, store, timeout=1)], store)
        await dispatcher.dispatch(opened)
        assert posting_marks(tmp_path) == []
        fake.hold(lambda method, args: bool(args.get("thread_ts")), take=True)
        await dispatcher.dispatch(worse)
        assert posting_marks(tmp_path) == [page_key(worse)]
        fake.release()
        await dispatcher.flush()
        fake.fail("chat.postMessage", error="channel_not_found")
        await dispatcher.dispatch(resolved)
        assert dispatcher.sent == 2 and dispatcher.failed == 2
        assert posting_marks(tmp_path) == []

    async def test_marks_of_recorded_posts_are_pruned_when_the_store_opens(
        self, tmp_path: Path, make_page: PageFactory
    ) -> None:
        """Marks an earlier version left behind go at the next start, except those of posts
        still unrecorded, which crash recovery needs."""
        opened, worse, resolved = life(make_page)
        store = await Store.open(tmp_path / "state.db")
        await mark_sent(store, worse, "slack")
        for key in (opened.incident.id, page_key(worse), page_key(resolved)):
            await store.mark_posting(key, "slack")  # left behind, the post recorded or not
        await store.save_message(opened.incident.id, "slack", "C1", "1.1", "default")
        await store.close()
        await Store.open(tmp_path / "state.db")  # the sweep runs on open
        assert posting_marks(tmp_path) == [page_key(resolved)]


def posting_marks(folder: Path) -> list[str]:
    """The keys of the posting marks in the store file, read beside the open store."""
    with contextlib.closing(sqlite3.connect(folder / "state.db")) as db:
        return [row[0] for row in db.execute("SELECT incident_id FROM posting ORDER BY at")]


class Breaks:
    """A notifier our code fails on for one incident's pages (a bug its data sets off)."""

    name = "breaks"
    pages_people = False

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.sent: list[str] = []
        self.tries = 0

    async def send(self, page: Page) -> None:
        if page.incident.id == self.broken:
            self.tries += 1
            raise TypeError("'int' object is not subscriptable")
        self.sent.append(page.incident.id)


class TestPagesOurCodeFailsOn:
    async def test_are_given_up_after_a_few_tries_and_the_pages_behind_go(
        self, store: Store, make_page: PageFactory
    ) -> None:
        """A page whose rendering raises a programming error is no passing outage: after
        `BROKEN_TRIES` it is given up (logged with its traceback), where it had been retried
        for ever at the head of the outbox and every later page of every incident waited."""
        breaks, sleeps = Breaks("kestrel@1"), Sleeps()
        dispatcher = Dispatcher([breaks], store, sleep=sleeps, rng=lambda: 1.0)
        dispatcher.start()
        with capture_logs() as logs:
            await dispatcher.dispatch(make_page(id="kestrel@1"))
            await dispatcher.dispatch(make_page(id="acme@1", key="acme", brand="acme"))
            await dispatcher.close(deadline=5)
        assert breaks.tries == BROKEN_TRIES and breaks.sent == ["acme@1"]
        assert dispatcher.failed == 1
        assert [e["page"].split("|")[0] for e in logs if e["event"] == "page.given_up"] == [
            "kestrel@1"
        ]

    async def test_a_page_that_cannot_be_encoded_is_lost_not_the_daemon(
        self, store: Store, make_page: PageFactory
    ) -> None:
        """A page the outbox cannot encode (a number past 64 bits) is logged and counted as
        failed; dispatching it no longer raises into the pipeline's task, which had stopped
        the daemon."""
        page = make_page()
        bucket = replace(page.incident.latest.bucket, reach=2**70)
        latest = replace(page.incident.latest, bucket=bucket)
        broken = replace(page, incident=replace(page.incident, latest=latest))
        dispatcher = Dispatcher([Breaks("none")], store)
        with capture_logs() as logs:
            await dispatcher.dispatch(broken)
        assert dispatcher.failed == 1
        assert [e["event"] for e in logs if e["event"] == "page.unencodable"] == [
            "page.unencodable"
        ]


class TestDelivery:
    async def test_pages_queue_while_slack_is_down_and_leave_in_order(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """500s back off exponentially; when Slack returns every page goes, in order, once."""
        sleeps = Sleeps()
        fake.fail(status=500, times=1_000)
        sleeps.hook = lambda n: fake.faults.clear() if n == 5 else None
        pages = life(make_page)
        other = make_page(id="acme@1", key="acme", brand="acme")
        dispatcher = Dispatcher([notifier(fake, store)], store, sleep=sleeps, rng=lambda: 1.0)
        dispatcher.start()
        for page in [*pages, other]:
            await dispatcher.dispatch(page)
        await dispatcher.close(deadline=5)
        assert sleeps.waits == [1.0, 2.0, 4.0, 8.0, 16.0]
        sent = [c for c in fake.ok_calls() if c.method != "conversations.history"]
        assert [(c.method, c.args.get("thread_ts") is not None) for c in sent] == [
            ("chat.postMessage", False),
            ("chat.update", False),
            ("chat.postMessage", True),
            ("chat.update", False),
            ("chat.postMessage", True),
            ("chat.postMessage", False),
        ]
        assert "acme" in sent[-1].args["text"]
        assert dispatcher.sent == 4 and dispatcher.failed == 0
        assert {row["status"] for row in await store.outbox()} == {"sent"}

    async def test_rate_limit_waits_retry_after(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A 429 is retried by the client after its Retry-After (through the injected sleep)."""
        sleeps = Sleeps()
        fake.fail("chat.postMessage", status=429, retry_after=7)
        dispatcher = Dispatcher([notifier(fake, store, sleeps)], store)
        await dispatcher.dispatch(make_page())
        assert len(sleeps.waits) == 1 and 7 <= sleeps.waits[0] < 8
        assert [c.status for c in fake.calls] == [429, 200]
        assert dispatcher.sent == 1

    @pytest.mark.parametrize(
        ("header", "low", "high"),
        [
            pytest.param("http-date", 18.0, 20.0, id="an HTTP date 20 s ahead"),
            pytest.param("soon", 0.5, 1.0, id="garbage: the first back-off step"),
            pytest.param("0", 1.0, 1.0, id="zero: the first back-off step's ceiling"),
        ],
    )
    async def test_rate_limit_reads_retry_after_by_the_shared_rules(
        self,
        fake: FakeSlack,
        store: Store,
        make_page: PageFactory,
        header: str,
        low: float,
        high: float,
    ) -> None:
        """Slack's client reads Retry-After as the sources do: an HTTP date is a time to wait
        for, and a value that cannot be read means back-off, not a made-up second."""
        if header == "http-date":
            header = formatdate(time.time() + 20, usegmt=True)
        sleeps = Sleeps()
        fake.fail("chat.postMessage", status=429, retry_after=header)
        dispatcher = Dispatcher([notifier(fake, store, sleeps)], store)
        await dispatcher.dispatch(make_page())
        assert len(sleeps.waits) == 1 and low <= sleeps.waits[0] <= high
        assert dispatcher.sent == 1

    async def test_long_rate_limit_is_left_to_the_sender(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """When 429s outlast the client's retries, the sender waits at least Retry-After."""
        client_sleeps, sender_sleeps = Sleeps(), Sleeps()
        fake.fail("chat.postMessage", status=429, retry_after=30, times=3)
        dispatcher = Dispatcher(
            [notifier(fake, store, client_sleeps)], store, sleep=sender_sleeps, rng=lambda: 0.0
        )
        dispatcher.start()
        await dispatcher.dispatch(make_page())
        await dispatcher.close(deadline=5)
        assert sender_sleeps.waits == [30.0]
        assert dispatcher.sent == 1 and len(fake.ok_calls("chat.postMessage")) == 1
        # before retrying a first post, the channel is checked for it (it may have arrived)
        assert len(fake.ok_calls("conversations.history")) == 1

    async def test_a_timeout_is_retried(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A reply slower than the client's timeout is retried; the page goes once."""
        fake.fail("chat.postMessage", delay=1.5)
        sleeps = Sleeps()
        dispatcher = Dispatcher([notifier(fake, store, timeout=1)], store, sleep=sleeps)
        dispatcher.start()
        await dispatcher.dispatch(make_page())
        await dispatcher.close(deadline=5)
        assert len(sleeps.waits) == 1
        assert len(fake.ok_calls("chat.postMessage")) == 1 and dispatcher.sent == 1

    async def test_permanent_error_gives_up_and_tells_ops(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """channel_not_found is not retried: recorded as failed, ops told once, next page goes."""
        fake.missing_channels.add("#crisis")
        sleeps = Sleeps()
        dispatcher = Dispatcher([notifier(fake, store)], store, sleep=sleeps)
        dispatcher.start()
        await dispatcher.dispatch(make_page())
        await dispatcher.dispatch(make_page(id="other@1"))
        await dispatcher.close(deadline=5)
        assert sleeps.waits == []
        ops = [c for c in fake.ok_calls("chat.postMessage") if c.args["channel"] == "#ops"]
        assert len(ops) == 1 and "channel_not_found" in ops[0].args["text"]
        rows = await store.outbox()
        assert [r["status"] for r in rows] == ["failed", "failed"]
        assert rows[0]["error"] == "slack: channel_not_found (channel #crisis)"
        assert dispatcher.failed == 2

    async def test_a_refused_token_keeps_every_page_until_it_works(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A revoked token gives no page up: the pages wait, the first tried again after minutes,
        with one error line and no ops notice (it would need the same token); once the token
        works they go out in order."""
        sleeps = Sleeps()
        fake.token = "xoxb-revoked"
        sleeps.hook = lambda n: setattr(fake, "token", TOKEN) if n == 4 else None
        dispatcher = Dispatcher([notifier(fake, store)], store, sleep=sleeps, rng=lambda: 1.0)
        with capture_logs() as logs:
            dispatcher.start()
            for page in life(make_page):
                await dispatcher.dispatch(page)
            await dispatcher.close(deadline=5)
        assert sleeps.waits == [60.0, 120.0, 240.0, 480.0]
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["notifier.unauthorized"]
        assert {c.args.get("channel") for c in fake.calls} == {"#crisis", fake.channels["#crisis"]}
        sent = [
            (c.method, "thread_ts" in c.args)
            for c in fake.ok_calls("chat.postMessage", "chat.update")
        ]
        assert sent == [
            ("chat.postMessage", False),
            ("chat.update", False),
            ("chat.postMessage", True),
            ("chat.update", False),
            ("chat.postMessage", True),
        ]
        assert {row["status"] for row in await store.outbox()} == {"sent"}
        assert dispatcher.sent == 3 and dispatcher.failed == 0

    @pytest.mark.parametrize("error", sorted(UNAUTHORIZED))
    async def test_each_refusal_of_the_token_or_app_waits(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, error: str
    ) -> None:
        """Every error about the token or the app keeps the page queued, waiting minutes."""
        sleeps = Sleeps()
        fake.fail("chat.postMessage", error=error, times=2)
        dispatcher = Dispatcher([notifier(fake, store)], store, sleep=sleeps, rng=lambda: 1.0)
        dispatcher.start()
        await dispatcher.dispatch(make_page())
        await dispatcher.close(deadline=5)
        assert sleeps.waits == [60.0, 120.0]
        assert dispatcher.sent == 1 and len(fake.ok_calls("chat.postMessage")) == 1


class TestUntrustedText:
    async def test_hostile_posts_cannot_ping_or_mask_links(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """No broadcast, user or group ping, nor masked link leaves a post; limits hold."""
        samples = tuple(
            sample(text, n, author=text[:80], url=f"https://evil.example/{n}|click>")
            for n, text in enumerate(HOSTILE)
        )
        page = make_page(
            samples=samples,
            summary="<!everyone> " + "y" * 5_000,
            reasons=tuple(HOSTILE),
            sources=("x", "<!here>"),
        )
        page = replace(
            page,
            incident=replace(
                page.incident,
                latest=replace(
                    page.incident.latest,
                    bucket=replace(page.incident.latest.bucket, top_terms=(("<!channel>", 3),)),
                ),
            ),
        )
        await Dispatcher([notifier(fake, store)], store).dispatch(page)
        post = fake.calls[0].args
        config_pings = re.compile(r"<@U0CRISIS>|<!subteam\^S0COMMS>")
        unsafe = re.compile(r"<[!@#]|<https?:|@(here|channel|everyone)")
        for text in [*_texts(post["blocks"]), post["text"]]:
            assert len(text) <= 3000
            assert not unsafe.search(config_pings.sub("", text)), text
        # the only pings are the config's
        assert post["text"].startswith("<@U0CRISIS> <!subteam^S0COMMS> ")
        assert len(post["blocks"]) <= 50
        assert len(post["blocks"][0]["text"]["text"]) <= 150
        assert "&lt;!channel&gt;" in orjson.dumps(post["blocks"]).decode()

    @pytest.mark.parametrize(
        ("url", "link"),
        [
            ("https://evil.example/@here", "<https://evil.example/@here|open on evil.example>"),
            ("https://x.com@evil.example/a", "|open on evil.example>"),
            ("https://WWW.Reddit.com:443/r/x?a=1&b=2", "&amp;b=2|open on www.reddit.com>"),
            ("https://exa_mple.com/p", None),  # no host it can name plainly: no link
            ("https://evil.example\\@x.com/status/1", None),  # a browser goes to evil.example
            ("javascript:alert(1)", None),
        ],
    )
    def test_a_post_link_names_the_site_it_goes_to(
        self, make_page: PageFactory, url: str, link: str | None
    ) -> None:
        """A mention's url is untrusted (ingest and replay lines carry their own): its link says
        where it goes rather than a bare "open post" that could hide any site."""
        page = make_page(samples=(sample("acme", 0, url=url),))
        text = orjson.dumps(page_blocks(page, "Kestrel Bank", None)).decode()
        if link is None:
            assert "open on" not in text and url not in text
        else:
            assert link in text

    @pytest.mark.parametrize(
        "change",
        [
            "resolved by <@U0123ABCD>",
            "resolved by U0123ABCD <!channel>",
            "resolved by here",
            "now also on resolved by U0123ABCD",
        ],
    )
    def test_who_resolved_is_a_mention_and_nothing_else_is(
        self, make_page: PageFactory, change: str
    ) -> None:
        """The Slack user id of who clicked Resolve is shown as that person, on the message and
        in the thread; a change that merely looks like it stays inert text."""
        at = T0 + timedelta(minutes=30)
        page = make_page(PageKind.RESOLVED, at, ("resolved by U0123ABCD",))
        assert page_blocks(page, "Kestrel", None)[2]["text"]["text"].endswith(
            "resolved by <@U0123ABCD>"
        )
        assert thread_reply(page, None) == "✅ *Resolved*: resolved by <@U0123ABCD>"
        inert = thread_reply(make_page(PageKind.RESOLVED, at, (change,)), None)
        assert "<@" not in inert and "<!" not in inert

    def test_the_incident_s_totals_are_on_its_pages(self, make_page: PageFactory) -> None:
        """A page has the brand's mentions so far beside the latest bucket's numbers; the
        resolution says them in all."""
        started = make_page().incident.started_at - timedelta(minutes=20)
        totals = Totals(started, 1240, 756)
        blocks = page_blocks(make_page(totals=totals, started_at=started), "Kestrel", None)
        fields = [f["text"] for b in blocks for f in b.get("fields", ())]
        assert fields[-1] == "*So far*\n1,240 mentions of the brand, 61% negative"
        at = T0 + timedelta(hours=2)
        resolved = make_page(PageKind.RESOLVED, at, totals=totals, started_at=started)
        assert (
            "per bucket; in all 1,240 mentions of the brand, 61% negative."
            in (page_blocks(resolved, "Kestrel", None)[2]["text"]["text"])
        )
        unknown = page_blocks(make_page(), "Kestrel", None)
        assert not any("So far" in f["text"] for b in unknown for f in b.get("fields", ()))

    def test_a_stage_escalation_after_an_acknowledgement_calls_who_is_on_it(
        self, make_page: PageFactory
    ) -> None:
        """Alice acknowledged; the incident then grows from flame to fire: the thread calls
        her, not the whole on-call again. A more severe one (other people may be wanted) and
        any escalation nobody acknowledged still call the route's people."""
        route, alice = ROUTES["default"], ("U0ALICE", T0)
        stage = make_page(PageKind.ESCALATED, changes=("stage flame → fire",))
        severer = make_page(PageKind.ESCALATED, changes=("severity warning → critical",))
        assert thread_reply(stage, route, alice).endswith("\ncc <@U0ALICE>")
        assert "<@U0CRISIS>" not in thread_reply(stage, route, alice)
        assert thread_reply(severer, route, alice).endswith("\n<@U0CRISIS> <!subteam^S0COMMS>")
        assert thread_reply(stage, route).endswith("\n<@U0CRISIS> <!subteam^S0COMMS>")
        unknown = ("unknown", T0)  # a click without a user: nobody to cc, so the people
        assert thread_reply(stage, route, unknown).endswith("\n<@U0CRISIS> <!subteam^S0COMMS>")

    def test_times_are_also_in_the_zone_of_the_route_s_people(self, make_page: PageFactory) -> None:
        """A route whose quiet hours are in Europe/London shows its times in UTC and in
        British Summer Time when that differs; a route in UTC, or with no quiet hours, UTC
        alone."""
        london = Route.model_validate(
            {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/London"}}
        )
        summer = make_page(started_at=datetime(2024, 7, 1, 1, 55, tzinfo=UTC))
        text = page_blocks(summer, "Kestrel", london)[1]["text"]["text"]
        assert "since Mon 01 Jul 01:55 UTC (02:55 BST)" in text
        tokyo = Route.model_validate(
            {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Tokyo"}}
        )
        late = make_page(started_at=datetime(2024, 7, 1, 20, 0, tzinfo=UTC))
        assert (
            "since Mon 01 Jul 20:00 UTC (Tue 05:00 JST)"
            in page_blocks(late, "K", tokyo)[1]["text"]["text"]
        )  # another day there: said
        winter = page_blocks(make_page(), "Kestrel", london)[1]["text"]["text"]
        assert "since Fri 01 Mar 11:55 UTC (for" in winter  # GMT is UTC's time: said once
        assert (
            "since Mon 01 Jul 01:55 UTC (for"
            in page_blocks(summer, "Kestrel", None)[1]["text"]["text"]
        )

    def test_estimated_reach_and_authors_are_marked(self, make_page: PageFactory) -> None:
        """Past the sample of authors, reach and unique authors are estimates: shown with ≈."""
        page = make_page()
        exact = orjson.dumps(page_blocks(page, "Kestrel", None)[2]).decode()
        assert "125,000 followers · 38 authors" in exact
        bucket = replace(page.incident.latest.bucket, exact_reach=False)
        latest = replace(page.incident.latest, bucket=bucket)
        estimated = replace(page, incident=replace(page.incident, latest=latest))
        text = orjson.dumps(page_blocks(estimated, "Kestrel", None)[2]).decode()
        assert "≈125,000 followers · ≈38 authors" in text

    def test_a_bucket_from_an_older_checkpoint_restores_as_exact(
        self, make_page: PageFactory
    ) -> None:
        bucket = make_page().incident.latest.bucket
        older = type(bucket).__new__(type(bucket))
        older.__setstate__(bucket.__getstate__()[:-1])
        assert older.exact_reach is True and older.count == bucket.count

    def test_a_count_that_fell_is_not_called_rising(self, make_page: PageFactory) -> None:
        page = make_page()
        fell = replace(page.incident.latest, previous_count=51)
        page = replace(page, incident=replace(page.incident, latest=fell))
        fields = orjson.dumps(page_blocks(page, "Kestrel", None)[2]).decode()
        assert "*Falling*\\n51 → 40 in the last 5m (-22%)" in fields

    def test_a_page_held_by_quiet_hours_says_so(self, make_page: PageFactory) -> None:
        """Decided at 02:20, sent at 07:00: the page says it was held and since when it was
        decided, so it does not read as fresh news."""
        page = make_page(PageKind.OPENED, datetime(2024, 3, 2, 2, 20, tzinfo=UTC))
        held = replace(page, held_until=datetime(2024, 3, 2, 7, 0, tzinfo=UTC))
        text = page_blocks(held, "Kestrel", None)[1]["text"]["text"]
        assert "⏸ Held by the route's quiet hours: decided Sat 02 Mar 02:20 UTC" in text
        assert "(Sat 02 Mar 07:00 UTC)" in text
        assert "Held" not in page_blocks(page, "Kestrel", None)[1]["text"]["text"]

    def test_escape_and_fit(self) -> None:
        """Escaping neutralises Slack's control sequences; cutting never splits an entity."""
        assert escape("<!here> & @channel") == "&lt;!here&gt; &amp; @\u200bchannel"
        assert fit("a &amp; b", 5) == "a …"
        assert fit("short", 10) == "short"

    @pytest.mark.parametrize(
        ("value", "mention"),
        [
            ("U0123ABC", "<@U0123ABC>"),
            ("@W0123ABC", "<@W0123ABC>"),
            ("S0123ABC", "<!subteam^S0123ABC>"),
            ("here", "<!here>"),
            ("alice", "alice"),
            ("<!channel>", "&lt;!channel&gt;"),
        ],
    )
    def test_pings_only_from_ids(self, value: str, mention: str) -> None:
        """Config entries become pings only when they are ids; anything else is inert text."""
        assert ping(value) == mention


class TestChart:
    async def test_chart_goes_into_the_thread(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """With history, the opening page uploads a PNG into its thread (files_upload_v2)."""
        page = make_page()
        history = SeriesHistory(300)
        signal = page.incident.latest
        for n in range(24 * 12):
            start = T0 - timedelta(days=1) + timedelta(minutes=5 * n)
            bucket = replace(signal.bucket, start=start, end=start + timedelta(minutes=5))
            history.record(replace(signal, bucket=bucket))
        await Dispatcher([notifier(fake, store, history=history)], store).dispatch(page)
        methods = [c.method for c in fake.calls]
        assert methods == [
            "chat.postMessage",
            "files.getUploadURLExternal",
            "upload",
            "files.completeUploadExternal",
        ]
        assert fake.calls[2].args["bytes"].startswith(b"\x89PNG")
        assert fake.calls[3].args["thread_ts"] == "1700000001.000100"

    def test_no_matplotlib_no_chart(
        self, monkeypatch: pytest.MonkeyPatch, make_page: PageFactory
    ) -> None:
        """Without matplotlib the chart is skipped, not an error."""
        monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
        window = SeriesHistory(300).window(make_page().incident.latest.series, T0, chart.SPAN)
        assert chart.render_png(window, window, T0, "t") is None


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                found.append(node["text"])
            for key, value in node.items():
                if key != "value":
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return found


class TestSeriesHistory:
    def test_ring_keeps_the_last_days_and_marks_gaps(self, make_page: PageFactory) -> None:
        """Old buckets fall out of the ring; buckets never seen read as unknown (NaN)."""
        signal = make_page().incident.latest
        history = SeriesHistory(3600, days=1)
        for hour in (0, 1, 5, 30):
            start = T0 + timedelta(hours=hour)
            bucket = replace(signal.bucket, start=start, count=hour)
            history.record(replace(signal, bucket=bucket))
        recent = history.window(signal.series, T0 + timedelta(hours=31), timedelta(hours=3))
        assert [str(c) for c in recent.count] == ["nan", "nan", "30.0"]
        old = history.window(signal.series, T0 + timedelta(hours=2), timedelta(hours=2))
        assert old.known == 0  # hours 0 and 1 were overwritten by the ring
