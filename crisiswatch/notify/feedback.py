"""What people do with a page: button clicks become feedback, and silence becomes escalation.

Every click is recorded (who, when, what, which incident) and applied once: a press that Slack
delivers again, or a replayed request, is known by its action's time. Acknowledge stops
escalation (the response clock starts at the click); Snooze 1 h delays it; a post's Not negative
or Complaint teaches the sentiment model that the post is neutral or negative (once per post of
an incident); False alarm is
counted against each rule of the incident, which gives each rule's precision. An incident nobody
acknowledged within its route's `escalate_after` is re-paged once in its thread, calling
`escalate_to`; one incident that cannot be escalated never holds up the others.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import structlog

from crisiswatch.config import LiveSettings, Route
from crisiswatch.domain import Silence
from crisiswatch.notify import PermanentError, Unauthorized
from crisiswatch.notify.slack import SlackNotifier
from crisiswatch.notify.slack_blocks import (
    ACK,
    COMPLAINT,
    FALSE_ALARM,
    NOT_NEGATIVE,
    POST_LABELS,
    RESOLVE,
    SNOOZE,
    ping,
)
from crisiswatch.notify.slack_messages import Press
from crisiswatch.retry import Backoff
from crisiswatch.store import Store, StoreError

log = structlog.get_logger(__name__)
SNOOZE_FOR = timedelta(hours=1)
ESCALATED = "escalated"
ESCALATION_FAILED = "escalation_failed"  # its channel or message is gone: not tried again
CHECK_WAIT_CAP = 900.0  # seconds: the longest wait after checks that failed as a whole
SNOOZE_FAILED = "crisiswatch cannot write its state (a full disk?), so pages are not held"
_NOTES = {
    ACK: "✔️ Acknowledged by {user}",
    SNOOZE: "💤 Snoozed for 1 h by {user}",
    RESOLVE: "✅ Marked resolved by {user}",
    FALSE_ALARM: "🙅 Marked a false alarm by {user}",
    NOT_NEGATIVE: "🙂 {user} says a post is not negative; the sentiment model learns from it",
    COMPLAINT: "😠 {user} says a post is a complaint; the sentiment model learns from it",
}


class Learner(Protocol):
    def learn_one(self, text: str, label: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Click:
    """One press of a page's button."""

    action: str
    incident_id: str
    user: str
    at: datetime
    mention_id: str | None = None
    key: str | None = None  # this very press (a redelivery or a replay has the same)


def clicks_of(payload: Mapping[str, Any], at: datetime) -> list[Click]:
    """The clicks in a Slack `block_actions` payload; anything else yields none."""
    if payload.get("type") != "block_actions":
        return []
    user = str((payload.get("user") or {}).get("id", "unknown"))
    clicks = []
    for action in payload.get("actions") or []:
        action_id = str(action.get("action_id", ""))
        kind = action_id.split(":")[0]
        value = str(action.get("value", ""))
        stamp = action.get("action_ts")
        key = f"{action_id}|{user}|{stamp}" if stamp else None
        if kind in POST_LABELS:
            try:
                ids = orjson.loads(value)
                incident, mention = str(ids["incident"]), str(ids["mention"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("feedback.bad_value", action=kind)
            else:
                clicks.append(Click(kind, incident, user, at, mention, key))
        elif kind in _NOTES and value:
            clicks.append(Click(kind, value, user, at, key=key))
    return clicks


def snooze_silence(click: Click) -> Silence:
    """Snooze mutes this incident's pages for an hour (not the next incident of its group; an
    escalation to critical and its resolution still page)."""
    return Silence(
        id=Silence.new_id(),
        starts_at=click.at,
        ends_at=click.at + SNOOZE_FOR,
        created_by=f"slack:{click.user}",
        comment="Snooze 1 h from Slack",
        incident=click.incident_id,
    )


class IncidentControl(Protocol):
    """What a click may ask of the running pipeline (the daemon implements it)."""

    async def resolve(self, incident_id: str, by: str) -> None: ...

    async def false_alarm(self, incident_id: str, by: str) -> None: ...


class ControlLink:
    """Stands in for the daemon until it exists (Slack starts first); clicks before then are
    recorded but not applied."""

    def __init__(self) -> None:
        self.target: IncidentControl | None = None

    async def resolve(self, incident_id: str, by: str) -> None:
        if self.target is not None:
            await self.target.resolve(incident_id, by)

    async def false_alarm(self, incident_id: str, by: str) -> None:
        if self.target is not None:
            await self.target.false_alarm(incident_id, by)


class Feedback:
    """Records clicks and applies them: the model learns, the thread says who did what.

    `control`, set once the daemon runs, takes Resolve (the incident closes) and False alarm
    (its volume is learned as normal).
    """

    def __init__(self, store: Store, learner: Learner | None, slack: SlackNotifier | None) -> None:
        self.store = store
        self.learner = learner
        self.slack = slack
        self.control: IncidentControl | None = None

    async def payload(self, payload: Mapping[str, Any]) -> None:
        """Handle a Slack interactivity payload (from Socket Mode or the HTTP endpoint)."""
        for click in clicks_of(payload, datetime.now(UTC)):
            await self.handle(click)

    async def handle(self, click: Click) -> None:
        """Record and apply a click once, however often Slack delivers it; a post is learned
        once per incident, however often (or by however many people) its button is pressed.
        Every False alarm press goes to the daemon, which learns each bucket once (a press
        after the incident's newer bucket teaches that one too), and is said once in Slack."""
        if self.slack is not None:
            await self.slack.messages.write_back_presses()  # those before it come first
        try:
            earlier = await self.store.record_click(
                click.incident_id, click.action, click.user, click.at, click.mention_id, click.key
            )
        except StoreError as exc:  # a full disk: the press is applied all the same
            log.error(
                "feedback.unrecorded",
                action=click.action,
                incident=click.incident_id,
                error=str(exc),
                effect="applied and said in the thread, and recorded once the store can "
                "(a restart before then forgets it; a redelivery of it may be applied again)",
            )
            earlier = 0
            if self.slack is not None:
                press = Press(click.incident_id, click.action, click.user, click.at,
                              click.mention_id)  # fmt: skip
                self.slack.messages.pressed_unrecorded(press)
        if earlier is None:
            log.info("feedback.repeated", action=click.action, incident=click.incident_id)
            return
        log.info("feedback.click", action=click.action, incident=click.incident_id)
        label = POST_LABELS.get(click.action)
        if earlier and label is not None:
            # it would teach the model the same thing again, as if it were more evidence
            log.info("feedback.already_learned", incident=click.incident_id)
            return
        if click.action == SNOOZE and not await self._snoozed(click):
            return
        if self.control is not None and click.action == RESOLVE:
            await self.control.resolve(click.incident_id, click.user)
        if self.control is not None and click.action == FALSE_ALARM:
            await self.control.false_alarm(click.incident_id, click.user)
        if earlier and click.action == FALSE_ALARM:
            return  # said in the thread already
        if label is not None and self.learner is not None and click.mention_id:
            text = await self.store.sample_text(click.incident_id, click.mention_id)
            if text is not None:
                self.learner.learn_one(text, label)
        if self.slack is not None:
            note = _NOTES[click.action].format(user=ping(click.user))
            await self._tell(click, "feedback.note_failed", self.slack.reply, note)
            if click.action == ACK and not earlier:  # the message says who is on it
                await self._tell(click, "feedback.edit_failed", self.slack.show_acknowledged)

    async def _snoozed(self, click: Click) -> bool:
        """Silence the incident for an hour; where the store cannot keep the silence (a full
        disk), say so in the thread instead."""
        try:
            await self.store.add_silence(snooze_silence(click))
        except StoreError as exc:
            log.error("feedback.snooze_failed", incident=click.incident_id, error=str(exc))
            if self.slack is not None:
                note = f"⚠️ Could not snooze for {ping(click.user)}: {SNOOZE_FAILED}"
                await self._tell(click, "feedback.note_failed", self.slack.reply, note)
            return False
        return True

    async def _tell(
        self, click: Click, failed: str, say: Callable[..., Awaitable[bool]], *args: str
    ) -> None:
        """One of a click's messages in Slack; one that fails is logged, not the click's end."""
        try:
            await say(click.incident_id, *args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(failed, incident=click.incident_id, error=str(exc))


class Escalator:
    """Re-pages unacknowledged incidents in their thread once `escalate_after` has passed.

    The routes are read at each check, so a reload that adds, changes or removes a route's
    `escalate_after` or `escalate_to` applies to incidents already open. An incident whose
    channel or message is gone is given up (recorded, so not tried again); any other failure of
    one incident is logged once and tried again at the next check, after the others. When Slack
    refuses the token, or the store cannot be read, the check stops and the next ones wait
    longer, up to `CHECK_WAIT_CAP`."""

    def __init__(
        self,
        store: Store,
        slack: SlackNotifier,
        live: LiveSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        every: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.slack = slack
        self.live = live
        self._clock = clock
        self._sleep = sleep
        self.every = every
        self._backoff = Backoff(base=every, cap=CHECK_WAIT_CAP, floor=every, rand=rng)
        self._failing: dict[str, str] = {}  # incident → the error logged, while it lasts

    async def run(self) -> None:
        problem = None  # the failure of the checks logged last, so that it is logged once
        while True:
            try:
                await self.check()
            except Exception as exc:
                if repr(exc) != problem:
                    log.exception("escalation.check_failed", effect="the checks wait longer")
                problem = repr(exc)
                wait = self._backoff.next()
            else:
                problem = None
                self._backoff.reset()
                wait = self.every
            await self._sleep(wait)

    async def check(self) -> int:
        """Escalate what is due now; return how many were escalated."""
        routes = self.live.current.routes
        if not any(route.escalate_after is not None for route in routes.values()):
            return 0
        await self.slack.messages.write_back_presses()
        now = datetime.fromtimestamp(self._clock(), UTC)
        waiting = await self.store.unacknowledged(self.slack.name)
        ids = {incident_id for incident_id, *_ in waiting}
        self._failing = {key: error for key, error in self._failing.items() if key in ids}
        escalated = 0
        for incident_id, route_name, posted, snoozed in waiting:
            route = routes.get(route_name)
            if route is None or route.escalate_after is None:
                continue
            if self.slack.messages.pressed_here(incident_id, (ACK, ESCALATED, ESCALATION_FAILED)):
                continue  # the store could not record it yet: known here
            due = max(posted + route.escalate_after, snoozed + SNOOZE_FOR * (snoozed > posted))
            if now >= due and await self._escalate(incident_id, route_name, route, now, posted):
                escalated += 1
        return escalated

    async def _escalate(
        self, incident_id: str, route_name: str, route: Route, now: datetime, posted: datetime
    ) -> bool:
        """Escalate one incident; whether it was. `Unauthorized` stops the check: no incident
        could be escalated."""
        try:
            done = await self.slack.escalate(incident_id, route, now - posted)
        except PermanentError as exc:
            await self._record(incident_id, ESCALATION_FAILED, now)
            log.error("escalation.given_up", incident=incident_id, error=str(exc))
            return False
        except Unauthorized:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self._failing.get(incident_id) != error:
                self._failing[incident_id] = error
                log.warning("escalation.failed", incident=incident_id, error=error)
            return False
        self._failing.pop(incident_id, None)
        if done:
            await self._record(incident_id, ESCALATED, now)
            log.warning("incident.escalated", incident=incident_id, route=route_name)
        return done

    async def _record(self, incident_id: str, action: str, now: datetime) -> None:
        """Record that an incident was escalated or given up, so that it is not again; where
        the store cannot (a full disk), it is held in memory until it can."""
        try:
            await self.store.record_click(incident_id, action, "crisiswatch", now, None)
        except StoreError as exc:
            log.error("escalation.unrecorded", incident=incident_id, action=action,
                      error=str(exc), effect="not escalated again")  # fmt: skip
            self.slack.messages.pressed_unrecorded(Press(incident_id, action, "crisiswatch", now))
