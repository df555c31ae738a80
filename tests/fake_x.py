"""A fake X API v2 on 127.0.0.1 for tweepy's async client: recent search with `since_id`,
`start_time` and pages, the filtered stream and its rules, rate-limit headers, and faults on
demand (429 with or without a reset header, 5xx, malformed JSON, slow replies, dropped
connections). Tweet ids are snowflakes, as X's are: the time a tweet was posted is in the id.
Recent search keeps X's rules: it reaches 7 days back (by the fake's `clock`, the tests' present
unless a test moves it), refusing an older `since_id` or `start_time`, and a query is at most
512 characters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from local_server import serve
from source_testing import NOW

TOKEN = "fake-bearer-token"


MAX_QUERY = 512  # X: a recent-search query below Enterprise access is at most 512 characters
REACH = 7 * 86_400.0  # X: recent search covers the last 7 days; an older since_id/start_time: 400
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657  # X's ids: milliseconds since this, shifted 22 bits


def snowflake_time(tweet_id: str) -> float:
    """When the tweet of a (snowflake) id was posted, in seconds since the epoch."""
    return ((int(tweet_id) >> 22) + SNOWFLAKE_EPOCH_MS) / 1000


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


LONG_POST = 280  # X: a longer post's `text` is its first 280 characters; the whole is in
# `note_tweet.text`, sent only when tweet.fields asks for `note_tweet`


def _listed(query: Mapping[str, str], name: str) -> list[str]:
    """A comma-separated parameter's values."""
    return [value for value in query.get(name, "").split(",") if value]


def _only(thing: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    return {key: value for key, value in thing.items() if key in fields}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(slots=True)
class Fault:
    path: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    malformed: bool = False
    drop: bool = False
    delay: float = 0.0
    times: int = 1
    query: str = ""  # only for requests whose `query` parameter contains this


@dataclass
class FakeX:
    page_size: int = 3
    tweets: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    searches: list[dict[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each request X would refuse was
    url: str = ""
    clock: Callable[[], float] = lambda: NOW  # the present, for the 7 days search reaches back
    _last_id: int = 0
    _listeners: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/2/tweets/search/recent", self._search)
        app.router.add_get("/2/tweets/search/stream", self._stream)
        app.router.add_get("/2/tweets/search/stream/rules", self._get_rules)
        app.router.add_post("/2/tweets/search/stream/rules", self._post_rules)
        self._runner, self.url = await serve(app)
        return self.url

    async def close(self) -> None:
        self.drop_streams()
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(self, path: str, **fault: Any) -> None:
        self.faults.append(Fault(path, **fault))

    async def listening(self) -> None:
        """Until a stream client is connected."""
        while not self._listeners:  # noqa: ASYNC110 (the fake's own state)
            await asyncio.sleep(0.005)

    def drop_streams(self) -> None:
        for listener in self._listeners:
            listener.put_nowait(None)

    def user(self, username: str, followers: int = 10) -> str:
        user_id = str(1000 + len(self.users))
        self.users[user_id] = {"id": user_id, "username": username, "name": username,
                               "public_metrics": {"followers_count": followers}}  # fmt: skip
        return user_id

    def tweet(
        self,
        text: str,
        *,
        author: str,
        created: str,
        reply_to: str | None = None,
        quoting: str | None = None,
    ) -> str:
        """Post a tweet (`quoting`: the id, `x:…`, of the tweet it quotes); its mention id."""
        posted_ms = round(_time(created).timestamp() * 1000)
        self._last_id = max(self._last_id + 1, (posted_ms - SNOWFLAKE_EPOCH_MS) << 22)
        tweet: dict[str, Any] = {
            "id": str(self._last_id), "text": text[:LONG_POST], "author_id": author,
            "created_at": created, "lang": "en", "public_metrics": {"like_count": 3,
            "retweet_count": 1, "reply_count": 2, "quote_count": 0, "impression_count": 500},
        }  # fmt: skip
        if len(text) > LONG_POST:
            tweet["note_tweet"] = {"text": text}
        if reply_to:
            tweet["in_reply_to_user_id"] = reply_to
        if quoting:
            tweet["referenced_tweets"] = [{"type": "quoted", "id": quoting.removeprefix("x:")}]
        self.tweets.append(tweet)
        for listener in self._listeners:
            listener.put_nowait(tweet)
        return f"x:{tweet['id']}"

    def _shaped(
        self, tweets: list[dict[str, Any]], query: Mapping[str, str]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """`data` and `includes` as X answers them: only the default fields and those asked for
        (`note_tweet`, the whole text of a long post, among them); in `includes`, users for the
        author, replied-to and referenced tweets' author expansions, and the referenced tweets
        themselves only for `referenced_tweets.id`."""
        tweet_fields = {"id", "text", "edit_history_tweet_ids", *_listed(query, "tweet.fields")}
        user_fields = {"id", "name", "username", *_listed(query, "user.fields")}
        expansions = set(_listed(query, "expansions"))
        by_id = {t["id"]: t for t in self.tweets}
        referenced = [
            by_id[ref["id"]] for t in tweets for ref in t.get("referenced_tweets", ())
            if ref["id"] in by_id
        ]  # fmt: skip
        authors: set[str | None] = set()
        if "author_id" in expansions:
            authors |= {t["author_id"] for t in tweets}
        if "in_reply_to_user_id" in expansions:
            authors |= {t.get("in_reply_to_user_id") for t in tweets}
        if "referenced_tweets.id.author_id" in expansions:
            authors |= {t["author_id"] for t in referenced}
        includes: dict[str, Any] = {
            "users": [_only(self.users[i], user_fields) for i in sorted(authors - {None})
                      if i in self.users],
        }  # fmt: skip
        if "referenced_tweets.id" in expansions:
            includes["tweets"] = [_only(t, tweet_fields) for t in referenced]
        return [_only(t, tweet_fields) for t in tweets], includes

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        for fault in self.faults:
            if (
                request.path == fault.path
                and fault.query in request.query.get("query", "")
                and fault.times > 0
            ):
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    response = web.StreamResponse()
                    response.content_length = 1000
                    await response.prepare(request)
                    await response.write(b'{"data": [')
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if fault.malformed:
                    return web.Response(body=b'{"data": [', content_type="application/json")
                if fault.status != 200:
                    return web.json_response(
                        {"title": "fault", "detail": "injected", "status": fault.status},
                        status=fault.status, headers=fault.headers,
                    )  # fmt: skip
                return None  # only slow: then answered as usual
        return None

    async def _search(self, request: web.Request) -> web.StreamResponse:
        if (faulted := await self._fault(request)) is not None:
            return faulted
        query = dict(request.query)
        self.searches.append(query)
        if len(query.get("query", "")) > MAX_QUERY:
            return self._invalid(f"'query' must be at most {MAX_QUERY} characters")
        earliest = self.clock() - REACH
        if "since_id" in query and snowflake_time(query["since_id"]) < earliest:
            return self._invalid(
                f"Invalid 'since_id':'{query['since_id']}'. 'since_id' must be a tweet id "
                f"created after {_iso(earliest)}."
            )
        if "start_time" in query and _time(query["start_time"]).timestamp() < earliest:
            return self._invalid(
                f"Invalid 'start_time':'{query['start_time']}'. 'start_time' must be on or "
                f"after {_iso(earliest)}"
            )
        found = [t for t in reversed(self.tweets)]  # newest first
        if "since_id" in query:
            found = [t for t in found if int(t["id"]) > int(query["since_id"])]
        if "start_time" in query:
            start = _time(query["start_time"])
            found = [t for t in found if _time(t["created_at"]) >= start]
        start = int(query.get("next_token", "0"))
        page = found[start : start + self.page_size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page:
            meta.update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
        if start + self.page_size < len(found):
            meta["next_token"] = str(start + self.page_size)
        body: dict[str, Any] = {"meta": meta}
        if page:
            data, includes = self._shaped(page, request.query)
            body.update(data=data, includes=includes)
        headers = {"x-rate-limit-remaining": "100", "x-rate-limit-reset": "0"}
        return web.json_response(body, headers=headers)

    def _invalid(self, message: str) -> web.Response:
        """X's answer to a request with a parameter it refuses: 400 "Invalid Request"."""
        self.refused.append(message)
        return web.json_response(
            {"title": "Invalid Request", "type": "https://api.twitter.com/2/problems/invalid-request",
             "detail": "One or more parameters to your request was invalid.",
             "errors": [{"message": message}]}, status=400,
        )  # fmt: skip

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if (faulted := await self._fault(request)) is not None:
            return faulted
        listener: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._listeners.append(listener)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            await response.write(b"\r\n")  # keep-alive
            while (tweet := await listener.get()) is not None:
                (data,), includes = self._shaped([tweet], request.query)
                line = {"data": data, "includes": includes}
                await response.write(orjson.dumps(line) + b"\r\n")
            if request.transport is not None:
                request.transport.close()  # dropped mid-stream
        finally:
            self._listeners.remove(listener)
        return response

    async def _get_rules(self, request: web.Request) -> web.StreamResponse:
        if (faulted := await self._fault(request)) is not None:
            return faulted
        return web.json_response({"data": self.rules, "meta": {"result_count": len(self.rules)}})

    async def _post_rules(self, request: web.Request) -> web.StreamResponse:
        if (faulted := await self._fault(request)) is not None:
            return faulted
        body = await request.json()
        for rule in body.get("add", []):
            self.rules.append({"id": str(len(self.rules) + 1), **rule})
        gone = set(body.get("delete", {}).get("ids", []))
        self.rules = [r for r in self.rules if r["id"] not in gone]
        return web.json_response({"meta": {"summary": {}}})


def iso(seconds: float) -> str:
    """A time as X writes `created_at`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
