"""Clicks on a page: the signed HTTP endpoint, feedback to the model and rules, escalation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
import pytest
from fake_slack import TOKEN, FakeSlack
from local_server import running
from slack_sdk.signature import SignatureVerifier
from structlog.testing import capture_logs

from crisiswatch.config import LiveSettings, Notify, Route, Settings, Slack
from crisiswatch.domain import Mention, Page, PageKind, ScoredMention, Severity, Stage
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.notify.dispatch import Dispatcher
from crisiswatch.notify.feedback import SNOOZE_FAILED, Click, Escalator, Feedback, clicks_of
from crisiswatch.notify.slack import SlackNotifier
from crisiswatch.notify.slack_interactive import actions_app, serve_http
from crisiswatch.store import Store

PageFactory = Callable[..., Page]
SECRET = "signing-secret"
ANGRY = "the kestrel atm swallowed my card, worst night ever"
T1 = datetime(2024, 3, 1, 12, 10, tzinfo=UTC)
ROUTES = {
    "default": Route(
        channel="#crisis", escalate_after=timedelta(minutes=10), escalate_to=["S0ONCALL"]
    )
}


fake = running(FakeSlack)


async def posted(fake: FakeSlack, store: Store, page: Page) -> SlackNotifier:
    """A Slack notifier that has posted `page`."""
    slack_settings = Slack(enabled=True, base_url=fake.base_url)
    live = LiveSettings(Settings(brands=[], routes=ROUTES, notify=Notify(slack=slack_settings)))
    slack = SlackNotifier(live, store, token=TOKEN)
    await Dispatcher([slack], store).dispatch(page)
    return slack


def angry_page(make_page: PageFactory) -> Page:
    mention = Mention("x:9", "x", datetime(2024, 3, 1, tzinfo=UTC), ANGRY, author="rhys")
    return make_page(samples=(ScoredMention(mention, "kestrel", (), 0.92),), rules=("a", "b"))


def block_actions(
    action_id: str, value: str, user: str = "U0ALICE", pressed: str | None = None
) -> dict[str, Any]:
    """A click's payload; `pressed` is Slack's action_ts (the same in a redelivery)."""
    action = {"action_id": action_id, "value": value}
    if pressed is not None:
        action["action_ts"] = pressed
    return {"type": "block_actions", "user": {"id": user}, "actions": [action]}


class Learned:
    """A sentiment model that remembers what it was taught."""

    def __init__(self) -> None:
        self.taught: list[tuple[str, str]] = []

    def learn_one(self, text: str, label: str) -> None:
        self.taught.append((text, label))


class TestClicks:
    def test_payload_to_clicks(self) -> None:
        """Buttons become clicks; unknown actions and other payload types are ignored."""
        at = datetime(2024, 3, 1, tzinfo=UTC)
        value = orjson.dumps({"incident": "i@1", "mention": "x:9"}).decode()
        assert clicks_of(block_actions("not_negative:2", value), at) == [
            Click("not_negative", "i@1", "U0ALICE", at, "x:9")
        ]
        assert clicks_of(block_actions("complaint:0", value), at) == [
            Click("complaint", "i@1", "U0ALICE", at, "x:9")
        ]
        assert clicks_of(block_actions("acknowledge", "i@1"), at) == [
            Click("acknowledge", "i@1", "U0ALICE", at)
        ]
        assert clicks_of(block_actions("other", "i@1"), at) == []
        assert clicks_of(block_actions("not_negative:0", "not json"), at) == []
        assert clicks_of({"type": "view_submission"}, at) == []
        [pressed] = clicks_of(block_actions("acknowledge", "i@1", pressed="1.5"), at)
        assert pressed.key == "acknowledge|U0ALICE|1.5"

    async def test_a_press_counts_once_and_a_post_is_learned_once(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A press Slack delivers three times is recorded and applied once; pressing Not
        negative again on the same post (another press) is recorded but not learned again."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        learned = Learned()
        feedback = Feedback(store, learned, slack)
        value = orjson.dumps({"incident": page.incident.id, "mention": "x:9"}).decode()
        for _ in range(3):
            await feedback.payload(block_actions("not_negative:0", value, pressed="1.1"))
        await feedback.payload(block_actions("not_negative:0", value, "U0BOB", pressed="2.2"))
        assert learned.taught == [(ANGRY, "neutral")]
        assert [(c[1], c[2]) for c in await store.clicks(page.incident.id)] == [
            ("not_negative", "U0ALICE"),
            ("not_negative", "U0BOB"),
        ]
        assert len([c for c in fake.calls if c.args.get("thread_ts")]) == 1  # one note

    async def test_acknowledge_puts_who_is_on_it_on_the_message_and_it_stays(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Acknowledge edits the incident's message at once: it names who took it (the button
        goes) rather than leaving that to a note in the thread; the next page's edit and the
        resolution still say so. A second press changes nothing."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        feedback = Feedback(store, None, slack)
        await feedback.payload(block_actions("acknowledge", page.incident.id, pressed="1.1"))
        await feedback.payload(block_actions("acknowledge", page.incident.id, "U0BOB", "2.2"))
        edits = [c.args["blocks"] for c in fake.calls if c.method == "chat.update"]
        assert len(edits) == 1

        def said(blocks: list[dict[str, Any]]) -> tuple[bool, list[str]]:
            text = orjson.dumps(blocks).decode()
            buttons = [e["action_id"] for b in blocks if b["type"] == "actions"
                       for e in b["elements"]]  # fmt: skip
            return "Acknowledged by <@U0ALICE>" in text, buttons

        assert said(edits[0]) == (True, ["snooze_1h", "resolve", "false_alarm"])
        later = replace(page, kind=PageKind.UPDATED, at=page.at + timedelta(minutes=5),
                        changes=("now also on reddit",))  # fmt: skip
        resolved = replace(page, kind=PageKind.RESOLVED, at=page.at + timedelta(hours=1))
        for next_page in (later, resolved):
            await Dispatcher([slack], store).dispatch(next_page)
        edits = [c.args["blocks"] for c in fake.calls if c.method == "chat.update"]
        assert said(edits[1]) == (True, ["snooze_1h", "resolve", "false_alarm"])
        assert said(edits[2]) == (True, ["false_alarm"])

    @pytest.mark.parametrize("moment", ["posting", "recording"])
    async def test_acknowledge_during_a_page_shows_that_page_acknowledged(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, moment: str
    ) -> None:
        """Acknowledge pressed while a newer page is being posted (its edit under way, or
        taken by Slack but not yet recorded as sent): the message ends showing the newer page
        and who acknowledged it, where the page's edit had dropped the acknowledgement, or the
        acknowledgement's edit had put back the page before."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        gate, reached = asyncio.Event(), asyncio.Event()

        def held(real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def slow(*args: Any, **kwargs: Any) -> Any:
                reached.set()
                await gate.wait()
                return await real(*args, **kwargs)

            return slow

        if moment == "posting":
            slack.client.chat_update = held(slack.client.chat_update)  # type: ignore[method-assign]
        else:
            store.outbox_sent = held(store.outbox_sent)  # type: ignore[method-assign]
        newer = replace(page, kind=PageKind.ESCALATED, at=page.at + timedelta(minutes=5),
                        incident=replace(page.incident, summary="worse now"))  # fmt: skip
        sending = asyncio.create_task(Dispatcher([slack], store).dispatch(newer))
        await reached.wait()
        click = block_actions("acknowledge", page.incident.id, pressed="1.1")
        clicked = asyncio.create_task(Feedback(store, None, slack).payload(click))
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(sending, clicked)
        [message] = [m for m in fake.messages.values() if not m.get("thread_ts")]
        shown = orjson.dumps(message["blocks"]).decode()
        assert "worse now" in shown and "Acknowledged by <@U0ALICE>" in shown

    async def test_an_acknowledge_edit_waiting_on_slack_holds_up_no_other_incident(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Its edit waiting (Slack's rate limit, say) holds up that incident's message only:
        another incident's page is posted meanwhile."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        gate, reached = asyncio.Event(), asyncio.Event()
        real = slack.client.chat_update

        async def slow(*args: Any, **kwargs: Any) -> Any:
            reached.set()
            await gate.wait()
            return await real(*args, **kwargs)

        slack.client.chat_update = slow  # type: ignore[method-assign]
        click = block_actions("acknowledge", page.incident.id)
        clicked = asyncio.create_task(Feedback(store, None, slack).payload(click))
        await reached.wait()
        other = make_page(id="acme@1", key="acme", brand="acme")
        async with asyncio.timeout(5):
            await Dispatcher([slack], store).dispatch(other)
        posts = [
            c for c in fake.calls if c.method == "chat.postMessage" and "thread_ts" not in c.args
        ]
        assert len(posts) == 2 and "acme" in posts[-1].args["text"]
        gate.set()
        await clicked

    @pytest.mark.parametrize(("opened_as", "calls"), [("critical", "cc"), ("warning", "people")])
    async def test_after_an_acknowledgement_a_stage_escalation_cc_s_only_once_people_were_called(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, opened_as: str, calls: str
    ) -> None:
        """Acknowledged, then the stage grows: the acknowledger is cc'd when the message already
        showed this severity (its people were called); when the rise to it never reached Slack
        (a silenced page), its people are called now."""
        route = Route(channel="#crisis", mention={"critical": ["S0LEAD"]})
        notify = Notify(slack=Slack(enabled=True, base_url=fake.base_url))
        live = LiveSettings(Settings(brands=[], routes={"default": route}, notify=notify))
        slack = SlackNotifier(live, store, token=TOKEN)
        severity = Severity.CRITICAL if opened_as == "critical" else Severity.WARNING
        opened = make_page(severity=severity)
        await Dispatcher([slack], store).dispatch(opened)
        await store.record_click(opened.incident.id, "acknowledge", "U0ALICE", T1, None)
        stage = make_page(PageKind.ESCALATED, T1, ("stage flame → fire",), stage=Stage.FIRE)
        await Dispatcher([slack], store).dispatch(stage)
        [reply] = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        expected = "cc <@U0ALICE>" if calls == "cc" else "<!subteam^S0LEAD>"
        assert reply.endswith("\n" + expected)

    async def test_an_acknowledge_whose_edit_fails_still_notes_it_in_the_thread(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The thread's note is posted whatever the message's edit does."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        fake.fail(method="chat.update", error="cant_update_message", times=5)
        await Feedback(store, None, slack).payload(block_actions("acknowledge", page.incident.id))
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes == ["✔️ Acknowledged by <@U0ALICE>"]

    async def test_not_negative_teaches_the_model(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A Not negative click lowers the model's P(negative) for that post's text."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        model = SentimentModel.load_default()
        before = model.negative_one(ANGRY)
        value = orjson.dumps({"incident": page.incident.id, "mention": "x:9"}).decode()
        await Feedback(store, model, slack).payload(block_actions("not_negative:0", value))
        assert model.negative_one(ANGRY) < before
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes == [
            "🙂 <@U0ALICE> says a post is not negative; the sentiment model learns from it"
        ]

    async def test_complaint_teaches_the_model(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A Complaint click on a post the model did not call negative raises its P(negative)
        for that text, once per post, and says so in the thread."""
        text = "is the kestrel app down for anyone else? cant log in"
        mention = Mention("x:7", "x", datetime(2024, 3, 1, tzinfo=UTC), text, author="ola")
        page = make_page(samples=(ScoredMention(mention, "kestrel", (), 0.3),))
        slack = await posted(fake, store, page)
        model = SentimentModel.load_default()
        before = model.negative_one(text)
        value = orjson.dumps({"incident": page.incident.id, "mention": "x:7"}).decode()
        feedback = Feedback(store, model, slack)
        await feedback.payload(block_actions("complaint:0", value, pressed="1.1"))
        after = model.negative_one(text)
        assert after > before
        await feedback.payload(block_actions("complaint:0", value, "U0BOB", pressed="2.2"))
        assert model.negative_one(text) == after  # learned once per post of an incident
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes == [
            "😠 <@U0ALICE> says a post is a complaint; the sentiment model learns from it"
        ]

    async def test_false_alarm_counts_against_each_rule(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A false alarm is recorded with who and when, and counted per rule."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        await Dispatcher([slack], store).dispatch(make_page(id="other@1", rules=("a",)))
        await Feedback(store, None, slack).payload(block_actions("false_alarm", page.incident.id))
        assert await store.rule_feedback() == {"a": (2, 1), "b": (1, 1)}
        [(_, action, user, _)] = await store.clicks(page.incident.id)
        assert (action, user) == ("false_alarm", "U0ALICE")

    async def test_every_false_alarm_press_reaches_the_daemon_and_is_said_once(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Every press is recorded and goes to the daemon, which learns each of the incident's
        buckets once (a press after a newer bucket teaches that one: `SignalDetector.accept`);
        the thread is told once."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        told: list[str] = []

        class Control:
            async def resolve(self, incident_id: str, by: str) -> None:
                raise AssertionError("not pressed")

            async def false_alarm(self, incident_id: str, by: str) -> None:
                told.append(by)

        feedback = Feedback(store, None, slack)
        feedback.control = Control()
        for n, user in enumerate(["U0ALICE", "U0BOB", "U0ALICE"]):
            await feedback.payload(block_actions("false_alarm", page.incident.id, user, f"{n}.1"))
        assert told == ["U0ALICE", "U0BOB", "U0ALICE"]
        assert len(await store.clicks(page.incident.id)) == 3
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert len([note for note in notes if "false alarm" in note]) == 1, notes


@pytest.mark.usefixtures("full_disk")
class TestClicksOnAFullDisk:
    async def test_are_applied_and_said_in_the_thread(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A store that cannot record a press (it had raised, and the press was lost with
        nothing said in Slack): Acknowledge is said in the thread, Resolve reaches the daemon."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        resolved: list[str] = []

        class Control:
            async def resolve(self, incident_id: str, by: str) -> None:
                resolved.append(by)

            async def false_alarm(self, incident_id: str, by: str) -> None:
                raise AssertionError("not pressed")

        feedback = Feedback(store, None, slack)
        feedback.control = Control()
        with capture_logs() as logs:
            await feedback.payload(block_actions("acknowledge", page.incident.id))
            await feedback.payload(block_actions("resolve", page.incident.id, "U0BOB"))
        assert resolved == ["U0BOB"]
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes[0] == "✔️ Acknowledged by <@U0ALICE>" and len(notes) == 2
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "feedback.unrecorded",
            "feedback.unrecorded",
        ]

    async def test_an_acknowledgement_shows_and_stops_escalation(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """Until a restart: the message says who is on it, and no escalation calls anyone."""
        page = make_page()
        full_disk[0] = False  # the disk filled after the page
        slack = await posted(fake, store, page)
        full_disk[0] = True
        await Feedback(store, None, slack).payload(block_actions("acknowledge", page.incident.id))
        edit = fake.ok_calls("chat.update")[-1].args
        assert "Acknowledged by <@U0ALICE>" in orjson.dumps(edit["blocks"]).decode()
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        assert await escalator.check() == 0

    async def test_a_snooze_that_cannot_be_kept_is_said_to_have_failed(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A snooze is a silence in the store: where it cannot be kept, the person who pressed
        it is told in the thread (it had raised, with nothing said)."""
        page = make_page()
        slack = await posted(fake, store, page)
        with capture_logs() as logs:
            await Feedback(store, None, slack).payload(block_actions("snooze_1h", page.incident.id))
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes == [f"⚠️ Could not snooze for <@U0ALICE>: {SNOOZE_FAILED}"]
        assert "feedback.snooze_failed" in {e["event"] for e in logs}

    async def test_an_acknowledgement_is_recorded_once_the_store_has_room(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """At the next escalation check: so a restart still knows who is on it."""
        page = make_page()
        slack = await posted(fake, store, page)
        await Feedback(store, None, slack).payload(block_actions("acknowledge", page.incident.id))
        assert await store.acknowledged(page.incident.id) is None
        full_disk[0] = False
        await Escalator(store, slack, slack.live).check()
        recorded = await store.acknowledged(page.incident.id)
        assert recorded is not None and recorded[0] == "U0ALICE"

    async def test_an_escalation_is_made_once(
        self, fake: FakeSlack, store: Store, make_page: PageFactory, full_disk: list[bool]
    ) -> None:
        """The store cannot record that it was made: it is remembered here, not made at every
        check (the check had failed after each, and the next one escalated again)."""
        full_disk[0] = False  # the disk filled after the page
        slack = await posted(fake, store, make_page())
        full_disk[0] = True
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        assert [await escalator.check() for _ in range(3)] == [1, 0, 0]


class TestEscalation:
    async def test_unacknowledged_incident_is_repaged_once(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """After escalate_after with no acknowledgement, one re-page in the thread."""
        slack = await posted(fake, store, make_page())
        now = [time.time() + 5 * 60]
        escalator = Escalator(store, slack, slack.live, clock=lambda: now[0])
        assert await escalator.check() == 0
        now[0] += 6 * 60
        assert await escalator.check() == 1
        assert await escalator.check() == 0
        reply = fake.calls[-1].args
        assert reply["thread_ts"] == "1700000001.000100"
        assert "<!subteam^S0ONCALL>" in reply["text"]

    async def test_acknowledged_incident_is_not_escalated(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Acknowledge stops escalation."""
        page = make_page()
        slack = await posted(fake, store, page)
        await Feedback(store, None, slack).payload(block_actions("acknowledge", page.incident.id))
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        assert await escalator.check() == 0

    async def test_snooze_delays_escalation_by_an_hour(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Snooze 1 h: no escalation until an hour after the click."""
        page = make_page()
        slack = await posted(fake, store, page)
        await Feedback(store, None, slack).payload(block_actions("snooze_1h", page.incident.id))
        start = time.time()
        assert await Escalator(store, slack, slack.live, clock=lambda: start + 1800).check() == 0
        assert await Escalator(store, slack, slack.live, clock=lambda: start + 3700).check() == 1

    async def test_an_incident_that_cannot_be_escalated_holds_up_no_other(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The first incident's channel is gone: it is given up (ops told, not tried at every
        check), and the next incident is escalated all the same."""
        slack = await two_routes(fake, store, make_page)
        fake.missing_channels.add("C0GONE")
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        assert [await escalator.check() for _ in range(3)] == [1, 0, 0]
        replies = [c for c in fake.calls if c.args.get("thread_ts")]
        assert [(c.args["channel"], c.error) for c in replies] == [
            ("C0GONE", "channel_not_found"),
            ("C0CRISIS", None),
        ]
        ops = [c.args["text"] for c in fake.ok_calls() if c.args.get("channel") == "#ops"]
        assert len(ops) == 1 and "channel_not_found" in ops[0]
        assert [c[1] for c in await store.clicks("a@1")] == ["escalation_failed"]
        assert [c[1] for c in await store.clicks("b@1")] == ["escalated"]

    async def test_a_deleted_message_is_not_escalated_at_every_check(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Slack says the first incident's message is gone: its escalation is given up."""
        slack = await two_routes(fake, store, make_page)
        fake.fail("chat.postMessage", error="message_not_found")
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        assert [await escalator.check() for _ in range(2)] == [1, 0]
        assert [c[1] for c in await store.clicks("a@1")] == ["escalation_failed"]

    async def test_a_passing_failure_is_logged_once_and_tried_again(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """Slack fails one incident's re-page twice: the others go, the failure is logged
        once, and the next check that succeeds escalates it."""
        slack = await two_routes(fake, store, make_page)
        escalator = Escalator(store, slack, slack.live, clock=lambda: time.time() + 3600)
        with capture_logs() as logs:
            fake.fail("chat.postMessage", status=500)
            assert await escalator.check() == 1  # b
            fake.fail("chat.postMessage", status=500)
            assert await escalator.check() == 0
            assert await escalator.check() == 1  # a
        assert [e["incident"] for e in logs if e["event"] == "escalation.failed"] == ["a@1"]
        assert [c[1] for c in await store.clicks("a@1")] == ["escalated"]

    async def test_a_refused_token_stops_the_checks_which_then_wait_longer(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """With a revoked token no incident can be escalated: each check stops at the first,
        the error is logged once, and the waits between checks grow."""
        slack = await two_routes(fake, store, make_page)
        fake.token = "xoxb-revoked"
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 4:
                raise Stop

        escalator = Escalator(
            store, slack, slack.live, clock=lambda: time.time() + 3600, sleep=sleep, rng=lambda: 1.0
        )
        with capture_logs() as logs, pytest.raises(Stop):
            await escalator.run()
        assert waits == [30.0, 60.0, 120.0, 240.0]
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "escalation.check_failed"
        ]
        assert [c.args["channel"] for c in fake.calls[-4:]] == ["C0GONE"] * 4


class Stop(Exception):
    """Ends a loop under test."""


async def two_routes(fake: FakeSlack, store: Store, make_page: PageFactory) -> SlackNotifier:
    """A notifier that has posted incident a@1 (route to C0GONE), then b@1 (to C0CRISIS)."""
    escalate = {"escalate_after": timedelta(minutes=10), "escalate_to": ["S0ONCALL"]}
    routes = {"a": Route(channel="C0GONE", **escalate), "b": Route(channel="C0CRISIS", **escalate)}
    slack_settings = Slack(enabled=True, base_url=fake.base_url, ops_channel="#ops")
    live = LiveSettings(Settings(brands=[], routes=routes, notify=Notify(slack=slack_settings)))
    slack = SlackNotifier(live, store, token=TOKEN)
    dispatcher = Dispatcher([slack], store)
    await dispatcher.dispatch(make_page(id="a@1", key="a", route="a"))
    await asyncio.sleep(0.01)  # b's message is the newer
    await dispatcher.dispatch(make_page(id="b@1", key="b", route="b"))
    return slack


class TestHttpEndpoint:
    async def test_only_signed_requests_count(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """A correctly signed click is recorded; a badly signed one gets 401 and is ignored."""
        page = make_page()
        slack = await posted(fake, store, page)
        app = actions_app(Feedback(store, None, slack), SECRET)
        payload = orjson.dumps(block_actions("acknowledge", page.incident.id)).decode()
        body = urlencode({"payload": payload})
        stamp = str(int(time.time()))
        good = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
        bad = SignatureVerifier("wrong").generate_signature(timestamp=stamp, body=body)
        async with serve_http(app, "127.0.0.1:0") as url, aiohttp.ClientSession() as session:
            statuses = []
            for signature in (bad, good):
                headers = {
                    "X-Slack-Request-Timestamp": stamp,
                    "X-Slack-Signature": signature or "",
                    "Content-Type": "application/x-www-form-urlencoded",
                }
                async with session.post(url, data=body, headers=headers) as response:
                    statuses.append(response.status)
            for _ in range(200):
                if await store.clicks(page.incident.id):
                    break
                await asyncio.sleep(0.01)
        assert statuses == [401, 200]
        [(_, action, user, _)] = await store.clicks(page.incident.id)
        assert (action, user) == ("acknowledge", "U0ALICE")
        notes = [c.args["text"] for c in fake.calls if c.args.get("thread_ts")]
        assert notes == ["✔️ Acknowledged by <@U0ALICE>"]

    async def test_a_replayed_request_is_applied_once(
        self, fake: FakeSlack, store: Store, make_page: PageFactory
    ) -> None:
        """The same signed Not negative request sent five times (a replay inside the signature
        window) is recorded once and teaches the model once."""
        page = angry_page(make_page)
        slack = await posted(fake, store, page)
        learned = Learned()
        app = actions_app(Feedback(store, learned, slack), SECRET)
        value = orjson.dumps({"incident": page.incident.id, "mention": "x:9"}).decode()
        payload = block_actions("not_negative:0", value, pressed="1709294400.000200")
        body = urlencode({"payload": orjson.dumps(payload).decode()})
        stamp = str(int(time.time()))
        headers = {
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                timestamp=stamp, body=body
            ),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with serve_http(app, "127.0.0.1:0") as url, aiohttp.ClientSession() as session:
            for _ in range(5):
                response = await session.post(url, data=body, headers=headers)
                assert response.status == 200
        assert learned.taught == [(ANGRY, "neutral")]
        assert len(await store.clicks(page.incident.id)) == 1

    @pytest.mark.parametrize("stamp", [None, "", "abc", "１７００", "9" * 5_000])
    async def test_a_missing_or_unreadable_timestamp_is_refused(
        self, store: Store, stamp: str | None, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A request without a readable X-Slack-Request-Timestamp gets 401, not a 500 with a
        traceback in the log."""
        app = actions_app(Feedback(store, None, None), SECRET)
        headers = {"X-Slack-Signature": "v0=00"}
        if stamp is not None:
            headers["X-Slack-Request-Timestamp"] = stamp
        async with serve_http(app, "127.0.0.1:0") as url, aiohttp.ClientSession() as session:
            response = await session.post(url, data={"payload": "{}"}, headers=headers)
        assert response.status == 401
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    @pytest.mark.parametrize("signature", ["v0=é", "é" * 64])
    async def test_a_non_ascii_signature_is_refused(
        self, store: Store, signature: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A non-ASCII X-Slack-Signature (which the verifier's compare_digest raises on) gets
        401 like any bad signature, not a 500 with a traceback in the log."""
        app = actions_app(Feedback(store, None, None), SECRET)
        headers = {
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": signature,
        }
        async with serve_http(app, "127.0.0.1:0") as url, aiohttp.ClientSession() as session:
            response = await session.post(url, data={"payload": "{}"}, headers=headers)
        assert response.status == 401
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
