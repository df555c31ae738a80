"""`crisiswatch doctor`: is this deployment ready to run? One line per problem, exit 1 if any.

Checks the config and rules, that the state directory is writable, that each configured source
and Slack (for its interactivity mode) has its secrets and that Reddit, X and Slack accept them.
Warnings (WARN lines, exit 0) name settings that run but lose something. Secrets are never
printed.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from crisiswatch.config import Settings, load_settings, make_state_dir, secret, state_dir
from crisiswatch.durations import format_duration
from crisiswatch.ops.redact import redact_text
from crisiswatch.rules.loader import load_rules, rule_warnings
from crisiswatch.sources.build import configured, missing_secrets
from crisiswatch.sources.queries import x_query
from crisiswatch.sources.resilience import describe_error
from crisiswatch.yamlfile import ProblemsError

TIMEOUT = 20.0  # seconds for each service to answer


def doctor(config: Path, out: IO[str]) -> int:
    problems: list[str] = []
    fine: list[str] = []
    try:
        settings = load_settings(config)
    except ProblemsError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        return 1
    fine.append(f"config {config}")
    warnings = _lateness_warnings(settings)
    try:
        rules = load_rules(settings.rules, settings)
        fine.append(f"{len(rules)} rules")
        warnings += rule_warnings(rules, settings)
    except ProblemsError as exc:
        problems += [str(problem) for problem in exc.problems]
    problems += _state_writable(state_dir(settings), fine)
    problems += _x_queries(settings)
    missing = missing_secrets(settings) + _slack_secrets(settings)
    problems += missing
    problems += asyncio.run(_reachable(settings, fine, skip=" ".join(missing)))
    for line in problems:  # a service's error may quote what it was sent: never a secret
        print(redact_text(line), file=out)
    if problems:
        return 1
    for line in fine:
        print(f"OK  {line}", file=out)
    for line in warnings:
        print(f"WARN {line}", file=out)
    return 0


PROBE_BYTES = 64 * 1024  # written to the state directory: about a checkpoint's first write


def _x_queries(settings: Settings) -> list[str]:
    """The brands whose X query X would refuse as too long (`run` would not start X)."""
    from crisiswatch.sources.x import overlong_queries

    x = settings.sources.x
    if x is None:
        return []
    queries = {b.id: x_query(b, retweets=x.retweets) for b in settings.brands}
    return [f"sources.x: {problem}" for problem in overlong_queries(queries)]


def _lateness_warnings(settings: Settings) -> list[str]:
    """Reddit's search finds posts up to `search_lookback` after they were made; a bucket closes
    `allowed_lateness` after its end, and what comes later is counted as late, not in it."""
    reddit, lateness = settings.sources.reddit, settings.pipeline.allowed_lateness
    if reddit is None or not reddit.search or reddit.search_lookback <= lateness:
        return []
    return [
        f"sources.reddit.search_lookback ({format_duration(reddit.search_lookback)}) is longer "
        f"than pipeline.allowed_lateness ({format_duration(lateness)}): posts Reddit's search "
        "indexes later than that are dropped as late (see crisiswatch_mentions_total"
        '{outcome="late"}); a longer allowed_lateness counts them, and pages that much later'
    ]


def _state_writable(directory: Path, fine: list[str]) -> list[str]:
    """Whether the state directory takes a file with something in it, written to the disk (an
    empty file fits on a full disk, where the store and checkpoints then fail)."""
    try:
        make_state_dir(directory)
        with tempfile.NamedTemporaryFile(dir=directory) as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return [f"state directory {directory} is not writable: {exc.strerror or exc}"]
    fine.append(f"state directory {directory} is writable")
    return []


async def _reachable(settings: Settings, fine: list[str], skip: str) -> list[str]:
    """Ask each configured service whether it takes the credentials (not those missing some)."""
    checks: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    names = [name for name in configured(settings) if f"sources.{name} " not in skip]
    if "reddit" in names:
        checks.append(("reddit", lambda: _reddit(settings)))
    if "x" in names:
        checks.append(("x", lambda: _x(settings)))
    if "http_ingest" in names:
        fine.append("http_ingest has its token")
    if settings.notify.slack.enabled and "SLACK_BOT_TOKEN" not in skip:
        checks.append(("slack", lambda: _slack(settings)))
    problems = []
    for name, check in checks:
        try:
            await asyncio.wait_for(check(), TIMEOUT)
            fine.append(f"{name} accepts the credentials")
        except TimeoutError:
            problems.append(f"{name}: no answer within {TIMEOUT:.0f}s")
        except Exception as exc:
            problems.append(f"{name}: {describe_error(exc)}")
    return problems


async def _reddit(settings: Settings) -> None:
    from crisiswatch.sources.reddit import reddit_client

    assert settings.sources.reddit is not None
    reddit = reddit_client(
        settings.sources.reddit,
        secret("REDDIT_CLIENT_ID") or "",
        secret("REDDIT_CLIENT_SECRET") or "",
    )
    try:
        everywhere = await reddit.subreddit("all")
        async for _ in everywhere.new(limit=1):
            break
    finally:
        await reddit.close()


async def _x(settings: Settings) -> None:
    from tweepy.asynchronous import AsyncStreamingClient

    from crisiswatch.sources.x import http_session, x_client

    x = settings.sources.x
    assert x is not None
    session = http_session(x.api_url)
    try:
        if x.mode == "stream":  # reading the stream's rules needs the stream's access
            rules: Any = AsyncStreamingClient(secret("X_BEARER_TOKEN"), return_type=dict)
            rules.session = session
            await rules.get_rules()
        else:
            client = x_client(secret("X_BEARER_TOKEN") or "", session)
            await client.search_recent_tweets(x_query(settings.brands[0]), max_results=10)
    finally:
        await session.close()


async def _slack(settings: Settings) -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    from crisiswatch.notify.slack import DEFAULT_BASE_URL

    client = AsyncWebClient(
        token=secret("SLACK_BOT_TOKEN"), base_url=settings.notify.slack.base_url or DEFAULT_BASE_URL
    )
    await client.auth_test()


def _slack_secrets(settings: Settings) -> list[str]:
    """One line per secret `run` would refuse to start Slack without: the bot token, and the
    one its interactivity mode needs (socket: the app token; http: the signing secret)."""
    from crisiswatch.notify.slack_runtime import missing_secrets

    slack = settings.notify.slack
    return missing_secrets(slack) if slack.enabled else []
