"""Shared helpers: a mention factory, a fake sentiment scorer and a demo-like brand."""

from __future__ import annotations

import gc
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs

from crisiswatch import store as store_module
from crisiswatch.config import Brand
from crisiswatch.detect.signals import Judged, SignalDetector
from crisiswatch.domain import (
    Bucket,
    Incident,
    IncidentStatus,
    Mention,
    Page,
    PageKind,
    ScoredMention,
    SeriesKey,
    Severity,
    Signal,
    Stage,
)
from crisiswatch.notify.codec import dump_page
from crisiswatch.store import Store, page_key

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
"""A round moment (on a bucket boundary for any bucket size that divides a day)."""


def _mention(**overrides: Any) -> Mention:
    """A valid mention of the `kestrel` brand at `T0`; any field may be overridden."""
    fields: dict[str, Any] = {
        "id": "x:1",
        "source": "x",
        "created_at": T0,
        "text": "Kestrel Bank is fine today",
        "author": "alice",
        "author_followers": 10,
        "url": "https://example.com/x/1",
        "lang": "en",
    }
    fields.update(overrides)
    return Mention(**fields)


class KeywordScorer:
    """A fake sentiment model: a text with an angry word is negative, anything else is not."""

    ANGRY = ("angry", "awful")

    def negative_one(self, text: str) -> float:
        lowered = text.lower()
        return 0.9 if any(word in lowered for word in self.ANGRY) else 0.1


def _brand(**overrides: Any) -> Brand:
    """A brand shaped like the demo's Kestrel Bank; any field may be overridden."""
    fields: dict[str, Any] = {
        "id": "kestrel",
        "name": "Kestrel Bank",
        "keywords": ["kestrel bank", "kestrelbank"],
        "hashtags": ["#KestrelBank"],
        "handles": ["@KestrelHelp"],
        "exclusions": ["kestrel falcon", "#birding"],
        "topics": {"cards": ["card", "atm", "credit card"], "app": ["app", "login"]},
    }
    fields.update(overrides)
    return Brand(**fields)


def _incident(samples: tuple[ScoredMention, ...] = (), **overrides: Any) -> Incident:
    """A firing incident of `kestrel` opened by one bucket ending at `T0`."""
    bucket = Bucket(
        series=SeriesKey("kestrel"),
        start=T0 - timedelta(minutes=5),
        end=T0,
        count=40,
        raw_count=42,
        negative_count=30,
        unique_authors=38,
        reach=125_000,
        sources=(("x", 30), ("reddit", 10)),
        top_terms=(("atm", 12), ("swallowed", 9)),
        samples=samples,
    )
    signal = Signal(bucket, 0.999, 8.0, 15.0, 0.998, 0.2, 9)
    incident = Incident(
        key="kestrel",
        brand="kestrel",
        status=IncidentStatus.FIRING,
        severity=Severity.CRITICAL,
        stage=Stage.FLAME,
        started_at=bucket.start,
        updated_at=T0,
        last_alert_at=T0,
        resolved_at=None,
        rules=("angry-surge",),
        topics=("cards",),
        sources=("x",),
        route="default",
        summary="kestrel: 40 mentions in 5m (8 expected), 75% negative",
        reasons=(
            "volume 40 vs 8 expected (alert level 15), in a surge this series sees less than once "
            "a year",
        ),
        peak_count=40,
        latest=signal,
        id="kestrel@20240301T1155Z",
    )
    return replace(incident, **overrides)


def _page(
    kind: PageKind = PageKind.OPENED,
    at: datetime = T0,
    changes: tuple[str, ...] = (),
    **incident: Any,
) -> Page:
    """A page about `_incident(**incident)`."""
    return Page(_incident(**incident), kind, at, changes)


MentionFactory = Callable[..., Mention]
BrandFactory = Callable[..., Brand]


@pytest.fixture(autouse=True)
def collector_left_on() -> Iterator[None]:
    """No test may leave the cyclic garbage collector off: the pipeline holds it off while a
    bucket end is judged (and, in the daemon, until its learning is done), and a hold never
    let go would leak cycles for good in a daemon that runs for months."""
    yield
    left_on = gc.isenabled()
    gc.enable()  # for the tests after it
    assert left_on, "this test left the collector off"


@pytest.fixture
def make_mention() -> MentionFactory:
    """`make_mention(**overrides)`: a valid mention at `T0`."""
    return _mention


@pytest.fixture
def make_brand() -> BrandFactory:
    """`make_brand(**overrides)`: a brand shaped like the demo's Kestrel Bank."""
    return _brand


@pytest.fixture
def brand() -> Brand:
    return _brand()


@pytest.fixture
def scorer() -> KeywordScorer:
    return KeywordScorer()


IncidentFactory = Callable[..., Incident]
PageFactory = Callable[..., Page]


@pytest.fixture
def make_incident() -> IncidentFactory:
    """`make_incident(samples=(), **overrides)`: a firing, critical incident of `kestrel`."""
    return _incident


@pytest.fixture
def make_page() -> PageFactory:
    """`make_page(kind, at, changes, **incident_overrides)`: a page about `make_incident`."""
    return _page


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh state store in the test's folder, closed afterwards."""
    opened = await Store.open(tmp_path / "state.db")
    yield opened
    await opened.close()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """While `full_disk[0]` (from the start), every state store's writes fail as on a full disk
    (SQLite's "database or disk is full") and its reads still work, as they do there."""
    transaction = store_module._transaction
    full = [True]

    def refuse_writes(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], Any]) -> Any:
        def read_only(conn: sqlite3.Connection) -> Any:
            before = conn.total_changes
            result = work(conn)
            if full[0] and conn.total_changes != before:
                raise sqlite3.OperationalError("database or disk is full")
            return result

        return transaction(db, read_only)

    monkeypatch.setattr(store_module, "_transaction", refuse_writes)
    return full


@contextmanager
def capture_all_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """structlog's `capture_logs` at every level: a test that ran the CLI leaves structlog
    dropping info events (`--log-level warning`), which `capture_logs` alone would not see."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


async def mark_sent(store: Store, page: Page, notifier: str) -> None:
    """Have `notifier` send `page` as the dispatcher does: queued in the outbox, then marked sent
    (which logs it, so it is never queued for that notifier again)."""
    await store.enqueue(page, dump_page(page), [notifier])
    key = page_key(page)
    for row in await store.outbox():
        if (row["page_key"], row["notifier"], row["status"]) == (key, notifier, "pending"):
            assert isinstance(row["seq"], int)
            await store.outbox_sent(row["seq"], page, notifier)


class Recorder:
    """A notifier that keeps the pages it is sent."""

    name = "recorder"

    def __init__(self) -> None:
        self.pages: list[Page] = []

    async def send(self, page: Page) -> None:
        self.pages.append(page)


@pytest.fixture
async def client_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[list[aiohttp.ClientSession]]:
    """Every aiohttp `ClientSession` made during the test, in order; any still open at its end
    is closed then (so one a test finds left open fails that test, not a later one)."""
    opened: list[aiohttp.ClientSession] = []
    real = aiohttp.ClientSession

    def recorded(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        session = real(*args, **kwargs)
        opened.append(session)
        return session

    monkeypatch.setattr(aiohttp, "ClientSession", recorded)
    yield opened
    for session in opened:
        await session.close()


def judged_signals(detector: SignalDetector) -> list[Signal]:
    """Every signal `detector` judges from now on, in order (its `judge` wrapped)."""
    signals: list[Signal] = []
    judge = detector.judge

    def kept(*args: Any, **kwargs: Any) -> Judged:
        made = judge(*args, **kwargs)
        signals.extend(made.signals)
        return made

    detector.judge = kept  # type: ignore[method-assign]
    return signals
