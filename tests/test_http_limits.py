"""The three HTTP servers (HTTP ingest, the ops endpoint, Slack's interactivity endpoint) bound
their connections: a cap per server, a deadline for the request head, an idle timeout."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import capture_all_logs

from crisiswatch.config import HttpIngestSettings
from crisiswatch.notify.feedback import Feedback
from crisiswatch.notify.slack_interactive import actions_app, serve_http
from crisiswatch.ops import http as ops_http
from crisiswatch.ops.listener import REFUSED, Limits
from crisiswatch.sources.http_ingest import HttpIngestSource
from crisiswatch.store import Store

TOKEN = "ingest-secret"
WAIT = 10.0  # seconds a test waits for what must happen at once (or after a 0.2 s timeout)


@dataclass(frozen=True)
class Kind:
    """How to start one of the servers, and a request it answers with `status`."""

    name: str  # its name in REFUSED and the log
    start: Callable[[Limits, Path], AbstractAsyncContextManager[int]]  # yields its port
    request: bytes
    status: bytes


@asynccontextmanager
async def ingest(limits: Limits, tmp_path: Path) -> AsyncIterator[int]:
    source = HttpIngestSource(HttpIngestSettings(listen="127.0.0.1:0"), token=TOKEN, limits=limits)

    async def read() -> None:
        async for _ in source.stream():
            pass

    task = asyncio.create_task(read())
    await source.listening.wait()
    assert source.address is not None
    try:
        yield source.address[1]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class AliveDaemon:
    def pipeline_alive(self) -> bool:
        return True


@asynccontextmanager
async def ops(limits: Limits, tmp_path: Path) -> AsyncIterator[int]:
    daemon: Any = AliveDaemon()  # /healthz asks only this
    async with ops_http.serve(daemon, "127.0.0.1:0", limits) as (_, port):
        yield port


@asynccontextmanager
async def slack(limits: Limits, tmp_path: Path) -> AsyncIterator[int]:
    store = await Store.open(tmp_path / "state.db")
    try:
        app = actions_app(Feedback(store, None, None), "signing-secret")
        async with serve_http(app, "127.0.0.1:0", limits) as url:
            yield int(url.rsplit(":", 1)[1].split("/")[0])
    finally:
        await store.close()


KINDS = [
    Kind(
        "http_ingest",
        ingest,
        b"POST /ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Length: 0\r\n\r\n",
        b"200",
    ),
    Kind("ops", ops, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
    Kind(
        "slack",
        slack,
        b"POST /slack/actions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"401",
    ),
]


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind:
    kind: Kind = request.param
    return kind


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def answer(connection: Connection, request: bytes) -> bytes:
    """Send `request`; the status code of the answer (read whole)."""
    reader, writer = connection
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    [length] = re.findall(rb"(?i)content-length: *(\d+)", head)
    await asyncio.wait_for(reader.readexactly(int(length)), WAIT)
    return head.split()[1]


async def closed(connection: Connection, wait: float = WAIT) -> bool:
    """The server closed the connection (True), or it is still open after `wait` (False)."""
    try:
        await asyncio.wait_for(connection[0].read(), wait)  # what is left, up to the end
    except TimeoutError:
        return False
    return True


def close(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()


async def test_an_idle_flood_cannot_keep_a_server_from_answering(
    kind: Kind, tmp_path: Path
) -> None:
    """Past `max_connections`, a new connection takes the place of the oldest held one that has
    sent no request head (a flood's: real clients send theirs at once), so the newest idle ones
    stay, each drop is counted and logged (a line for the first, then, here at the stop, one
    for the rest), and a real request still gets its answer."""
    before = REFUSED[kind.name]
    with capture_all_logs() as logs:
        async with kind.start(Limits(max_connections=3), tmp_path) as port:
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
            try:
                assert [await closed(c) for c in idle[:5]] == [True] * 5
                real = await asyncio.open_connection("127.0.0.1", port)
                idle.append(real)
                assert await answer(real, kind.request) == kind.status
                assert [await closed(c) for c in idle[5:6]] == [True]  # the oldest idle went
                assert not await closed(idle[7], wait=0.2)
            finally:
                close(idle)
    assert REFUSED[kind.name] == before + 6
    told = [e for e in logs if e["event"] == "http.connections_refused"]
    assert [(e["server"], e["limit"]) for e in told] == [(kind.name, 3)] * 2
    assert sum(e["refused"] for e in told) == 6


async def test_connections_kept_alive_make_room_too(kind: Kind, tmp_path: Path) -> None:
    """A flood of connections that each send one cheap request and then idle, kept alive,
    cannot lock real clients out either: the one idle longest makes way."""
    async with kind.start(Limits(max_connections=3), tmp_path) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            assert [await answer(c, kind.request) for c in idle] == [kind.status] * 3
            real = await asyncio.open_connection("127.0.0.1", port)
            idle.append(real)
            assert await answer(real, kind.request) == kind.status
            assert await closed(idle[0])
            assert not await closed(idle[2], wait=0.2)
        finally:
            close(idle)


READERS = [k for k in KINDS if k.name != "ops"]  # whose requests wait for their body


@pytest.mark.parametrize("kind", READERS, ids=[k.name for k in READERS])
async def test_past_the_cap_of_busy_connections_new_ones_are_closed(
    kind: Kind, tmp_path: Path
) -> None:
    """When every held connection is in the middle of a request (its body still coming), a
    new one is closed at once; one of them closing makes room for a new one. (The ops
    endpoint answers without reading a body, so its connections are never busy for long.)"""
    head = re.sub(rb"\r\nContent-Length: \d+", b"", kind.request.split(b"\r\n\r\n")[0])
    before = REFUSED[kind.name]
    async with kind.start(Limits(max_connections=3), tmp_path) as port:
        busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        extra: list[Connection] = []
        try:
            for _, writer in busy:
                writer.write(head + b"\r\nContent-Length: 1000\r\n\r\nsome of it")
            await asyncio.sleep(0.1)  # their heads are read
            extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
            assert [await closed(c) for c in extra] == [True] * 5
            assert not await closed(busy[0], wait=0.2)
            close(busy[:1])
            for _ in range(100):  # until the server has seen it close
                fresh = await asyncio.open_connection("127.0.0.1", port)
                try:
                    status = await answer(fresh, kind.request)
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    await asyncio.sleep(0.01)
                finally:
                    close([fresh])
            assert status == kind.status
        finally:
            close(busy + extra)
    assert REFUSED[kind.name] >= before + 5


@pytest.mark.parametrize("stall", ["head", "body"])
async def test_a_request_sent_a_byte_at_a_time_is_cut_off(
    kind: Kind, tmp_path: Path, stall: str
) -> None:
    """A client that trickles its request head is disconnected after `header_timeout`, one
    that trickles its body `body_timeout` after its head (it had held its connection, and a
    place under the cap, as long as it liked); one whose request comes whole is answered and
    stays usable after either."""
    if stall == "head":
        limits, start, trickle = Limits(header_timeout=0.3), kind.request[:20], kind.request[20:23]
    else:
        head = re.sub(rb"\r\nContent-Length: \d+", b"", kind.request.split(b"\r\n\r\n")[0])
        start = head + b"\r\nContent-Length: 1000\r\n\r\n"
        limits, trickle = Limits(body_timeout=0.3), b"xyz"
    async with kind.start(limits, tmp_path) as port:
        slow = await asyncio.open_connection("127.0.0.1", port)
        prompt: Connection | None = None
        try:
            slow[1].write(start)
            with contextlib.suppress(ConnectionError):  # cut off already, on a slow machine
                for byte in trickle:
                    slow[1].write(bytes([byte]))
                    await asyncio.sleep(0.05)
            # opened after the trickle, so its own head deadline has all its time
            prompt = await asyncio.open_connection("127.0.0.1", port)
            assert await answer(prompt, kind.request) == kind.status
            assert await closed(slow)
            await asyncio.sleep(0.4)  # past either timeout: the answered one stays usable
            assert await answer(prompt, kind.request) == kind.status
        finally:
            close([slow, *([prompt] if prompt else [])])


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    kind: Kind, tmp_path: Path
) -> None:
    """A connection idle after its request is closed after `keepalive_timeout`."""
    async with kind.start(Limits(keepalive_timeout=0.2), tmp_path) as port:
        idle = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await answer(idle, kind.request) == kind.status
            assert await closed(idle)
        finally:
            close([idle])
