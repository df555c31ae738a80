"""A fake Reddit (OAuth token endpoint, listing API and users' about pages) on 127.0.0.1 for the
real asyncpraw client: submissions and comments in id order, `before` listings and `after` pages
like Reddit's, site-wide search, authors' karma, and faults on demand (429 with or without
rate-limit headers, 5xx, malformed JSON, slow replies, dropped connections, expired tokens)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from local_server import serve

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"


def base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while number:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
    return text or "0"


@dataclass(slots=True)
class Fault:
    path: str  # a prefix of the request path ("" matches any)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    malformed: bool = False
    drop: bool = False
    delay: float = 0.0
    times: int = 1


@dataclass
class FakeReddit:
    things: list[dict[str, Any]] = field(default_factory=list)  # {"kind", "data"}, oldest first
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → about's "data"
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)  # listings answered with their contents
    tokens_issued: int = 0
    url: str = ""
    _valid_tokens: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(36**4))
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/access_token", self._token)
        app.router.add_get("/r/{subreddits}/{listing}", self._listing)
        app.router.add_get("/r/{subreddits}/{listing}/", self._listing)
        app.router.add_get("/user/{name}/about", self._about)
        app.router.add_get("/user/{name}/about/", self._about)
        self._runner, self.url = await serve(app)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(self, path: str = "", **fault: Any) -> None:
        self.faults.append(Fault(path, **fault))

    def expire_token(self) -> None:
        """The tokens in use stop working; the client must fetch a new one."""
        self._valid_tokens.clear()

    def user(self, name: str, *, link_karma: int, comment_karma: int) -> None:
        self.users[name] = {
            "name": name, "id": f"u{len(self.users)}", "link_karma": link_karma,
            "comment_karma": comment_karma, "total_karma": link_karma + comment_karma,
            "created_utc": 1_500_000_000.0, "is_suspended": False, "verified": True,
        }  # fmt: skip

    def post(self, text: str, *, created: float, author: str = "alice", sub: str = "brand") -> str:
        number = next(self._ids)
        data = {
            "id": base36(number), "name": f"t3_{base36(number)}", "title": text, "selftext": "",
            "author": author, "created_utc": created, "score": 12, "subreddit": sub,
            "permalink": f"/r/{sub}/comments/{base36(number)}/post/", "num_comments": 4,
        }  # fmt: skip
        self.things.append({"kind": "t3", "data": data})
        return f"reddit:t3_{data['id']}"

    def comment(
        self, text: str, *, created: float, parent: str, author: str = "bob", sub: str = "brand"
    ) -> str:
        number = next(self._ids)
        post = next(t for t in self.things if t["data"]["name"] == parent.removeprefix("reddit:"))
        data = {
            "id": base36(number), "name": f"t1_{base36(number)}", "body": text, "author": author,
            "created_utc": created, "score": 3, "subreddit": sub, "parent_id": post["data"]["name"],
            "link_id": post["data"]["name"], "link_author": post["data"]["author"],
            "permalink": f"/r/{sub}/comments/x/post/{base36(number)}/",
        }  # fmt: skip
        self.things.append({"kind": "t1", "data": data})
        return f"reddit:t1_{data['id']}"

    async def listening(self, *paths: str) -> None:
        """Wait until each listing (default: the test subreddit's posts and comments) has been
        answered once: a stream's first answer marks what existed before it, which it skips, so
        a test's new posts must come after it, however slowly the client started."""
        wanted = paths or ("/r/brand/new", "/r/brand/comments")
        async with asyncio.timeout(10):
            while not all(any(p.startswith(w) for p in self.listed) for w in wanted):  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async def listing_served(self, *, after: int, times: int, path: str) -> None:
        """Wait until `path` has been listed `times` more times since `listed` had `after`
        entries."""
        async with asyncio.timeout(10):
            while sum(p.startswith(path) for p in self.listed[after:]) < times:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        for fault in self.faults:
            if request.path.startswith(fault.path) and fault.times > 0:
                fault.times -= 1
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.drop:
                    response = web.StreamResponse(headers={"Content-Type": "application/json"})
                    response.content_length = 1000
                    await response.prepare(request)
                    await response.write(b'{"kind": "Listing", "da')
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if fault.malformed:
                    body = b'{"kind": "Listing", "da'
                    return web.Response(body=body, content_type="application/json")
                if fault.status != 200:
                    body = orjson.dumps({"message": "fault", "error": fault.status})
                    return web.Response(
                        status=fault.status, body=body, headers=fault.headers,
                        content_type="application/json",
                    )  # fmt: skip
                return None  # only slow: then answered as usual
        return None

    async def _refused(self, request: web.Request) -> web.StreamResponse | None:
        """A fault, or 401 for a token that is not (or no longer) valid; None: answer it."""
        self.requests.append(request.path)
        if (faulted := await self._fault(request)) is not None:
            return faulted
        given = request.headers.get("Authorization", "").removeprefix("bearer ")
        if given not in self._valid_tokens:
            return web.json_response({"message": "Unauthorized", "error": 401}, status=401)
        return None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path)
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"message": "Unauthorized", "error": 401}, status=401)
        self.tokens_issued += 1
        token = f"token-{self.tokens_issued}"
        self._valid_tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "bearer", "expires_in": 3600,
             "scope": "*"}
        )  # fmt: skip

    async def _about(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request)) is not None:
            return refused
        user = self.users.get(request.match_info["name"])
        if user is None:
            return web.json_response({"message": "Not Found", "error": 404}, status=404)
        return web.json_response({"kind": "t2", "data": user})

    async def _listing(self, request: web.Request) -> web.StreamResponse:
        if (refused := await self._refused(request)) is not None:
            return refused
        subs = set(request.match_info["subreddits"].lower().split("+"))
        listing = request.match_info["listing"]
        kind = {"new": "t3", "comments": "t1", "search": "t3"}.get(listing)
        if kind is None:
            raise web.HTTPNotFound()
        things = [
            t
            for t in self.things
            if t["kind"] == kind and ("all" in subs or t["data"]["subreddit"].lower() in subs)
        ]
        # Reddit: at most 100 items a request, newest first; `before` lists those just newer
        # than an item, `after` those just older (the answer's `after` names the next page's
        # anchor while older ones remain); an anchor that is gone (removed) lists nothing
        limit = min(int(request.query.get("limit", "25")), 100)
        names = [t["data"]["name"] for t in things]
        before, after = request.query.get("before"), request.query.get("after")
        more = None
        if before:
            start = names.index(before) + 1 if before in names else len(things)
            page = things[start : start + limit]
        else:
            end = (names.index(after) if after in names else 0) if after else len(things)
            page = things[max(0, end - limit) : end]
            more = page[0]["data"]["name"] if page and end - limit > 0 else None
        body = {"kind": "Listing", "data": {"after": more, "before": None,
                                            "children": list(reversed(page))}}  # fmt: skip
        self.listed.append(request.path)
        return web.Response(body=orjson.dumps(body), content_type="application/json")
