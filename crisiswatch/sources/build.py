"""The sources a config asks for, with their secrets from the environment or systemd."""

from __future__ import annotations

from crisiswatch.config import Settings, secret
from crisiswatch.sources import Source
from crisiswatch.sources.http_ingest import HttpIngestSource
from crisiswatch.sources.reddit import RedditSource
from crisiswatch.sources.replay import ReplaySource
from crisiswatch.sources.resilience import SourceSetupError
from crisiswatch.sources.x import XSource
from crisiswatch.store import Store

SECRETS = {
    "reddit": ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET"),
    "x": ("X_BEARER_TOKEN",),
    "http_ingest": ("INGEST_TOKEN",),
}


def configured(settings: Settings) -> list[str]:
    """The names of the live sources the config turns on."""
    found = settings.sources
    return [
        name
        for name, on in (
            ("reddit", found.reddit),
            ("x", found.x),
            ("http_ingest", found.http_ingest),
        )
        if on is not None
    ]


def missing_secrets(settings: Settings) -> list[str]:
    """One line per secret a configured source needs and cannot find."""
    return [
        f"sources.{name} needs {key}: set it in the environment or as the systemd credential "
        f"{key.lower()}"
        for name in configured(settings)
        for key in SECRETS[name]
        if secret(key) is None
    ]


def build_sources(settings: Settings, store: Store | None) -> list[Source]:
    """Every configured source; raise `SourceSetupError` naming each missing secret."""
    problems = missing_secrets(settings)
    if problems:
        raise SourceSetupError("; ".join(problems))
    found = settings.sources
    stall = found.stall_after.total_seconds()
    sources: list[Source] = []
    if found.replay is not None:
        sources.append(ReplaySource(found.replay.path, speed=found.replay.speed))
    if found.reddit is not None:
        sources.append(
            RedditSource(
                found.reddit,
                settings.brands,
                store,
                client_id=_secret("REDDIT_CLIENT_ID"),
                client_secret=_secret("REDDIT_CLIENT_SECRET"),
                stall_after=stall,
            )
        )
    if found.x is not None:
        sources.append(
            XSource(
                found.x,
                settings.brands,
                store,
                bearer_token=_secret("X_BEARER_TOKEN"),
                stall_after=stall,
            )
        )
    if found.http_ingest is not None:
        sources.append(HttpIngestSource(found.http_ingest, token=_secret("INGEST_TOKEN")))
    return sources


def _secret(name: str) -> str:
    value = secret(name)
    assert value is not None, "checked by missing_secrets"
    return value
