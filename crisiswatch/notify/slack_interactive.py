"""Button clicks reach the daemon by Socket Mode (no public URL) or by an HTTP endpoint.

Both are thin adapters: they authenticate the request, answer Slack at once, and hand the
payload to `Feedback`. The HTTP endpoint accepts only requests signed with the app's signing
secret within the last five minutes; anything else (a missing or unreadable timestamp or
signature too) gets 401.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from crisiswatch.notify.feedback import Feedback
from crisiswatch.ops.listener import DEFAULT_LIMITS, Limits, serving

log = structlog.get_logger(__name__)
ACTIONS_PATH = "/slack/actions"


class _Background:
    """Runs handlers after Slack has had its answer, keeping a reference until they end."""

    def __init__(self, feedback: Feedback) -> None:
        self.feedback = feedback
        self.tasks: set[asyncio.Task[None]] = set()

    def handle(self, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._run(payload))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, payload: dict[str, Any]) -> None:
        try:
            await self.feedback.payload(payload)
        except Exception:
            log.exception("feedback.failed")

    async def wait(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)


def actions_app(feedback: Feedback, signing_secret: str) -> web.Application:
    """The HTTP interactivity endpoint: POST /slack/actions, signed by Slack."""
    verifier = SignatureVerifier(signing_secret)
    background = _Background(feedback)

    async def actions(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        # the verifier's compare_digest raises TypeError on a non-ASCII signature
        if not (
            _readable(stamp)
            and signature.isascii()
            and verifier.is_valid(body=body, timestamp=stamp, signature=signature)
        ):
            log.warning("slack.bad_signature", remote=request.remote)
            return web.Response(status=401, text="invalid signature")
        form = await request.post()
        raw = form.get("payload")
        try:
            payload = orjson.loads(raw if isinstance(raw, str) else "")
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="no payload")
        background.handle(payload)
        return web.Response(status=200)

    async def drain(_: web.Application) -> None:
        await background.wait()

    app = web.Application(client_max_size=256 * 1024)
    app.router.add_post(ACTIONS_PATH, actions)
    app.on_cleanup.append(drain)
    return app


def _readable(stamp: str) -> bool:
    """A timestamp the verifier can read: a few ASCII digits (it calls `int()` on it)."""
    return stamp.isascii() and stamp.isdigit() and len(stamp) <= 12


@asynccontextmanager
async def serve_http(
    app: web.Application, listen: str, limits: Limits = DEFAULT_LIMITS
) -> AsyncIterator[str]:
    """Serve `app` on `host:port` for the block's duration; yields the URL it listens on."""
    async with serving(app, listen, name="slack", limits=limits, access_log=True) as (host, port):
        url = f"http://{host}:{port}{ACTIONS_PATH}"
        log.info("slack.interactivity_listening", url=url)
        yield url


@asynccontextmanager
async def socket_mode(
    feedback: Feedback, app_token: str, web_client: AsyncWebClient
) -> AsyncIterator[SocketModeClient]:
    """A Socket Mode connection that acknowledges every envelope (Slack redelivers those it
    does not hear back about), then handles the interactive ones."""
    background = _Background(feedback)

    async def on_request(client: AsyncBaseSocketModeClient, request: SocketModeRequest) -> None:
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))
        if request.type == "interactive":
            background.handle(request.payload)

    client = SocketModeClient(app_token=app_token, web_client=web_client)
    client.socket_mode_request_listeners.append(on_request)
    try:
        # connect() tries again until Slack takes the connection: a stop meanwhile must
        # still close the client (its aiohttp session was opened with it)
        await client.connect()  # type: ignore[no-untyped-call]
        yield client
    finally:
        await client.close()  # type: ignore[no-untyped-call]
        await background.wait()
