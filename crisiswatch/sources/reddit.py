"""Reddit: new posts and comments streamed from chosen subreddits, and site-wide search polled
for the brands' terms, through asyncpraw with a read-only app.

asyncpraw's streams end on the first error, and a 429 is raised, not retried: each stream here
asks for one listing at a time (`pause_after=-1`), waits between listings itself, and on an error
is started again by `supervise` from where it stopped (`continue_after_id`). Reddit's ids grow
with time, so a post at or before a stream's cursor is never yielded again; and Reddit lists
nothing after a removed post, so when the first listing after a cursor is empty, what is newer
than it is paged for backwards (a restart whose last post was removed meanwhile loses nothing).
Every request must be answered within a timeout; a timeout is an error like any other.

A mention's reach is its author's karma (link + comment), looked up once a day per author and at
most `karma_per_minute` times a minute; when the lookup fails, is slow or over that budget, the
post's score stands in.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import asyncpraw
import structlog
from asyncprawcore import Requestor
from asyncprawcore.exceptions import Forbidden, NotFound, RequestException, TooManyRequests

from crisiswatch.config import Brand, RedditSettings
from crisiswatch.domain import Mention
from crisiswatch.mentions import MAX_FIELD, MAX_TEXT, plausible_count, text_or_none
from crisiswatch.retry import retry_after
from crisiswatch.sources.live import Fetched, Found, LiveSource, Loop
from crisiswatch.sources.queries import reddit_query
from crisiswatch.sources.resilience import RateLimited, describe_error
from crisiswatch.store import Store

log = structlog.get_logger(__name__)
SITE = "https://www.reddit.com"
AUTHORS_KEPT = 50_000  # recent comment authors, to name whom a reply answers
REQUEST_TIMEOUT = 20.0  # seconds for a request and its whole answer
KARMA_KEPT = 10_000  # authors whose karma is remembered
KARMA_FOR = 86_400.0  # seconds an author's karma is trusted
KARMA_TIMEOUT = 3.0  # seconds a mention may wait for its author's karma
NEWEST_FIRST = {"submissions": "new", "comments": "comments"}  # the listing under each stream
LATEST_POST = 7_258_118_400  # 2200-01-01 in seconds: a later creation time is no real one
CATCH_UP = 1_000  # items paged back for a removed cursor at most (Reddit lists ~1,000 back)
LISTING = 100  # items asyncpraw's stream asks for a listing: a full one may have more after it


class _Requestor(Requestor):
    """asyncprawcore's requestor with its own timeout on every request (asyncprawcore passes a
    fixed 16 s, or `PRAWCORE_TIMEOUT`, whatever the requestor was given)."""

    @asynccontextmanager
    async def request(self, *args: Any, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        async with super().request(*args, **{**kwargs, "timeout": self.timeout}) as response:
            yield response


def reddit_client(
    settings: RedditSettings, client_id: str, client_secret: str, timeout: float = REQUEST_TIMEOUT
) -> Any:
    """A read-only asyncpraw client that never checks PyPI for updates; every request must be
    answered within `timeout` seconds."""
    return asyncpraw.Reddit(
        client_id=client_id,
        client_secret=client_secret,
        user_agent=settings.user_agent,
        check_for_updates=False,
        oauth_url=settings.oauth_url,
        reddit_url=settings.reddit_url,
        requestor_class=_Requestor,
        requestor_kwargs={"timeout": timeout},
    )


def _number(fullname: str) -> int:
    """The ordinal of a Reddit id: `t3_1abc` → int('1abc', 36); "" (before everything) → 0."""
    return int(fullname.partition("_")[2] or "0", 36)


def _field(thing: object, name: str) -> Any:
    """A field of an asyncpraw object as Reddit sent it (never a lazy fetch)."""
    return vars(thing).get(name)


def _created(thing: object) -> float:
    """When a post or comment was made (seconds since the epoch); 0 when it does not say."""
    created = _field(thing, "created_utc")
    plausible = isinstance(created, int | float) and 0 < created < LATEST_POST
    return float(created) if plausible else 0.0


def _name(author: object) -> str | None:
    return None if author is None else str(author)[:MAX_FIELD]


class RedditSource(LiveSource):
    def __init__(
        self,
        settings: RedditSettings,
        brands: Sequence[Brand],
        store: Store | None,
        *,
        client_id: str,
        client_secret: str,
        stall_after: float = 300.0,
        poll_every: float = 10.0,
        request_timeout: float = REQUEST_TIMEOUT,
        karma_timeout: float = KARMA_TIMEOUT,
        **timing: Any,
    ) -> None:
        super().__init__("reddit", store, stall_after=stall_after, **timing)
        self.settings = settings
        self.brands = list(brands)
        self.poll_every = poll_every  # between two listings of a subreddit stream
        self.request_timeout = request_timeout
        self.karma_timeout = karma_timeout
        self._credentials = (client_id, client_secret)
        self._authors: OrderedDict[str, str | None] = OrderedDict()
        self._karma: OrderedDict[str, tuple[float, int | None]] = OrderedDict()  # (when, karma)
        self._lookups: deque[float] = deque()  # when the lookups of the last minute were made
        self._lookups_resume = 0.0  # no lookups before this time (after a failed one)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[object]:
        reddit = reddit_client(self.settings, *self._credentials, timeout=self.request_timeout)
        try:
            yield reddit
        finally:
            await reddit.close()

    def _client(self) -> AbstractAsyncContextManager[object]:
        return self._open()

    def _loops(self, client: object) -> list[Loop]:
        loops: list[Loop] = []
        if self.settings.subreddits:
            loops += [
                lambda: self._stream(client, "submissions"),
                lambda: self._stream(client, "comments"),
            ]
        if self.settings.search:
            loops += [partial(self._search, client, brand) for brand in self.brands]
        return loops

    async def _stream(self, reddit: Any, kind: str) -> AsyncIterator[Found | Fetched]:
        """New posts or comments of the subreddits, oldest first, after the cursor. On a first
        start what exists is not new: its newest item ("" if none) is the cursor at once, so a
        listing that fails before anything new was yielded restarts from there, skipping
        nothing posted since."""
        with self._errors():
            started = self.clock()
            subreddit = await reddit.subreddit("+".join(self.settings.subreddits))
            if kind not in self.position:
                newest = [t async for t in getattr(subreddit, NEWEST_FIRST[kind])(limit=1)]
                self.position[kind] = newest[0].fullname if newest else ""
                yield None, kind, self.position[kind]
            after, listed = self.position[kind], 0
            async for thing in self._listed(subreddit, kind, after):
                if thing is None:  # one listing fetched (the next is fetched when asked for)
                    self._health.success()
                    if listed < LISTING:  # not a full one: nothing more was waiting after it
                        yield Fetched(started)
                    await self.sleep(self.poll_every)
                    started, listed = self.clock(), 0
                    continue
                listed += 1
                if _number(thing.fullname) <= _number(after):
                    continue
                after = self.position[kind] = thing.fullname
                yield await self._readable(reddit, thing), kind, after

    async def _listed(self, subreddit: Any, kind: str, after: str) -> AsyncIterator[Any]:
        """asyncpraw's stream after `after`: each listing's new items oldest first, then None.
        Reddit lists nothing after a removed post, so when the first listing after a cursor
        comes back empty, what is newer than it is paged for backwards instead."""
        stream = getattr(subreddit.stream, kind)(pause_after=-1, continue_after_id=after or None)
        first = bool(after)
        async for thing in stream:
            if first and thing is None:  # nothing new, or the cursor's post was removed
                for missed in await self._newer_than(subreddit, kind, after):
                    yield missed
            first = False
            yield thing

    async def _newer_than(self, subreddit: Any, kind: str, after: str) -> list[Any]:
        """The items newer than `after`, oldest first, paged back (`after=`) from the newest
        until one at or before it; at most `CATCH_UP`, and the log says when that stopped it."""
        found: list[Any] = []
        async for thing in getattr(subreddit, NEWEST_FIRST[kind])(limit=CATCH_UP):
            if _number(thing.fullname) <= _number(after):
                return found[::-1]
            found.append(thing)
        if len(found) == CATCH_UP:
            # any older items after the cursor are beyond reach
            log.warning("reddit.catch_up_limit", stream=kind, cursor=after, items=CATCH_UP)
        return found[::-1]

    async def _search(self, reddit: Any, brand: Brand) -> AsyncIterator[Found | Fetched]:
        """Site-wide search for the brand, newest posts, every `search_every`."""
        key = f"search:{brand.id}"
        lookback = self.settings.search_lookback.total_seconds()
        newest = float(self.position.get(key, self.clock()))
        query = reddit_query(brand)
        with self._errors():
            everywhere = await reddit.subreddit("all")
            while True:
                started = self.clock()
                found = [
                    post
                    async for post in everywhere.search(query, sort="new", time_filter="day")
                    if _created(post) >= newest - lookback
                ]
                self._health.success()
                found.sort(key=lambda post: (_created(post), _number(post.fullname)))
                for post in found:
                    newest = max(newest, _created(post))
                    self.position[key] = repr(newest)
                    yield await self._readable(reddit, post), key, repr(newest)
                self.position[key] = repr(newest)
                yield None, key, repr(newest)
                yield Fetched(started)
                await self.sleep(self.settings.search_every.total_seconds())

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """asyncprawcore's errors as `supervise` reads them: a 429 waits as its headers say, a
        request not answered in time says so."""
        try:
            yield
        except TooManyRequests as exc:
            wait = retry_after(exc.response.headers, self.clock())
            raise RateLimited("reddit answered 429", wait) from exc
        except RequestException as exc:
            if isinstance(exc.original_exception, TimeoutError):
                raise TimeoutError(
                    f"reddit did not answer within {self.request_timeout:g}s"
                ) from exc
            raise

    async def _reach(self, reddit: Any, author: str | None, score: int) -> int:
        """The author's karma (link + comment), looked up at most once a day; else `score`.

        A failed or slow lookup costs the mention at most `karma_timeout`; only a definite
        answer (the karma, or no such user) is remembered, and after a failure lookups pause for
        a minute. Past the config's `karma_per_minute` lookups the score stands in at once, so
        neither a surge of new authors nor a struggling Reddit slows the listings."""
        if author is None or author == "[deleted]":
            return score
        now = self.clock()
        known = self._karma.get(author)
        fallback = score if known is None or known[1] is None else known[1]
        if known is not None and now - known[0] < KARMA_FOR:
            self._karma.move_to_end(author)
            return fallback
        while self._lookups and now - self._lookups[0] >= 60.0:
            self._lookups.popleft()
        # Reddit allows an app ~100 requests a minute in all; the listings keep theirs when a
        # surge brings hundreds of new authors: over budget, the karma last known (or the
        # score) now, a lookup later
        if len(self._lookups) >= self.settings.karma_per_minute or now < self._lookups_resume:
            return fallback
        self._lookups.append(now)
        karma: int | None = None
        try:
            async with asyncio.timeout(self.karma_timeout):
                redditor = await reddit.redditor(author, fetch=True)
            link, comment = _field(redditor, "link_karma"), _field(redditor, "comment_karma")
            if link is not None or comment is not None:  # a suspended account shows none
                karma = plausible_count(plausible_count(link) + plausible_count(comment))
        except (NotFound, Forbidden) as exc:
            log.debug("reddit.karma_unknown", author=author, error=describe_error(exc))
        except Exception as exc:
            log.debug("reddit.karma_failed", author=author, error=describe_error(exc))
            self._lookups_resume = now + 60.0
            return fallback
        self._karma[author] = (now, karma)
        self._karma.move_to_end(author)
        if len(self._karma) > KARMA_KEPT:
            self._karma.popitem(last=False)
        return score if karma is None else karma

    async def _readable(self, reddit: Any, thing: Any) -> Mention | None:
        """The post or comment as a mention; None, logged, when it cannot be read (one such
        item must not stop its listing, which would fetch it again on every retry)."""
        try:
            return await self._mention(reddit, thing)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            log.warning("reddit.item_unreadable", item=str(getattr(thing, "fullname", "?"))[:40],
                        error=describe_error(exc))  # fmt: skip
            return None

    async def _mention(self, reddit: Any, thing: Any) -> Mention:
        fullname: str = thing.fullname
        author = _name(_field(thing, "author"))
        if fullname.startswith("t1_"):
            text = text_or_none(_field(thing, "body"), MAX_TEXT) or ""
            parent = text_or_none(_field(thing, "parent_id")) or ""
            replied = (
                _field(thing, "link_author")
                if parent.startswith("t3_")
                else self._authors.get(parent)
            )
            self._authors[fullname] = author
            if len(self._authors) > AUTHORS_KEPT:
                self._authors.popitem(last=False)
        else:
            title = text_or_none(_field(thing, "title"), MAX_TEXT) or ""
            body = text_or_none(_field(thing, "selftext"), MAX_TEXT) or ""
            text, replied = f"{title}\n\n{body}".strip(), None
        permalink = text_or_none(_field(thing, "permalink"))
        score = plausible_count(_field(thing, "score"))
        created = _created(thing)
        if not created:
            raise ValueError("no creation time")
        return Mention(
            id=f"reddit:{fullname}",
            source="reddit",
            created_at=datetime.fromtimestamp(created, UTC),
            text=text[:MAX_TEXT],
            author=author,
            author_followers=await self._reach(reddit, author, score),
            url=f"{SITE}{permalink}" if permalink else None,
            in_reply_to_author=replied if replied not in (None, "[deleted]") else None,
            engagement=plausible_count(score + plausible_count(_field(thing, "num_comments"))),
        )
