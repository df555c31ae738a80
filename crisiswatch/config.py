"""The settings document (YAML, validated whole, unknown keys rejected) and where secrets live.

A deployment's config names its brands (the queries every source shares), the pipeline's bucket
size and lateness, its sources, its rules directory and the routes pages take. Paths inside it are
relative to the config file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from crisiswatch.durations import format_duration, parse_duration
from crisiswatch.ops.redact import remember
from crisiswatch.yamlfile import ProblemsError, load_yaml, validate

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def _at_least(value: timedelta, least: timedelta, default: str, why: str) -> timedelta:
    """`value`, or a ValueError saying the least it may be, its default and why."""
    if value < least:
        raise ValueError(
            f"must be at least {format_duration(least)} (the default is {default}): {why}"
        )
    return value


def _duration(value: object) -> timedelta:
    """A duration as written (`10m`, `2h`, `0`); a bare number is refused, not read as seconds
    (`keep_firing_for: 30` would be 30 s, and YAML reads `1:30` as the number 90)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str) or value == 0:
        return parse_duration(str(value))
    raise ValueError(f"{value!r} is not a duration; write it like 30s, 10m, 2h, 1d or 1h30m")


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_identifier(value: str) -> str:
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid id: use lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return value


class Brand(Strict):
    """One brand and the queries that attribute a mention to it, shared by every source."""

    id: str
    name: str = ""
    keywords: list[str] = []  # words or phrases, matched as whole words, case-insensitive
    hashtags: list[str] = []
    handles: list[str] = []  # the brand's own accounts
    exclusions: list[str] = []  # a mention containing any of these is not about the brand
    languages: list[str] = []  # empty: every language
    topics: dict[str, list[str]] = {}  # topic tag -> words or phrases

    _check_id = field_validator("id")(check_identifier)

    @field_validator("topics")
    @classmethod
    def _topic_ids(cls, topics: dict[str, list[str]]) -> dict[str, list[str]]:
        for topic in topics:
            check_identifier(topic)
        return topics

    @field_validator("languages")
    @classmethod
    def _languages(cls, codes: list[str]) -> list[str]:
        return [code.lower() for code in codes]  # as mentions carry them: pt-BR is pt-br

    @field_validator("hashtags")
    @classmethod
    def _hashtags(cls, tags: list[str]) -> list[str]:
        return [tag if tag.startswith("#") else f"#{tag}" for tag in tags]

    @field_validator("handles")
    @classmethod
    def _handles(cls, handles: list[str]) -> list[str]:
        return [h if h.startswith("@") else f"@{h}" for h in handles]

    @model_validator(mode="after")
    def _has_a_query(self) -> Brand:
        if not (self.keywords or self.hashtags or self.handles):
            raise ValueError(f"brand {self.id!r} needs at least one keyword, hashtag or handle")
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.id


class PipelineSettings(Strict):
    bucket: Duration = timedelta(minutes=5)
    allowed_lateness: Duration = timedelta(minutes=2)  # how late a mention may arrive and count
    queue_size: int = Field(10_000, ge=1)
    per_author_cap: int = Field(3, ge=1)  # mentions one author adds to one bucket's volume
    samples_per_bucket: int = Field(5, ge=1, le=20)
    # ids remembered to drop duplicates, in a table allocated at start (about 24 bytes an id):
    # at most 50 million (about 1.5 GB), so a slip of the keyboard is refused, not a crash
    dedupe_capacity: int = Field(1_000_000, ge=1_000, le=50_000_000)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: timedelta) -> timedelta:
        seconds = bucket.total_seconds()
        if seconds < 60 or 86400 % seconds:
            raise ValueError("bucket must be at least 1m and divide a day evenly (1m, 5m, 15m, 1h)")
        return bucket


class ReplaySettings(Strict):
    """Mention JSON lines (optionally gzipped) played in event time."""

    path: Path
    speed: float = Field(0.0, ge=0)  # 0: as fast as possible; 60: one minute per second


class RedditSettings(Strict):
    """Reddit through a read-only app: REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET are secrets."""

    user_agent: str = Field(min_length=10)  # e.g. "linux:crisiswatch:1.0 (by u/yourname)"
    subreddits: list[str] = []  # every new post and comment here is streamed
    search: bool = True  # also poll site-wide search for the brands' terms
    search_every: Duration = timedelta(minutes=1)
    search_lookback: Duration = timedelta(minutes=10)  # search indexes late: look back this far
    karma_per_minute: int = Field(default=30, ge=0)  # authors' karma lookups (reach) at most
    oauth_url: str = "https://oauth.reddit.com"  # only tests point these elsewhere
    reddit_url: str = "https://www.reddit.com"

    @field_validator("subreddits")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        cleaned = [name.removeprefix("r/").removeprefix("/r/") for name in names]
        for name in cleaned:
            if not re.fullmatch(r"[A-Za-z0-9_]{2,21}", name):
                raise ValueError(f"{name!r} is not a subreddit name")
        return cleaned


class XSettings(Strict):
    """X (Twitter) API v2 with an app bearer token: X_BEARER_TOKEN is a secret."""

    mode: Literal["search", "stream"] = "search"  # stream: the filtered stream (Pro access)
    search_every: Duration = timedelta(minutes=1)
    backfill: Duration = timedelta(minutes=10)  # on the very first start, fetch this far back
    retweets: bool = False
    api_url: str | None = None  # only tests point it elsewhere


class HttpIngestSettings(Strict):
    """POST /ingest of mention JSON lines, with `Authorization: Bearer <INGEST_TOKEN>`."""

    listen: str = "127.0.0.1:8788"
    max_bytes: int = Field(1_048_576, ge=1_024)  # larger bodies are refused (413)


class Sources(Strict):
    replay: ReplaySettings | None = None
    reddit: RedditSettings | None = None
    x: XSettings | None = None
    http_ingest: HttpIngestSettings | None = None
    stall_after: Duration = timedelta(minutes=5)  # no successful fetch this long: stalled
    notice_after: Duration = timedelta(minutes=15)  # stalled this long: ops are told
    tick: Duration = timedelta(seconds=10)  # live runs close buckets by the clock this often
    # bucket closes wait at most this long for Reddit or X to catch up (after a start or an
    # error) before going on without it; 0s never waits
    catch_up_wait: Duration = timedelta(minutes=5)

    @field_validator("tick")
    @classmethod
    def _tick(cls, tick: timedelta) -> timedelta:
        why = "with live sources the clock closes buckets; without it a quiet hour's buckets "
        return _at_least(tick, timedelta(seconds=1), "10s", why + "would wait for a mention")


SeverityName = Literal["info", "warning", "critical"]
_CLOCK = re.compile(r"([01]\d|2[0-3]):[0-5]\d")


class QuietHours(Strict):
    """Hours in which pages below `min_severity` wait until the quiet hours end."""

    start: str  # "22:00"
    end: str  # "07:00"; before `start` means the quiet hours cross midnight
    timezone: str = "UTC"
    min_severity: SeverityName = "critical"  # this severity and above still page at once

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):
            raise ValueError(f"{value!r} is not a time of day; write it like 22:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use a name like Europe/London"
            ) from None
        return value


class Route(Strict):
    """Where an incident's pages go and who is called."""

    channel: str = "#crisis-alerts"
    mention: dict[SeverityName, list[str]] = {}  # Slack user or user-group ids per severity
    quiet_hours: QuietHours | None = None
    escalate_after: Duration | None = None  # unacknowledged this long → re-page in the thread
    escalate_to: list[str] = []  # who that re-page mentions (e.g. the on-call user group)
    group_wait: Duration = timedelta(0)  # hold a new incident's first page this long
    group_interval: Duration = timedelta(0)  # at least this long between two updates
    repeat_interval: Duration | None = None  # still firing this long after its last page → remind


class Incidents(Strict):
    group_by: list[Literal["brand", "topic", "rule"]] = ["brand"]


class Slack(Strict):
    """Slack paging. Tokens are secrets: SLACK_BOT_TOKEN (xoxb-), SLACK_APP_TOKEN (xapp-, Socket
    Mode) and SLACK_SIGNING_SECRET (HTTP interactivity) come from the environment or systemd
    credentials, never from this file."""

    enabled: bool = False
    ops_channel: str | None = None  # where notices about crisiswatch itself go (token revoked, …)
    interactivity: Literal["socket", "http", "none"] = "socket"
    http_listen: str = "127.0.0.1:8787"  # for interactivity: http
    base_url: str | None = None  # the Web API's base URL; only tests point it elsewhere
    digest_at: str | None = "08:00"  # the daily digest, in the default route's quiet-hours zone

    @field_validator("digest_at")
    @classmethod
    def _digest_clock(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.fullmatch(value):
            raise ValueError(f"{value!r} is not a time of day; write it like 08:00, or null")
        return value


class Ops(Strict):
    """Running as a service."""

    checkpoint_every: Duration = timedelta(minutes=5)  # learned state saved this often, at stop
    http_listen: str | None = None  # e.g. 127.0.0.1:9464 for /metrics, /healthz, /readyz
    retention: Duration = timedelta(days=30)  # state nothing needs is deleted this long after

    @field_validator("checkpoint_every")
    @classmethod
    def _checkpoint_every(cls, every: timedelta) -> timedelta:
        why = "the learned state is saved only by checkpoints, and with none a crash would lose "
        return _at_least(every, timedelta(seconds=1), "5m", why + "all it learned since the start")

    @field_validator("retention")
    @classmethod
    def _retention(cls, kept: timedelta) -> timedelta:
        why = "the daily digest reads yesterday's incidents and pages"
        return _at_least(kept, timedelta(days=2), "30d", why)


class PlannedEvent(Strict):
    """A launch or campaign: volume ×`expect_volume` is expected for the brand in this window.

    Volume conditions then need that much more to hold; sentiment, keyword and post conditions
    are unchanged.
    """

    brand: str  # a brand id, or "all"
    start: AwareDatetime
    end: AwareDatetime
    expect_volume: float = Field(3.0, gt=1.0)
    note: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> PlannedEvent:
        if self.end <= self.start:
            raise ValueError("a planned event must end after it starts")
        return self

    def factor(self, brand: str, at: datetime) -> float:
        covers = self.brand in ("all", brand) and self.start <= at < self.end
        return self.expect_volume if covers else 1.0


class Notify(Strict):
    console: bool = True
    slack: Slack = Slack()


class Settings(Strict):
    """The whole settings document."""

    state_dir: Path | None = None  # default: $STATE_DIRECTORY under systemd, else ./var
    rules: list[Path] = [Path("rules")]
    brands: list[Brand]
    pipeline: PipelineSettings = PipelineSettings()
    sources: Sources = Sources()
    routes: dict[str, Route] = {"default": Route()}
    incidents: Incidents = Incidents()
    notify: Notify = Notify()
    calendar: list[PlannedEvent] = []
    ops: Ops = Ops()

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        ids = [b.id for b in self.brands]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"brand ids must be unique: {', '.join(duplicates)}")
        for name in self.routes:
            check_identifier(name)
        for event in self.calendar:
            if event.brand != "all" and event.brand not in ids:
                raise ValueError(f"calendar: unknown brand {event.brand!r}")
        return self

    def brand(self, brand_id: str) -> Brand | None:
        return next((b for b in self.brands if b.id == brand_id), None)


class LiveSettings:
    """The settings in force in a running daemon, one holder shared by all its parts.

    A reload swaps in a whole new `Settings` (one assignment: a reader never sees half of each);
    every part reads `current` when it acts, never a copy taken at start-up, so a changed route
    or channel reaches every page, escalation and digest from then on. Parts that must act on a
    change (the digest's schedule) register with `on_swap`.
    """

    def __init__(self, settings: Settings) -> None:
        self.current = settings
        self._listeners: list[Callable[[Settings], None]] = []

    def swap(self, settings: Settings) -> None:
        self.current = settings
        for listener in self._listeners:
            listener(settings)

    def on_swap(self, listener: Callable[[Settings], None]) -> None:
        self._listeners.append(listener)


def load_settings(path: Path) -> Settings:
    """Read and validate a config file; paths inside it become relative to its folder."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ProblemsError([doc.problem((), "the config must be a mapping of keys to values")])
    settings = validate(Settings, doc)
    base = path.resolve().parent
    replay = settings.sources.replay
    return settings.model_copy(
        update={
            "state_dir": _under(base, settings.state_dir) if settings.state_dir else None,
            "rules": [_under(base, p) for p in settings.rules],
            "sources": settings.sources.model_copy(
                update={"replay": replay.model_copy(update={"path": _under(base, replay.path)})}
                if replay
                else {}
            ),
        }
    )


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def state_dir(settings: Settings | None) -> Path:
    """Where state lives: the config's `state_dir`, systemd's StateDirectory, or ./var."""
    if settings is not None and settings.state_dir is not None:
        return settings.state_dir
    from_systemd = os.environ.get("STATE_DIRECTORY")
    if from_systemd:
        return Path(from_systemd.split(":")[0])
    return Path("var")


def make_state_dir(directory: Path) -> None:
    """Create the state directory if need be, open to its owner only: the checkpoint is a
    pickle, which whoever can write it could make run code as the daemon (systemd's
    StateDirectory is made so already; this is for runs outside it, in ./var). A directory
    that exists is left as it is."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def host_port(listen: str) -> tuple[str, int]:
    """A `listen` setting, `127.0.0.1:8788` or `[::1]:8788` (no host: localhost) → (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def secret(name: str) -> str | None:
    """A secret from systemd credentials (`$CREDENTIALS_DIRECTORY/<name lowercased>`) or the
    environment. Credentials win: they never show in `/proc/*/environ` or `systemctl show`."""
    value = None
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        candidate = Path(creds) / name.lower()
        if candidate.is_file():
            value = candidate.read_text(encoding="utf-8").strip() or None
    value = value or os.environ.get(name) or None
    if value is not None:
        remember(value)  # masked in every log line from now on
    return value
