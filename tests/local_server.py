"""Serving a fake API on 127.0.0.1 at a free port, for the fake servers the tests start."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import pytest
from aiohttp import web


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app` on 127.0.0.1 at a port the OS picks; its runner (to `cleanup()`) and
    `http://host:port`."""
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


class _Fake(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


F = TypeVar("F", bound=_Fake)


def running(make: Callable[[], F]) -> Any:
    """A fixture (assign it to the name the tests ask for): the fake server `make()` returns,
    started for a test and closed after it."""

    @pytest.fixture
    async def fixture() -> AsyncIterator[F]:
        server = make()
        await server.start()
        try:
            yield server
        finally:
            await server.close()

    return fixture
