"""X (Twitter API v2): recent search polled with `since_id` for each brand, or the filtered
stream (a config switch, for accounts with that access), through tweepy's async client.

X answers a search newest first, but the pipeline's watermark follows the newest mention it has
seen, so a poll (a backfill, or the catch-up after a restart or a reconnect) gathers every page
of every brand's search first and hands the tweets over oldest first, by id (X's ids grow with
time): in X's order all but the newest few minutes would be too late to count.

tweepy's own waiting is not used: `wait_on_rate_limit` retries at once when the reset header is
missing, and its stream sleeps and retries on its own and ends on a callback's error. Here every
request is paced from `x-rate-limit-remaining`/`x-rate-limit-reset`, a 429 waits for the reset,
and any other error is backed off by `supervise`. The stream's callbacks never raise into
tweepy's loop except to end a connection, and after each (re)connect recent search fetches what
was posted since the last tweet seen, so a dropped connection leaves no gap. A request must be
answered within a timeout, and the stream must send something (a keep-alive at least) within
another; either timing out is an error like any other.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import orjson
import structlog
from tweepy import StreamRule
from tweepy.asynchronous import AsyncClient, AsyncStreamingClient
from tweepy.errors import BadRequest, TooManyRequests

from crisiswatch.config import Brand, XSettings
from crisiswatch.domain import Mention
from crisiswatch.ingest import Deduper
from crisiswatch.mentions import MAX_TEXT, parse_time, plausible_count, text_or_none
from crisiswatch.retry import retry_after
from crisiswatch.sources.live import Fetched, Found, LiveSource, Loop
from crisiswatch.sources.queries import x_query
from crisiswatch.sources.resilience import RateLimited, SourceSetupError
from crisiswatch.store import Store

log = structlog.get_logger(__name__)
API = "https://api.twitter.com"
REQUEST_TIMEOUT = 20.0  # seconds for a request and its whole answer
STREAM_SILENCE = 60.0  # seconds without a byte (X sends a keep-alive every 20 s) end the stream
STREAM_PROGRESS = 10.0  # seconds between two words that the stream is current
RULE_TAG = "crisiswatch:"
MAX_QUERY = 512  # characters of a recent-search query below Enterprise access (a stream rule: more)
_DIGITS = re.compile(r"[0-9]{1,25}")  # a tweet's id: ASCII digits (str.isdigit takes "²")
UNREADABLE_TOLD = 1_000  # ids of unreadable tweets remembered, so that each is logged once
REACH = 6.5 * 86_400.0  # seconds back a search may start: X's 7 days (older: 400), less a margin
SNOWFLAKE_EPOCH = 1_288_834_974.657  # X's ids are milliseconds since this, shifted 22 bits
INTERACTIONS = frozenset({"like_count", "retweet_count", "reply_count", "quote_count"})
FIELDS: dict[str, Any] = {
    # referenced_tweets.id puts a quoted post in includes.tweets (whose author it answers)
    "expansions": [
        "author_id", "in_reply_to_user_id", "referenced_tweets.id",
        "referenced_tweets.id.author_id",
    ],
    # note_tweet: a long post's whole text (its `text` stops at 280 characters)
    "tweet_fields": [
        "created_at", "lang", "public_metrics", "author_id", "in_reply_to_user_id",
        "referenced_tweets", "conversation_id", "note_tweet",
    ],
    "user_fields": ["username", "public_metrics"],
}  # fmt: skip


def overlong_queries(queries: Mapping[str, str]) -> list[str]:
    """One line per brand whose X query (brand id -> query) X would refuse as too long."""
    return [
        f"brand {brand!r}: its X query is {len(query)} characters, over X's {MAX_QUERY} (use"
        " fewer or shorter keywords, hashtags, handles or exclusions)"
        for brand, query in queries.items()
        if len(query) > MAX_QUERY
    ]


class Rebased:
    """An aiohttp session whose requests to `API` go to another base URL (the tests' fake)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self.headers = session.headers

    @property
    def closed(self) -> bool:
        return self._session.closed

    def request(self, method: str, url: object, **kwargs: Any) -> Any:
        target = str(url)
        if target.startswith(API):
            target = self._base + target.removeprefix(API)
        return self._session.request(method, target, **kwargs)

    async def close(self) -> None:
        await self._session.close()


def http_session(
    api_url: str | None, timeout: float = REQUEST_TIMEOUT, *, stream: bool = False
) -> Any:
    """One session for every request of a source (tweepy opens one per request otherwise): each
    request must be answered within `timeout` seconds, or for a `stream`, never stay silent
    that long."""
    limit = (
        aiohttp.ClientTimeout(total=None, sock_read=timeout)
        if stream
        else aiohttp.ClientTimeout(total=timeout)
    )
    session = aiohttp.ClientSession(timeout=limit)
    return Rebased(session, api_url) if api_url else session


def x_client(bearer_token: str, session: Any) -> AsyncClient:
    client = AsyncClient(bearer_token=bearer_token, return_type=aiohttp.ClientResponse)
    client.session = session
    return client


def to_mention(tweet: Mapping[str, Any], includes: Mapping[str, Any]) -> Mention:
    """A tweet of API v2 with its `includes` (users, referenced tweets) as a `Mention`.

    Only the id and the time are required (a `ValueError` without them); any other field of
    the wrong shape (a null, a numeric username, "12k" followers) reads as absent."""
    users = _by_id(includes.get("users"))
    tweets = _by_id(includes.get("tweets"))
    author = _found(users, tweet.get("author_id"))
    username = text_or_none(author.get("username"))
    replied_id = tweet.get("in_reply_to_user_id")
    if replied_id is None:  # a quote answers the quoted post's author too
        for ref in _objects(tweet.get("referenced_tweets")):
            if ref.get("type") == "quoted":
                replied_id = _found(tweets, ref.get("id")).get("author_id")
    replied = text_or_none(_found(users, replied_id).get("username"))
    tweet_id, created = tweet.get("id"), tweet.get("created_at")
    if not isinstance(tweet_id, str | int) or not _DIGITS.fullmatch(str(tweet_id)):
        raise ValueError("a tweet without a numeric id")
    if not isinstance(created, str):
        raise ValueError(f"tweet {tweet_id} has no created_at")
    lang = text_or_none(tweet.get("lang"))
    text = text_or_none(_object(tweet.get("note_tweet")).get("text"), MAX_TEXT)
    return Mention(
        id=f"x:{tweet_id}",
        source="x",
        created_at=parse_time(created),
        text=text or text_or_none(tweet.get("text"), MAX_TEXT) or "",
        author=username,
        author_followers=plausible_count(
            _object(author.get("public_metrics")).get("followers_count")
        ),
        url=f"https://x.com/{username or 'i'}/status/{tweet_id}",
        lang=lang.lower() if lang else None,
        in_reply_to_author=replied,
        engagement=sum(
            plausible_count(count)
            for name, count in _object(tweet.get("public_metrics")).items()
            if name in INTERACTIONS
        ),
    )


def _object(value: object) -> Mapping[str, Any]:
    """A JSON object of the payload, or an empty one when it is anything else."""
    return value if isinstance(value, Mapping) else {}


def _by_id(value: object) -> dict[str, Mapping[str, Any]]:
    """The objects of an `includes` list by their ids (those without an id left out)."""
    return {key: o for o in _objects(value) if (key := _id(o.get("id"))) is not None}


def _found(table: Mapping[str, Mapping[str, Any]], key: object) -> Mapping[str, Any]:
    """The object of `table` under `key`, or an empty one (no such key, or a key of the wrong
    shape, a list say)."""
    found = _id(key)
    return table.get(found, {}) if found is not None else {}


def _id(value: object) -> str | None:
    """An id as X writes it (a string of digits; a number read as one), else None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def _objects(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects of a payload's list (none when it is not a list)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def posted_at(tweet_id: str) -> float:
    """When a tweet was posted (seconds since the epoch), read from its snowflake id."""
    return (int(tweet_id) >> 22) / 1000 + SNOWFLAKE_EPOCH


def _number(mention: Mention) -> int:
    """The tweet id of a mention from X, as a number (ids grow with time)."""
    return int(mention.id.removeprefix("x:"))


class _Connection(AsyncStreamingClient):  # type: ignore[misc]
    """tweepy's filtered stream, made to end (not retry or sleep) on any error: lines go to a
    queue; the source reconnects with its own back-off."""

    def __init__(self, token: str, session: Any, lines: asyncio.Queue[bytes | None]) -> None:
        super().__init__(token, return_type=dict, max_retries=0)
        self.session = session
        self.lines = lines
        self.connected = asyncio.Event()
        self.error: str | None = None

    async def on_connect(self) -> None:
        self.connected.set()

    async def on_data(self, raw_data: bytes) -> None:
        await self.lines.put(raw_data)

    async def on_keep_alive(self) -> None:
        await self.lines.put(b"")

    async def on_request_error(self, status_code: int) -> None:
        raise ConnectionError(f"the stream answered HTTP {status_code}")

    async def on_connection_error(self) -> None:
        raise ConnectionError("the stream connection failed or timed out")

    async def on_closed(self, resp: object) -> None:
        raise ConnectionError("X closed the stream")

    async def on_exception(self, exception: Exception) -> None:
        self.error = str(exception) or type(exception).__name__

    async def on_disconnect(self) -> None:
        await self.lines.put(None)


class XSource(LiveSource):
    def __init__(
        self,
        settings: XSettings,
        brands: Sequence[Brand],
        store: Store | None,
        *,
        bearer_token: str,
        stall_after: float = 300.0,
        request_timeout: float = REQUEST_TIMEOUT,
        **timing: Any,
    ) -> None:
        super().__init__("x", store, stall_after=stall_after, **timing)
        self.settings = settings
        self.queries = {b.id: x_query(b, retweets=settings.retweets) for b in brands}
        self.request_timeout = request_timeout
        self._token = bearer_token
        self._expired: set[str] = set()  # cursors too old for X, told once
        self._unreadable = Deduper(UNREADABLE_TOLD)  # tweets skipped, told once each
        if too_long := overlong_queries(self.queries):
            raise SourceSetupError(f"sources.x: {'; '.join(too_long)}")

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[object]:
        session = http_session(self.settings.api_url, self.request_timeout)
        try:
            yield x_client(self._token, session)
        finally:
            await session.close()

    def _client(self) -> AbstractAsyncContextManager[object]:
        return self._open()

    def _loops(self, client: object) -> list[Loop]:
        if self.settings.mode == "stream":
            return [lambda: self._stream(client)]
        return [partial(self._poll, client)]

    async def _poll(self, client: Any) -> AsyncIterator[Found | Fetched]:
        """Every brand's search, one poll for all (so that all come in time order), forever."""
        searches = [(query, f"search:{brand}") for brand, query in self.queries.items()]
        while True:
            started = self.clock()
            async for found in self._search(client, searches):
                yield found
            yield Fetched(started)
            await self.sleep(self.settings.search_every.total_seconds())

    async def _search(
        self, client: Any, searches: Sequence[tuple[str, str]]
    ) -> AsyncIterator[Found]:
        """One poll: for each (query, cursor key), every tweet after that key's cursor (all
        pages); then every tweet found, once, oldest first; then each cursor moves to the newest
        its queries found. Cursors move only once the tweets before them are handed over."""
        since = {key: self.position.get(key, "") for _, key in searches}
        found: dict[int, tuple[Mention, str]] = {}
        newest: dict[str, int] = {}
        refused: dict[str, str] = {}  # key → why X refused one of its queries
        for query, key in searches:
            try:
                mentions = [m async for m in self._pages(client, query, since[key])]
            except BadRequest as exc:  # this query's own fault: the others go on
                refused[key] = "; ".join(map(str, exc.api_messages)) or str(exc)
                continue
            for mention in mentions:
                number = _number(mention)
                found.setdefault(number, (mention, key))
                newest[key] = max(newest.get(key, 0), number)
        self._report(refused)
        for number in sorted(found):
            mention, key = found[number]
            yield mention, key, since[key]
        for key, number in newest.items():
            if key not in refused:
                self.position[key] = str(number)
                yield None, key, str(number)

    def _report(self, refused: Mapping[str, str]) -> None:
        """A poll is a success only when X took every query; a refused one (400: it will not
        pass on its own) is logged and keeps the source failing, so it shows stalled and ops
        are told, while the other brands' tweets still flow."""
        if not refused:
            self._health.success()
            return
        for key, why in refused.items():
            log.error("x.search_refused", search=key, error=why)
        self._health.failure(
            "X refused the search for " + "; ".join(f"{k} ({why})" for k, why in refused.items())
        )

    async def _pages(self, client: Any, query: str, since: str) -> AsyncIterator[Mention]:
        """The tweets of every page of one search after `since` (none: the backfill)."""
        params: dict[str, Any] = {"max_results": 100, **FIELDS, **self._window(since)}
        while True:
            body = await self._get(client.search_recent_tweets, query, **params)
            includes = _object(body.get("includes"))
            for tweet in _objects(body.get("data")):
                if (mention := self._readable(tweet, includes)) is not None:
                    yield mention
            token = body.get("meta", {}).get("next_token")
            if not token:
                return
            params["next_token"] = token

    def _readable(self, tweet: Mapping[str, Any], includes: Mapping[str, Any]) -> Mention | None:
        """The tweet as a mention; None when it has no usable id or time (one such tweet must
        not stop the poll or the stream), logged once though every poll finds it again."""
        try:
            return to_mention(tweet, includes)
        except (ValueError, TypeError, LookupError) as exc:  # e.g. a list where an id goes
            tweet_id = str(tweet.get("id"))[:40]
            if self._unreadable.first_time(tweet_id):
                log.warning("x.tweet_unreadable", tweet=tweet_id, error=str(exc)[:200])
            return None

    def _window(self, since: str) -> dict[str, str]:
        """Where a search starts: after `since` while X takes it, else at a time (a first
        start's backfill), never further back than `REACH`. A cursor whose tweet is older (a
        quiet week, or a week stopped: it moves only when something is found) is searched from
        `REACH` ago, as X would refuse it on every poll; what came between is out of reach."""
        now = self.clock()
        if since and posted_at(since) > now - REACH:
            return {"since_id": since}
        if since and since not in self._expired:
            self._expired.add(since)
            log.warning("x.cursor_expired", since_id=since, searching_from_days_ago=REACH / 86_400)
        back = REACH if since else min(self.settings.backfill.total_seconds(), REACH)
        start = datetime.fromtimestamp(now - back, UTC)
        return {"start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ")}

    async def _get(self, call: Callable[..., Any], *args: Any, **params: Any) -> dict[str, Any]:
        """One API call, paced by its rate-limit headers; 429 → `RateLimited` until the reset."""
        try:
            response: aiohttp.ClientResponse = await call(*args, **params)
        except TooManyRequests as exc:
            wait = retry_after(exc.response.headers, self.clock())
            raise RateLimited("X answered 429", wait) from exc
        except TimeoutError as exc:
            raise TimeoutError(f"X did not answer within {self.request_timeout:g}s") from exc
        body = await response.json(loads=orjson.loads)
        if not isinstance(body, dict):
            raise ValueError("X answered with something other than a JSON object")
        if response.headers.get("x-rate-limit-remaining") == "0":
            wait = retry_after({"x-rate-limit-reset": response.headers.get(
                "x-rate-limit-reset", "")}, self.clock())  # fmt: skip
            await self.sleep(wait if wait is not None else 60.0)
        return body

    async def _stream(self, client: Any) -> AsyncIterator[Found | Fetched]:
        """The filtered stream; after each connect, search fills in what was missed (a search
        per brand: their queries joined would pass X's length limit), and only then is the
        connect a success, so a failing catch-up backs off and shows. Once caught up, what
        arrives (a keep-alive too) says the stream is current, every `STREAM_PROGRESS`."""
        await self._sync_rules()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1_000)
        session = http_session(self.settings.api_url, STREAM_SILENCE, stream=True)
        connection = _Connection(self._token, session, lines)
        task = connection.filter(**FIELDS)
        try:
            await self._connected(connection, task)
            said = self.clock()  # what is posted from now on comes by the stream
            catch_up = [(query, "stream") for query in self.queries.values()]
            async for found in self._search(client, catch_up):
                yield found
            yield Fetched(said)
            while (line := await lines.get()) is not None:
                self._health.success()
                if (now := self.clock()) - said >= STREAM_PROGRESS:
                    said = now
                    yield Fetched(now)
                if line:
                    found_line = self._line(line)
                    if found_line is not None:
                        yield found_line
            raise ConnectionError(connection.error or "the stream ended")
        finally:
            connection.disconnect()
            await asyncio.gather(task, return_exceptions=True)

    @staticmethod
    async def _connected(connection: _Connection, task: asyncio.Task[None]) -> None:
        """Until the stream is connected; a connect X refuses (the stream task ends first, its
        error noted) raises, so the source backs off and shows failing rather than waiting for
        ever."""
        connected = asyncio.ensure_future(connection.connected.wait())
        try:
            await asyncio.wait({connected, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if not connection.connected.is_set():
            raise ConnectionError(connection.error or "the stream ended before it connected")

    def _line(self, line: bytes) -> Found | None:
        try:
            body = _object(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            self._health.failure(f"a stream line could not be read: {type(exc).__name__}")
            return None
        data = body.get("data")
        if not isinstance(data, Mapping):  # an error or notice of X's, not a tweet
            self._health.failure("a stream line carried no tweet")
            return None
        mention = self._readable(data, _object(body.get("includes")))
        if mention is None:
            return None
        current = self.position.get("stream")
        if current is None or _number(mention) > int(current):
            self.position["stream"] = str(_number(mention))
        return mention, "stream", self.position["stream"]

    async def _sync_rules(self) -> None:
        """Make the stream's crisiswatch rules match the brands (other rules are left alone)."""
        session = http_session(self.settings.api_url, self.request_timeout)
        rules = AsyncStreamingClient(self._token, return_type=dict)
        rules.session = session
        try:
            wanted = {f"{RULE_TAG}{brand}": query for brand, query in self.queries.items()}
            existing = (await rules.get_rules()).get("data", [])
            ours = [r for r in existing if str(r.get("tag", "")).startswith(RULE_TAG)]
            stale = [r["id"] for r in ours if wanted.get(r["tag"]) != r["value"]]
            present = {r["tag"] for r in ours if wanted.get(r["tag"]) == r["value"]}
            if stale:
                await rules.delete_rules(stale)
            missing = [StreamRule(value=v, tag=t) for t, v in wanted.items() if t not in present]
            if missing:
                await rules.add_rules(missing)
        except TooManyRequests as exc:
            raise RateLimited(
                "X answered 429", retry_after(exc.response.headers, self.clock())
            ) from exc
        finally:
            await session.close()
