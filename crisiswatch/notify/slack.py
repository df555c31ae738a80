"""Slack paging: one message per incident, edited as it changes, with a thread of what changed.

The opening page posts the message and records its channel and `ts` in the store; every later
page of the incident edits that message (`chat.update`) and adds a short reply in its thread, so
a restart edits the right message instead of posting a new one. If someone deleted the message
in Slack, the page posts a new one, which later pages edit and whose thread gets the replies.
Every message carries what it stands for in its metadata, so after a crash between Slack's
answer and our record the message or reply is found again in Slack instead of being posted
twice. Errors are sorted for the dispatcher: rate limits wait (`Retry-After`); a token or app
Slack refuses (revoked, invalid, missing a scope) keeps every page queued, tried again after long
waits; an error of one page or its route's channel (unknown or archived channel, bot not in it,
blocks Slack rejects) gives that page up and tells the ops channel; anything else is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from crisiswatch.config import LiveSettings, Route
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.domain import Page, PageKind
from crisiswatch.notify import PermanentError, RetryLater, Unauthorized, slack_blocks
from crisiswatch.notify import chart as charts
from crisiswatch.notify.codec import load_page
from crisiswatch.notify.slack_messages import Messages
from crisiswatch.retry import Backoff, retry_after
from crisiswatch.store import Store, StoreError, page_key

log = structlog.get_logger(__name__)
Sleep = Callable[[float], Awaitable[None]]
DEFAULT_BASE_URL = "https://slack.com/api/"

UNAUTHORIZED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
    }
)
"""Slack errors about the token or the app, not the page: every page waits until they are fixed
(a restart reads a new token; a scope added to the same token works at the next try)."""

MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message"})
"""Errors for an incident's message that was deleted: a page posts a new one (see `_edited`);
a note in its thread is given up."""

CHANNEL_GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel"})
"""Errors for a channel the bot cannot post in (unknown, archived, not a member): a page there is
given up; an incident's old message there, when it moved to another route, is let go (see
`_leave_old_message`)."""

PERMANENT = MESSAGE_GONE | CHANNEL_GONE | {"invalid_blocks", "invalid_arguments", "msg_too_long"}
"""Slack errors of one page or its route's channel that retrying cannot cure: the page is given
up (so one bad route does not hold the other routes' pages) and ops are told."""


class RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack-sdk's 429 handler, waiting by the rules of `crisiswatch/retry.py` (`Retry-After`,
    else back-off) through an injectable sleep."""

    def __init__(self, sleep: Sleep, max_retry_count: int = 2) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._sleep = sleep
        self._backoff = Backoff()

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is None:
            raise error or RuntimeError("rate limited without a response")
        state.next_attempt_requested = True
        told = retry_after(response.headers, time.time())
        failures = state.current_attempt + 1
        await self._sleep(self._backoff.wait(failures, told))  # a Retry-After of 0 waits too
        state.increment_current_attempt()


METADATA_EVENT = "crisiswatch_incident"  # marks our messages, with the incident id in the payload
HISTORY_LOOKBACK = 100  # messages searched, since the first attempt, for one we may have posted
SHOWN_KEPT = 1_000  # incidents whose message's page is remembered (for an Acknowledge's edit)
CLOCK_SLACK = timedelta(minutes=5)  # our clock against Slack's, at most


class SlackNotifier:
    """Posts and edits one Block Kit message per incident through slack-sdk's async client."""

    name = "slack"
    pages_people = True  # quiet hours hold its pages

    def __init__(
        self,
        live: LiveSettings,
        store: Store,
        *,
        token: str,
        history: SeriesHistory | None = None,
        sleep: Sleep = asyncio.sleep,
        timeout: int = 30,
    ) -> None:
        self.live = live  # routes, brands and the ops channel, read per page (reloads swap them)
        self.store = store
        self.history = history
        self.client = AsyncWebClient(
            token=token,
            base_url=live.current.notify.slack.base_url or DEFAULT_BASE_URL,
            timeout=timeout,
            # Only 429s are retried inside the client: a dropped connection may follow a post
            # Slack took, so that retry is the dispatcher's, which looks before posting again.
            retry_handlers=[RateLimitRetry(sleep)],
        )
        self.messages = Messages(store, self.name)
        self._told_ops: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}  # incident id -> one render-and-post at a time
        self._shown: dict[str, Page] = {}  # incident id -> the page its message shows now

    async def send(self, page: Page) -> None:
        incident = page.incident
        route = self.live.current.routes.get(incident.route)
        if route is None:
            raise PermanentError(f"route {incident.route!r} is not configured")
        try:
            async with self._lock(incident.id):  # an Acknowledge edit waits, then shows this page
                opened = page.kind is PageKind.OPENED
                before = None if opened else await self._showing(incident.id)
                acked = await self.messages.acknowledged(incident.id)
                channel, ts = await self._message(page, route, acked)
                self._shown[incident.id] = page
                while len(self._shown) > SHOWN_KEPT:
                    del self._shown[next(iter(self._shown))]
            if not opened:
                # who acknowledged counts only once this severity's people have been called
                called = before is not None and before.incident.severity == incident.severity
                await self._thread_reply(page, route, channel, ts, acked if called else None)
        except SlackApiError as exc:
            raise await self._sorted(exc, route.channel) from exc
        if page.kind in (PageKind.OPENED, PageKind.ESCALATED):
            await self._chart(page, channel, ts)

    async def _message(
        self, page: Page, route: Route, acknowledged: slack_blocks.Acknowledged | None
    ) -> tuple[str, str]:
        """Post the incident's message, or edit it if it was posted; its (channel, ts)."""
        incident = page.incident
        brand = slack_blocks.brand_name(self.live.current, incident.brand)
        people = slack_blocks.people_for(route, incident.severity)
        text = slack_blocks.fallback(page, brand, people if page.kind is PageKind.OPENED else [])
        blocks = slack_blocks.page_blocks(page, brand, route, acknowledged)
        try:
            await self.store.save_samples(
                incident.id,
                ((s.mention.id, s.mention.text) for s in incident.latest.bucket.samples),
            )
        except StoreError as exc:  # a full disk: the page goes all the same
            log.error("slack.samples_unsaved", incident=incident.id, error=str(exc),
                      effect="the buttons on this page's posts cannot teach the model")  # fmt: skip
        if await self._moved(page, route):
            await self._leave_old_message(page, route)
        posted = await self._recorded(incident.id, incident.route, route.channel)
        if posted is not None and await self._edited(incident.id, posted, text, blocks):
            return posted
        response = await self.client.chat_postMessage(
            channel=route.channel,
            text=text,
            blocks=blocks,
            unfurl_links=False,
            unfurl_media=False,
            link_names=False,
            metadata=_metadata(incident.id),
        )
        channel, ts = str(response["channel"]), str(response["ts"])
        await self.messages.save(incident.id, channel, ts, incident.route)
        log.info("slack.posted", incident=incident.id, channel=channel, ts=ts)
        return channel, ts

    async def _moved(self, page: Page, route: Route) -> bool:
        """Whether the incident's message was posted for another route than the incident's
        now (a worse rule brought its own): whichever page comes first after the move, so a
        held, superseded or silenced escalation does not keep it in the old channel. For a
        message posted before routes were stored, whether it is in another channel than the
        route's (known when the route names its channel by id, as it should)."""
        posted = await self.messages.posted_for(page.incident.id)
        if posted is None:
            return False
        channel, posted_route = posted
        if posted_route is not None:
            return posted_route != page.incident.route
        return bool(slack_blocks.CHANNEL_ID.fullmatch(route.channel)) and channel != route.channel

    async def _leave_old_message(self, page: Page, route: Route) -> None:
        """The old message becomes a pointer to where the incident went (no stale state, no
        buttons), its thread says so too, and it is let go, so this page is posted in the new
        route's channel, to its people. A message already deleted in Slack is just let go."""
        incident = page.incident
        posted = await self.messages.message(incident.id)
        if posted is None:
            return
        channel, ts = posted
        note = slack_blocks.moved_note(incident.severity, route)
        try:
            await self.client.chat_update(
                channel=channel, ts=ts, text=note, blocks=slack_blocks.note_blocks(note)
            )
            await self.client.chat_postMessage(
                channel=channel, thread_ts=ts, text=note, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:  # an old message deleted, or its channel gone: let it go
            if str(exc.response.get("error", "")) not in MESSAGE_GONE | CHANNEL_GONE:
                raise
        await self.messages.forget(incident.id)
        log.info("slack.moved", incident=incident.id, route=incident.route)

    async def _recorded(self, incident_id: str, route: str, channel: str) -> tuple[str, str] | None:
        """The incident's message as the store has it, else (when an earlier attempt may have
        posted it before a crash) as found in `route`'s `channel`; None if never posted."""
        posted = await self.messages.message(incident_id)
        if posted is None and (tried := await self.messages.mark_posting(incident_id)):
            posted = await self._posted_before(incident_id, channel, tried)
            if posted is not None:
                await self.messages.save(incident_id, *posted, route)
        return posted

    async def _edited(
        self, incident_id: str, posted: tuple[str, str], text: str, blocks: list[slack_blocks.Block]
    ) -> bool:
        """Edit the incident's message; False when it is gone (deleted in Slack): it is then
        forgotten, and marked as being posted anew (see `mark_posting`)."""
        channel, ts = posted
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            error = str(exc.response.get("error", ""))
            if error not in MESSAGE_GONE:
                raise
            log.warning("slack.message_gone", incident=incident_id, error=error, effect="reposted")
            await self.messages.forget(incident_id)
            await self.messages.mark_posting(incident_id)
            return False
        return True

    async def _thread_reply(
        self,
        page: Page,
        route: Route,
        channel: str,
        ts: str,
        acknowledged: slack_blocks.Acknowledged | None,
    ) -> None:
        """Say in the incident's thread what this page changed, once: a retry after a crash
        first looks in the thread for the reply an earlier attempt may have posted."""
        key = page_key(page)
        if tried := await self.messages.mark_posting(key):
            replies = self.client.conversations_replies
            found = await _posted_since(
                replies, channel, tried, "page", key, "slack.thread_unavailable", ts=ts
            )
            if found is not None:
                log.info("slack.reply_recovered", page=key)
                return
        await self.client.chat_postMessage(
            channel=channel,
            thread_ts=ts,
            text=slack_blocks.thread_reply(page, route, acknowledged),
            unfurl_links=False,
            unfurl_media=False,
            metadata=_metadata(page.incident.id, page=key),
        )

    async def show_acknowledged(self, incident_id: str) -> bool:
        """Edit the incident's message to say who acknowledged it (its Acknowledge button goes),
        as of the page it shows (after a page being posted now, which reads the acknowledgement
        itself); False when there is no such message or page."""
        async with self._lock(incident_id):
            posted = await self.messages.message(incident_id)
            page = await self._showing(incident_id)
            if posted is None or page is None:
                return False
            route = self.live.current.routes.get(page.incident.route)
            brand = slack_blocks.brand_name(self.live.current, page.incident.brand)
            ack = await self.messages.acknowledged(incident_id)
            blocks = slack_blocks.page_blocks(page, brand, route, ack)
            text = slack_blocks.fallback(page, brand, [])
            try:
                return await self._edited(incident_id, posted, text, blocks)
            except SlackApiError as exc:
                raise await self._sorted(exc, posted[0]) from exc

    def _lock(self, incident_id: str) -> asyncio.Lock:
        """The incident's own lock: one message's edits wait for each other, not every page of
        every incident for one that waits out Slack's rate limit. Unheld locks are let go once
        there are many."""
        lock = self._locks.get(incident_id)
        if lock is None:
            if len(self._locks) >= SHOWN_KEPT:
                self._locks = {k: held for k, held in self._locks.items() if held.locked()}
            lock = self._locks[incident_id] = asyncio.Lock()
        return lock

    async def _showing(self, incident_id: str) -> Page | None:
        """The page the incident's message shows: the last this notifier posted, or after a
        restart the newest recorded as sent."""
        page = self._shown.get(incident_id)
        if page is None:
            raw = await self.store.last_sent(incident_id, self.name)
            page = None if raw is None else load_page(raw)
        return page

    async def reply(self, incident_id: str, text: str) -> bool:
        """A note in an incident's thread (acknowledgements, escalations); False if none.
        Slack's errors are sorted as a page's are."""
        posted = await self.messages.message(incident_id)
        if posted is None:
            return False
        channel, ts = posted
        try:
            await self.client.chat_postMessage(
                channel=channel, thread_ts=ts, text=text, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:
            raise await self._sorted(exc, channel) from exc
        return True

    async def _chart(self, page: Page, channel: str, ts: str) -> None:
        """Upload the series' chart into the thread; a chart that fails is logged, not retried."""
        if self.history is None:
            return
        signal = page.incident.latest
        found = charts.windows(self.history, signal.series, signal.bucket.end)
        if found is None:
            return
        title = f"{signal.series}: last 24 h and a week earlier"
        png = await asyncio.to_thread(charts.render_png, *found, signal.bucket.start, title)
        if png is None:
            return
        await upload_chart(
            self.client,
            (channel, ts),
            png,
            filename=f"crisiswatch-{page.at:%Y%m%dT%H%M}.png",
            title=title,
            alt_txt=f"{signal.series} mentions and negative share, last 24 hours",
            failed="slack.chart_failed",
            incident=page.incident.id,
        )

    async def _sorted(self, exc: SlackApiError, channel: str) -> Exception:
        """The exception the dispatcher should see for a Slack error."""
        error = str(exc.response.get("error", ""))
        status = exc.response.status_code
        if status == 429:
            return RetryLater("slack rate limit", retry_after(exc.response.headers, time.time()))
        if error in UNAUTHORIZED:  # the ops channel cannot be told with the same token
            return Unauthorized(f"slack: {error}")
        if error in PERMANENT:
            await self._tell_ops(error, channel)
            return PermanentError(f"slack: {error} (channel {channel})")
        return exc

    async def _tell_ops(self, error: str, channel: str) -> None:
        """Say once per problem in the ops channel (and the log) that pages cannot go out."""
        log.error("slack.permanent_error", error=error, channel=channel)
        problem = f"{error}:{channel}"
        target = self.live.current.notify.slack.ops_channel
        if target is None or problem in self._told_ops:
            return
        self._told_ops.add(problem)
        try:
            await self.client.chat_postMessage(
                channel=target,
                text=slack_blocks.ops_notice(f"cannot page: {error} while paging {channel}"),
            )
        except asyncio.CancelledError:
            raise
        except Exception as notice_error:
            log.error("slack.ops_notice_failed", error=str(notice_error))

    async def _posted_before(
        self, incident_id: str, channel: str, tried: datetime
    ) -> tuple[str, str] | None:
        """The incident's message if Slack has it but the store does not: a crash between
        Slack's answer and our record. Found by the metadata every message carries, so a
        restart edits it instead of posting twice (routes should name channels by id: history
        is read by id)."""
        history = self.client.conversations_history
        ts = await _posted_since(
            history, channel, tried, "incident", incident_id, "slack.history_unavailable"
        )
        if ts is None:
            return None
        log.info("slack.message_recovered", incident=incident_id)
        return channel, ts

    async def notice(self, text: str) -> None:
        """Post a notice about crisiswatch itself in the ops channel (if one is configured)."""
        target = self.live.current.notify.slack.ops_channel
        if target is not None:
            await self.client.chat_postMessage(channel=target, text=slack_blocks.ops_notice(text))

    async def escalate(self, incident_id: str, route: Route, waited: timedelta) -> bool:
        """Re-page in the incident's thread, calling the route's `escalate_to`."""
        return await self.reply(incident_id, slack_blocks.escalation_reply(route, waited))


async def upload_chart(
    client: AsyncWebClient,
    thread: tuple[str, str],
    png: bytes,
    *,
    filename: str,
    title: str,
    alt_txt: str,
    failed: str,
    **context: str,
) -> None:
    """Upload a chart into a message's thread (channel, ts). One that fails is logged as the
    event `failed` with `context`, not raised nor retried: the message it belongs to is out."""
    channel, ts = thread
    try:
        await client.files_upload_v2(
            channel=channel,
            thread_ts=ts,
            file=png,
            filename=filename,
            title=title,
            alt_txt=alt_txt,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning(failed, **context, error=str(exc))


async def _posted_since(
    search: Callable[..., Awaitable[AsyncSlackResponse]],
    channel: str,
    tried: datetime,
    field: str,
    value: str,
    unavailable: str,
    **where: str,
) -> str | None:
    """The ts of a message of ours (metadata `field` = `value`) that an attempt at `tried` may
    have posted, searched with `search` (a channel's history, or with `where` a thread's
    replies). None when there is none or Slack will not show them (no history scope, a channel
    given by name: logged as `unavailable`, and posting again beats not posting), but a rate
    limit is raised."""
    try:
        found = await search(
            channel=channel,
            **where,
            oldest=_since(tried),
            limit=HISTORY_LOOKBACK,
            include_all_metadata=True,
        )
    except SlackApiError as exc:
        _raise_if_rate_limited(exc)
        log.debug(unavailable, channel=channel, error=str(exc))
        return None
    return _ours(found.get("messages"), field, value)


def _raise_if_rate_limited(exc: SlackApiError) -> None:
    """A look for what an earlier attempt posted that was rate limited has not looked: the
    page waits (`Retry-After`) rather than posting what may be there already."""
    if exc.response.status_code == 429:
        raise exc


def _since(tried: datetime) -> str:
    """Slack's `oldest` for a search of what an attempt at `tried` may have posted: a few
    minutes earlier, for clocks that disagree, so only messages since then are read."""
    return f"{(tried - CLOCK_SLACK).timestamp():.6f}"


def _metadata(incident_id: str, **more: str) -> dict[str, Any]:
    """Message metadata naming what a message of ours stands for, to find it again."""
    return {"event_type": METADATA_EVENT, "event_payload": {"incident": incident_id, **more}}


def _ours(messages: Any, field: str, value: str) -> str | None:
    """The ts of the first of Slack's `messages` whose metadata of ours has `field` = `value`."""
    for message in messages or []:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == METADATA_EVENT and payload.get(field) == value:
            return str(message["ts"])
    return None
