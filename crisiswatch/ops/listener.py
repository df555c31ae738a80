"""Serving an aiohttp app on `host:port` with bounded connections: the helper of HTTP ingest,
the ops endpoint and Slack's interactivity endpoint.

Each connection holds a file descriptor, and idle ones cost a client nothing: without limits a
flood of them (no request, or request headers sent a byte at a time) ran the process out of
descriptors, so every server, the config watcher and outbound calls failed together. So each
server holds at most `max_connections` at once. Past that, a new connection takes the place of
the one idle longest: one that has not sent a request head yet, or is kept alive between
requests (a real client sends its request at once, so that is a flood's, most likely, and a
flood cannot keep /healthz or ingest from answering); when every held connection is in the
middle of a request, the new one is closed. Either is counted in `REFUSED`
and logged at most once a minute. A connection must deliver its first request's head within
`header_timeout`, then each request's body within `body_timeout` of its head (a body sent a
byte at a time would otherwise hold its connection, and a place under the cap, for as long as
its sender liked), and one idle between requests is closed after `keepalive_timeout`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web
from aiohttp.log import access_logger
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler

from crisiswatch.config import host_port

log = structlog.get_logger(__name__)
LOG_EVERY = 60.0  # seconds between two log lines about refused connections
REFUSED: Counter[str] = Counter()  # connections closed for being over the cap, by server name


@dataclass(frozen=True, slots=True)
class Limits:
    """One server's bounds; tests set small ones."""

    max_connections: int = 100  # per server; the unit's LimitNOFILE leaves room for all three
    header_timeout: float = 10.0  # seconds from connecting to a whole first request head
    body_timeout: float = 60.0  # seconds from a request's head to the end of its body
    keepalive_timeout: float = 75.0  # idle seconds between requests; above a proxy's usual 60


DEFAULT_LIMITS = Limits()


@asynccontextmanager
async def serving(
    app: web.Application,
    listen: str,
    *,
    name: str,
    limits: Limits = DEFAULT_LIMITS,
    shutdown_timeout: float = 60.0,
    access_log: bool = False,
) -> AsyncIterator[tuple[str, int]]:
    """Serve `app` on `listen` (`host:port`, port 0: any free one) for the block's duration;
    yields the host and port it listens on."""
    app.middlewares.append(_heard)
    runner = web.AppRunner(
        app,
        access_log=access_logger if access_log else None,
        keepalive_timeout=limits.keepalive_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    REFUSED[name] += 0  # the metric shows 0 for each running server
    assert runner.server is not None  # set up above
    guard = _Guard(name, limits, runner.server)
    try:
        host, port = host_port(listen)
        # our own listener rather than a TCPSite, to stand between asyncio and aiohttp
        listener = await asyncio.get_running_loop().create_server(guard.connection, host, port)
        try:
            yield listener.sockets[0].getsockname()[:2]
        finally:
            listener.close()  # no new connections while the runner closes the others
            guard.close()
    finally:
        await runner.cleanup()


@web.middleware
async def _heard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request head arrived: its connection's header deadline is met, and its body's starts."""
    transport = request.transport
    if transport is None or not isinstance(connection := transport.get_protocol(), _Connection):
        return await handler(request)
    connection.heard()
    connection.await_body(request.content)
    try:
        return await handler(request)
    finally:
        connection.rested()


class _Guard:
    """One server's connection count, and its refusals logged at most once a minute."""

    def __init__(
        self, name: str, limits: Limits, make_handler: Callable[[], asyncio.Protocol]
    ) -> None:
        self.name = name
        self.limits = limits
        self.make_handler = make_handler  # aiohttp's request handler for a connection
        self.open = 0
        # held connections with no request in progress (none yet, or kept alive after one),
        # the one idle longest first
        self.idle: dict[_Connection, None] = {}
        self._untold = 0  # refused since the last log line
        self._next_line: asyncio.TimerHandle | None = None

    def connection(self) -> _Connection:
        return _Connection(self)

    def make_room(self) -> bool:
        """Close the held connection idle longest, if one is idle."""
        if not self.idle:
            return False
        next(iter(self.idle)).drop()
        return True

    def refuse(self) -> None:
        REFUSED[self.name] += 1
        self._untold += 1
        if self._next_line is None:  # none logged in the last minute
            self._tell()

    def _tell(self) -> None:
        """Log the refusals not told yet, if any; the next line waits a minute."""
        self._next_line = None
        if self._untold:
            self._log()
            self._next_line = asyncio.get_running_loop().call_later(LOG_EVERY, self._tell)

    def close(self) -> None:
        if self._next_line is not None:
            self._next_line.cancel()
        if self._untold:
            self._log()

    def _log(self) -> None:
        log.warning(
            "http.connections_refused",
            server=self.name,
            refused=self._untold,
            limit=self.limits.max_connections,
        )
        self._untold = 0


class _Connection(asyncio.Protocol):
    """Stands between asyncio and aiohttp's handler for one connection: over the cap it makes
    room or is closed at once, and it is closed when no request head came within
    `header_timeout` (a keep-alive connection's later requests are aiohttp's
    `keepalive_timeout`'s)."""

    def __init__(self, guard: _Guard) -> None:
        self.guard = guard
        self.handler: asyncio.Protocol | None = None  # none while refused
        self.transport: asyncio.BaseTransport | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.counted = False  # among the server's `open`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        if guard.open >= guard.limits.max_connections and not guard.make_room():
            transport.close()
            guard.refuse()
            return
        guard.open += 1
        self.counted = True
        self.transport = transport
        guard.idle[self] = None
        self.deadline = asyncio.get_running_loop().call_later(
            guard.limits.header_timeout, transport.close
        )
        self.handler = guard.make_handler()
        self.handler.connection_made(transport)

    def heard(self) -> None:
        """A request head came (or the connection ends): no deadline, and not idle."""
        self._cancel_deadline()
        self.guard.idle.pop(self, None)

    def rested(self) -> None:
        """Its request is answered: idle again, the last to go of the idle ones."""
        if self.counted:
            self.guard.idle[self] = None

    def await_body(self, body: StreamReader) -> None:
        """Close the connection unless the request's body has all come within `body_timeout`
        (at once for a request with none)."""
        assert self.transport is not None  # a request came on it
        self.deadline = asyncio.get_running_loop().call_later(
            self.guard.limits.body_timeout, self.transport.close
        )
        body.on_eof(self._cancel_deadline)

    def _cancel_deadline(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def drop(self) -> None:
        """Closed to make room for a newer connection: it no longer counts from now."""
        self._uncount()
        self.guard.refuse()
        assert self.transport is not None  # held connections have one
        self.transport.close()

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.guard.open -= 1
        self.heard()

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handler is not None:
            self._uncount()
            self.handler.connection_lost(exc)
