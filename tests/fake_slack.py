"""A fake Slack Web API on 127.0.0.1 for the real slack-sdk client: records every call and can
answer with rate limits, server errors, slow replies or Slack errors on demand, or hold a call
(taken or not) unanswered while a test kills the client."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from local_server import serve

TOKEN = "xoxb-test-token"
AT = "_posted_at"  # the wall time a message was posted, kept beside its fields ("oldest" reads it)


@dataclass(slots=True)
class Call:
    method: str
    args: dict[str, Any]
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass(slots=True)
class Fault:
    method: str | None  # None: any method
    status: int = 200
    error: str | None = None
    retry_after: int | str | None = None  # the Retry-After header, as seconds or any text
    delay: float = 0.0
    times: int = 1


@dataclass(slots=True)
class Hold:
    """Keep the first call that `matches` unanswered until `FakeSlack.release()`; with `take`,
    Slack has acted on it (the message exists), else it never will. `reached` is set then."""

    matches: Callable[[str, dict[str, Any]], bool]
    take: bool
    reached: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeSlack:
    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    missing_channels: set[str] = field(default_factory=set)
    down_after: int | None = None  # after this many successful calls, every call gets a 500
    base_url: str = ""
    holds: list[Hold] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)  # slack-sdk reads history with GET
        app.router.add_post("/upload/{file_id}", self._upload)
        self._runner, url = await serve(app)
        self.base_url = f"{url}/api/"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(self, method: str | None = None, **fault: Any) -> None:
        """Answer the next `times` calls of `method` (any if None) with this fault."""
        self.faults.append(Fault(method, **fault))

    def hold(self, matches: Callable[[str, dict[str, Any]], bool], *, take: bool) -> Hold:
        held = Hold(matches, take)
        self.holds.append(held)
        return held

    def release(self) -> None:
        """Answer the held calls (to a client that is likely gone)."""
        self._released.set()

    def threads(self) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """What a reader of the channels sees: per incident (from the message metadata), its
        message's final text and blocks, and the texts of its thread replies in order."""
        seen: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for (channel, ts), message in sorted(self.messages.items()):
            if message.get("thread_ts"):
                continue
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            replies = [
                str(m.get("text"))
                for (where, _), m in sorted(self.messages.items())
                if where == channel and m.get("thread_ts") == ts
            ]
            shown = {"text": message.get("text"), "blocks": message.get("blocks")}
            seen[str(payload.get("incident"))] = (shown, replies)
        return seen

    def ok_calls(self, *methods: str) -> list[Call]:
        """The calls that succeeded, of these methods (all if none given)."""
        return [c for c in self.calls if c.ok and (not methods or c.method in methods)]

    def channel_id(self, channel: str) -> str:
        if channel.startswith(("C", "G")) and not channel.startswith("#"):
            return channel
        return self.channels.setdefault(channel, f"C{len(self.channels) + 1:08d}")

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update((k, v) for k, v in (await request.post()).items() if isinstance(v, str))
        for key in ("blocks", "files"):
            if isinstance(args.get(key), str):
                args[key] = orjson.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await self._args(request)
        call = Call(method, args)
        self.calls.append(call)
        fault = self._fault(method)
        if self.down_after is not None and len(self.ok_calls()) >= self.down_after:
            fault = Fault(method, status=500)
        if fault is not None:
            call.status, call.error = fault.status, fault.error or "fatal_error"
            if fault.delay:
                await asyncio.sleep(fault.delay)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            body = {"ok": False, "error": fault.error or "fatal_error"}
            return web.json_response(body, status=fault.status, headers=headers)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            call.error = "invalid_auth"
            return web.json_response({"ok": False, "error": "invalid_auth"})
        held = next((h for h in self.holds if h.matches(method, args)), None)
        if held is not None:
            self.holds.remove(held)
            call.error = "held"
            if held.take:
                self._answer(method, args, request)
            held.reached.set()
            await self._released.wait()
            return web.json_response({"ok": False, "error": "held"})
        answer = self._answer(method, args, request)
        call.error = None if answer.get("ok") else str(answer.get("error"))
        return web.json_response(answer)

    def _fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method in (None, method) and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _answer(self, method: str, args: dict[str, Any], request: web.Request) -> dict[str, Any]:
        if method == "chat.postMessage":
            if args["channel"] in self.missing_channels:
                return {"ok": False, "error": "channel_not_found"}
            channel = self.channel_id(args["channel"])
            ts = f"{1_700_000_000 + next(self._ts)}.000100"
            self.messages[(channel, ts)] = {**args, AT: time.time()}
            return {"ok": True, "channel": channel, "ts": ts}
        if method == "conversations.history":
            channel = self.channel_id(args["channel"])
            oldest = float(args.get("oldest", 0))  # compared with when a message was posted
            history = [
                {"ts": ts, "text": m.get("text", ""), "metadata": m.get("metadata")}
                for (where, ts), m in sorted(self.messages.items(), reverse=True)
                if where == channel and m[AT] >= oldest
            ]
            return {"ok": True, "messages": history}
        if method == "conversations.replies":
            channel = self.channel_id(args["channel"])
            oldest = float(args.get("oldest", 0))
            thread = [
                {"ts": ts, "text": m.get("text", ""), "metadata": m.get("metadata")}
                for (where, ts), m in sorted(self.messages.items())
                if where == channel and args["ts"] in (ts, m.get("thread_ts")) and m[AT] >= oldest
            ]
            return {"ok": True, "messages": thread}
        if method == "chat.update":
            key = (args["channel"], args["ts"])
            if key not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.messages[key].update(args)
            return {"ok": True, "channel": key[0], "ts": key[1]}
        if method == "files.getUploadURLExternal":
            file_id = f"F{next(self._ts)}"
            base = f"{request.scheme}://{request.host}"
            return {"ok": True, "file_id": file_id, "upload_url": f"{base}/upload/{file_id}"}
        if method == "files.completeUploadExternal":
            return {"ok": True, "files": [{"id": f["id"]} for f in args["files"]]}
        return {"ok": True}

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        self.calls.append(Call("upload", {"file_id": request.match_info["file_id"], "bytes": data}))
        return web.Response(text="OK", content_type="text/plain")
