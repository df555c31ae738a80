"""Slack for a running daemon, from the settings: the notifier, interactivity, escalation and
the daily digest."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog

from crisiswatch.config import LiveSettings, Slack, secret
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.notify.digest import DailyDigest
from crisiswatch.notify.feedback import Escalator, Feedback, IncidentControl, Learner
from crisiswatch.notify.slack import SlackNotifier
from crisiswatch.notify.slack_interactive import actions_app, serve_http, socket_mode
from crisiswatch.store import Store

log = structlog.get_logger(__name__)


class SlackSetupError(RuntimeError):
    """Slack is enabled but cannot start (a missing secret); the message says what to set."""


_BOT_TOKEN = ("SLACK_BOT_TOKEN", "notify.slack")
_MODE_SECRET = {  # the secret each interactivity mode needs, and the setting that asks for it
    "http": ("SLACK_SIGNING_SECRET", "notify.slack.interactivity: http"),
    "socket": ("SLACK_APP_TOKEN", "notify.slack.interactivity: socket"),
}


def missing_secrets(slack: Slack) -> list[str]:
    """One line per secret `slack_running` would refuse to start without (for `doctor`)."""
    needed = [
        _BOT_TOKEN,
        *([_MODE_SECRET[slack.interactivity]] if slack.interactivity in _MODE_SECRET else []),
    ]
    problems = []
    for name, why in needed:
        try:
            _required(name, why)
        except SlackSetupError as exc:
            problems.append(str(exc))
    return problems


def _required(name: str, why: str) -> str:
    value = secret(name)
    if value is None:
        raise SlackSetupError(
            f"{why} needs {name}: set it in the environment or as the systemd credential "
            f"{name.lower()}"
        )
    return value


@dataclass(frozen=True, slots=True)
class SlackRuntime:
    """What `slack_running` runs: the notifier (none when Slack is disabled), the escalator and
    the daily digest."""

    notifiers: list[SlackNotifier]
    escalator: Escalator | None = None
    digest: DailyDigest | None = None


@asynccontextmanager
async def slack_running(
    live: LiveSettings,
    store: Store,
    history: SeriesHistory,
    learner: Learner,
    control: IncidentControl | None = None,
) -> AsyncIterator[SlackRuntime]:
    """The Slack notifier, with its clicks, escalations and daily digest handled while the
    block runs; on the way out, each rule's precision is logged. Each part reads the settings
    in force (`live`), so a reload reaches them all; whether Slack runs at all, its
    interactivity and its listen address are read once, here."""
    slack_settings = live.current.notify.slack
    if not slack_settings.enabled:
        yield SlackRuntime([])
        return
    slack = SlackNotifier(live, store, token=_required(*_BOT_TOKEN), history=history)
    feedback = Feedback(store, learner, slack)
    feedback.control = control
    async with AsyncExitStack() as stack:
        if slack_settings.interactivity == "http":
            signing = _required(*_MODE_SECRET["http"])
            app = actions_app(feedback, signing)
            await stack.enter_async_context(serve_http(app, slack_settings.http_listen))
        elif slack_settings.interactivity == "socket":
            token = _required(*_MODE_SECRET["socket"])
            await stack.enter_async_context(socket_mode(feedback, token, slack.client))
        escalator = Escalator(store, slack, live)  # idle while no route has escalate_after
        task = asyncio.create_task(escalator.run(), name="escalation")
        stack.push_async_callback(_stop, task)
        digest = DailyDigest(live, store, history, slack.client)
        digest.start()
        stack.push_async_callback(digest.stop)
        yield SlackRuntime([slack], escalator, digest)
    await _log_precision(store)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _log_precision(store: Store) -> None:
    for rule, (incidents, false_alarms) in sorted((await store.rule_feedback()).items()):
        if false_alarms:
            log.info(
                "rule.precision",
                rule=rule,
                incidents=incidents,
                false_alarms=false_alarms,
                precision=round(1 - false_alarms / incidents, 3),
            )
