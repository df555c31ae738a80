"""The vocabulary every stage speaks: frozen values passed from one stage to the next.

A `Mention` enters, is attributed and scored (`ScoredMention`), counted into event-time
`Bucket`s per series, judged by the detectors (`Signal`), matched by rules (`Alert`), grouped
into an `Incident`, and announced as a `Page`.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import itemgetter
from typing import overload

ALL_TOPICS = "*"
"""The topic of a brand's roll-up series (every mention of the brand, whatever its topic)."""


class Severity(enum.IntEnum):
    """How urgently a person must look; ordered so that `max()` picks the worst."""

    INFO = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Stage(enum.IntEnum):
    """How far a crisis has spread: spark (early), flame (sustained), fire (severe or spreading)."""

    SPARK = 1
    FLAME = 2
    FIRE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class IncidentStatus(enum.Enum):
    FIRING = "firing"
    RESOLVED = "resolved"


class PageKind(enum.Enum):
    OPENED = "opened"
    ESCALATED = "escalated"  # severity or stage went up
    UPDATED = "updated"  # spread to a new source or topic
    REMINDER = "reminder"  # still firing after the route's repeat_interval
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Mention:
    """One post, comment or reply about a brand, from any source. Its text is untrusted."""

    id: str
    source: str
    created_at: datetime  # timezone-aware, UTC
    text: str
    brand: str | None = None
    author: str | None = None
    author_followers: int = 0
    url: str | None = None
    lang: str | None = None
    in_reply_to_author: str | None = None  # the author of the post this one replies to
    engagement: int = 0  # public interactions when seen: likes, reposts, replies, quotes / score


@dataclass(frozen=True, slots=True)
class ScoredMention:
    """A mention attributed to one brand and its topics, with its probability of being negative."""

    mention: Mention
    brand: str
    topics: tuple[str, ...]
    negative: float
    replies_to_brand: bool = False  # a reply to one of the brand's own posts

    @property
    def is_negative(self) -> bool:
        return self.negative >= 0.5


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    """One bucketed series: a brand's mentions on one topic, or on all (`ALL_TOPICS`).

    `view` names a rule's mention filter (sources, languages, reach, keywords, regex): the series
    then counts only the mentions that pass it. The empty view counts every mention.
    """

    brand: str
    topic: str = ALL_TOPICS
    view: str = ""
    # Hashed once: a key is looked up a dozen times per bucket close (detectors, rules' `for`,
    # chart rings), and a dataclass's own hash is Python code that hashes its fields each time.
    # Hashed again when unpickled: a string's hash differs from one process to the next.
    _hash: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.brand, self.topic, self.view)))

    def __hash__(self) -> int:
        return self._hash

    def __setstate__(self, state: list[object]) -> None:
        """Restore from a pickle (the fields' values in order; an earlier release's has no
        hash), hashing anew."""
        for name, value in zip(("brand", "topic", "view"), state, strict=False):
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __str__(self) -> str:
        name = self.brand if self.topic == ALL_TOPICS else f"{self.brand}/{self.topic}"
        return f"{name} (filtered)" if self.view else name


class Ranked(Sequence[tuple[str, int]]):
    """A closed bucket's counts (terms, sources), most first, at most `n`: sorted when first
    read. Most buckets' are read only by the detectors' learning, which the daemon does after
    a close's pages have left, or never (a page's sources): sorting every series' counts at the
    close itself was a sixth of the time from a close of 200 brands to its pages. It pickles,
    compares and hashes as the plain tuple it stands for, so checkpoints hold a tuple, as
    before."""

    __slots__ = ("_counts", "_n", "_top")

    def __init__(self, counts: Mapping[str, int], n: int | None = None) -> None:
        self._counts: Mapping[str, int] | None = counts  # no longer changed by its bucket
        self._n = n
        self._top: tuple[tuple[str, int], ...] | None = None

    def _sorted(self) -> tuple[tuple[str, int], ...]:
        top = self._top
        if top is None:
            counts = self._counts
            if counts is None:  # another thread sorted it since: `_top` is set first
                return self._sorted()
            # one C-level stable sort (ties stay in the order counted in, as in
            # `Counter.most_common`): faster than a heap selection for a bucket's terms
            top = tuple(sorted(counts.items(), key=itemgetter(1), reverse=True)[: self._n])
            self._top = top
            self._counts = None  # the counts are let go of once sorted
        return top

    @overload
    def __getitem__(self, index: int) -> tuple[str, int]: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[tuple[str, int], ...]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, int] | tuple[tuple[str, int], ...]:
        return self._sorted()[index]

    def __len__(self) -> int:
        return len(self._sorted())

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(self._sorted())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Ranked):
            other = other._sorted()
        return self._sorted() == other

    def __hash__(self) -> int:
        return hash(self._sorted())

    def __repr__(self) -> str:
        return repr(self._sorted())

    def __reduce__(self) -> tuple[type[tuple[object, ...]], tuple[tuple[tuple[str, int], ...]]]:
        return tuple, (self._sorted(),)


@dataclass(frozen=True, slots=True)
class Bucket:
    """What one closed event-time bucket of one series holds."""

    series: SeriesKey
    start: datetime
    end: datetime
    count: int  # mentions counted, at most `per_author_cap` per author (spam does not make volume)
    raw_count: int  # every mention that arrived, before the per-author cap
    negative_count: int
    unique_authors: int
    reach: int  # summed followers of the authors
    # (source, count) and (term, count), most first: tuples, or `Ranked` as a close makes them
    sources: Sequence[tuple[str, int]]
    top_terms: Sequence[tuple[str, int]]
    samples: tuple[ScoredMention, ...]  # the most representative posts, most important first
    brand_replies: int = 0  # replies to the brand's own posts
    brand_reply_negative: int = 0  # … of which negative
    negative_sources: Sequence[tuple[str, int]] = ()  # (source, negative count), most first
    bursts: tuple[tuple[str, int], ...] = ()  # (watched term set, mentions with its terms)
    exact_reach: bool = True  # False: unique authors and reach are estimated (too many authors)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        _restore_fields(self, state)

    @property
    def negative_share(self) -> float:
        return self.negative_count / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class Signal:
    """What one closed bucket says about its series, with each detector's verdict."""

    bucket: Bucket
    volume_score: float  # in [0, 1]: how surprising the volume is
    volume_expected: float  # the count the volume detector expected
    volume_upper: float  # the alert level: the count that would score the balanced threshold
    negative_score: float  # in [0, 1]: how surprising the negative share is
    negative_expected: float  # the usual negative share
    previous_count: int  # the count of the bucket before, to tell how fast it rises
    burst_usual: tuple[tuple[str, float], ...] = ()  # (watched term set, usual count per bucket)
    new_terms: tuple[tuple[str, int], ...] = ()  # terms new to the brand, with their counts

    @property
    def series(self) -> SeriesKey:
        return self.bucket.series

    @property
    def at(self) -> datetime:
        return self.bucket.end


@dataclass(frozen=True, slots=True)
class Alert:
    """A rule's conditions held for a series at the close of a bucket."""

    rule_id: str
    severity: Severity
    stage: Stage
    signal: Signal
    summary: str
    reasons: tuple[str, ...]  # readable sentences with the numbers, one per condition that held
    route: str = "default"


@dataclass(frozen=True, slots=True)
class Totals:
    """All the brand's mentions over an incident so far: its roll-up series' closed buckets."""

    since: datetime  # the start of the first bucket counted (the incident's, if remembered)
    count: int
    negative: int

    @property
    def negative_share(self) -> float:
        return self.negative / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class Incident:
    """Alerts grouped under one key, with a life: firing until quiet, then resolved."""

    key: str
    brand: str
    status: IncidentStatus
    severity: Severity
    stage: Stage
    started_at: datetime  # start of the first bucket that alerted
    updated_at: datetime
    last_alert_at: datetime
    resolved_at: datetime | None
    rules: tuple[str, ...]
    topics: tuple[str, ...]
    sources: tuple[str, ...]
    route: str
    summary: str
    reasons: tuple[str, ...]
    peak_count: int
    latest: Signal  # the signal of the most recent alert
    id: str = field(default="")  # stable id: key plus the start time (see `incident_id`)
    brand_wide: bool = False  # a rule alerted on all the brand's mentions, not only a topic's
    totals: Totals | None = None  # set on each page as it leaves the pipeline

    def __setstate__(self, state: tuple[object, ...]) -> None:
        _restore_fields(self, state)

    @property
    def platforms(self) -> str:
        """Where it is happening now: each source's share of the latest alerting bucket, most
        first ("x 83%, reddit 17%"), the few biggest."""
        bucket = self.latest.bucket
        shares = [f"{name} {n / bucket.count:.0%}" for name, n in bucket.sources[:4] if n]
        return ", ".join(shares) or "-"

    @property
    def scope(self) -> str:
        """Which of the brand's mentions it is about: all, or some topics (or all, with topics
        that alerted on their own too)."""
        return ", ".join(("all topics", *self.topics) if self.brand_wide else self.topics) or (
            "all topics"
        )


def _restore_fields(obj: object, state: tuple[object, ...]) -> None:
    """A frozen dataclass from a checkpoint, including one saved before a field was added at
    its end: that field takes its default. (Restored field by field, as pickle does by itself,
    an older object had no such attribute, and reading it failed every tick and checkpoint.)"""
    for position, spec in enumerate(fields(obj)):  # type: ignore[arg-type]
        value = state[position] if position < len(state) else spec.default
        object.__setattr__(obj, spec.name, value)


def incident_id(key: str, started_at: datetime) -> str:
    """An incident's stable id: its group key and when it started, `brand=acme@20260302T1515Z`."""
    return f"{key}@{started_at:%Y%m%dT%H%MZ}"


def incident_key(incident_id: str) -> str:
    """The group key inside an incident id (the inverse of `incident_id` for the key)."""
    return incident_id.rsplit("@", 1)[0]


@dataclass(frozen=True, slots=True)
class Page:
    """One message to send about an incident: its opening, an escalation, or its resolution."""

    incident: Incident
    kind: PageKind
    at: datetime
    changes: tuple[str, ...] = ()
    held_until: datetime | None = None  # quiet hours held it (for those who are paged) till then


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the pages of matching incidents from `starts_at` to `ends_at`.

    Each matcher left None matches anything: `brand` (a brand id); `rule` (a rule id: an incident
    every rule of which is that rule, so an incident another rule also drives still pages);
    `incident` (an incident's id, e.g. "brand=kestrel@20260302T1515Z", or its group key, e.g.
    "brand=kestrel", which matches every incident of the group).
    """

    id: str
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    brand: str | None = None
    rule: str | None = None
    incident: str | None = None

    @staticmethod
    def new_id() -> str:
        return "s-" + secrets.token_hex(4)

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def matches(self, page: Page) -> bool:
        incident = page.incident
        return (
            (self.brand is None or self.brand == incident.brand)
            and (self.rule is None or set(incident.rules) <= {self.rule})
            and (self.incident is None or self.incident in (incident.id, incident.key))
        )

    def describe(self) -> str:
        scope = [f"{name}={value}" for name, value in self._matchers() if value is not None]
        return ", ".join(scope) or "everything"

    def _matchers(self) -> tuple[tuple[str, str | None], ...]:
        return (("brand", self.brand), ("rule", self.rule), ("incident", self.incident))
