"""A fake Slack that also speaks Socket Mode, for slack-sdk's real `SocketModeClient`.

`apps.connections.open`, called with the app-level token, answers with a `ws://127.0.0.1` URL;
the websocket there says `hello`, then carries the envelopes a test sends and collects the
client's acknowledgements (`{"envelope_id": ...}`). Every other Web API call goes to `FakeSlack`.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from fake_slack import Call, FakeSlack
from local_server import serve

APP_TOKEN = "xapp-test-token"
WAIT = 2.0  # seconds a test waits for the client


@dataclass
class FakeSocketMode(FakeSlack):
    app_token: str = APP_TOKEN
    connections: int = 0  # websockets accepted so far
    acks: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _envelopes: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _link_runner: web.AppRunner | None = None
    _link_url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/link/", self._link)
        self._link_runner, url = await serve(app)
        self._link_url = f"{url.replace('http://', 'ws://', 1)}/link/"
        return await super().start()

    async def close(self) -> None:
        for socket in self._sockets:
            await socket.close()
        if self._link_runner is not None:
            await self._link_runner.cleanup()
        await super().close()

    async def _api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["method"] != "apps.connections.open":
            return await super()._api(request)
        call = Call("apps.connections.open", {})
        self.calls.append(call)
        if request.headers.get("Authorization") != f"Bearer {self.app_token}":
            call.error = "invalid_auth"
            return web.json_response({"ok": False, "error": "invalid_auth"})
        ticket = f"{self._link_url}?ticket=t{self.connections + 1}"
        return web.json_response({"ok": True, "url": ticket})

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()  # answers the client's pings by itself
        await socket.prepare(request)
        self._sockets.append(socket)
        self.connections += 1
        await socket.send_str(
            orjson.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0CRISIS"},
                }
            ).decode()
        )
        self.connected.set()
        async for message in socket:
            if message.type is WSMsgType.TEXT:
                await self.acks.put(orjson.loads(message.data))
        return socket

    async def send(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Deliver one envelope on the newest connection; the client's acknowledgement of it
        (within two seconds)."""
        await asyncio.wait_for(self.connected.wait(), WAIT)
        envelope_id = f"env-{next(self._envelopes)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": False,
            "payload": payload,
        }
        await self._sockets[-1].send_str(orjson.dumps(envelope).decode())
        async with asyncio.timeout(WAIT):
            while True:
                ack = await self.acks.get()
                if ack.get("envelope_id") == envelope_id:
                    return ack
