"""The pipeline core: mention in, pages out, with no I/O, so the daemon and backtest share it.

ingest (dedupe) → enrich (attribution, sentiment) → aggregate (event-time buckets) → detect
(signals) → rules (alerts) → incidents (pages). Time comes only from the mentions (event time)
or from the caller (`advance`, and the daemon's `clock`, which only refuses mentions dated ahead
of it), so replaying a file gives the same pages every time.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any, Protocol

from crisiswatch.aggregate import Aggregator
from crisiswatch.config import Settings
from crisiswatch.detect.history import SeriesHistory
from crisiswatch.detect.signals import Judged, SignalDetector
from crisiswatch.domain import Bucket, Incident, Mention, Page, ScoredMention, SeriesKey
from crisiswatch.enrich.attribution import Attributor, tokenize
from crisiswatch.incidents import IncidentManager
from crisiswatch.ingest import Deduper
from crisiswatch.rules.engine import RuleEngine
from crisiswatch.rules.inputs import RuleInputs
from crisiswatch.rules.schema import Rule

MAX_AHEAD = timedelta(minutes=15)
"""How far ahead of the daemon's clock a mention may be dated: further, it would move event time
on and make every real mention after it too late (a producer's local time sent without its
offset, read as UTC, is hours ahead), so it is refused and counted."""
YOUNG_COLLECTION = 20_000  # net allocations between young garbage collections (see settle)


class NegativeScorer(Protocol):
    """What the pipeline needs of a sentiment model: P(negative) of a text."""

    def negative_one(self, text: str) -> float: ...


@dataclass(slots=True)
class PipelineStats:
    mentions: int = 0  # accepted, attributed and counted
    duplicates: int = 0
    unattributed: int = 0  # about none of the configured brands
    own: int = 0  # posted by a brand's own account: the brand speaking, not a mention of it
    late: int = 0
    future: int = 0  # dated more than MAX_AHEAD ahead of the daemon's clock
    failed: int = 0  # the pipeline raised on it (a bug, logged with its id): dropped
    buckets: int = 0
    alerts: int = 0
    pages: int = 0

    def __setstate__(self, state: tuple[None, dict[str, int]]) -> None:
        """Restore from a checkpoint (pickle's slots state), including one saved before a
        counter existed: it starts at 0."""
        for name in self.__slots__:
            setattr(self, name, 0)
        for name, value in state[1].items():
            setattr(self, name, value)


class Pipeline:
    """One deployment's whole decision path, fed one mention at a time."""

    def __init__(
        self,
        settings: Settings,
        rules: Sequence[Rule],
        scorer: NegativeScorer,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`clock`: the live daemon's, to refuse mentions dated ahead of it; replays have none."""
        bucket = settings.pipeline.bucket
        self._clock = clock
        self._horizon = datetime.min.replace(tzinfo=UTC)  # no mention after it yet is ahead
        # How far time may move the watermark (None: no limit). The live daemon holds it while
        # a source catches up (`crisiswatch/frontiers.py`); replays never set it.
        self.ceiling: datetime | None = None
        # Buckets that end by then were not wholly watched (the live daemon was down before its
        # start, or a source it stopped waiting for was behind): judged, but not learned, and
        # one no mention came into is skipped as unknown, not closed as quiet. None: all were.
        self.unobserved_until: datetime | None = None
        # The most bucket ends one call closes (None: all that ended). The live daemon closes a
        # long gap a bucket end at a time, letting its other work in between.
        self.close_step: int | None = None
        # Whether a close's learning waits for `learn_pending` (the live daemon's, which calls
        # it once the pages are queued), or is done before the close returns (replays').
        self.learn_after_pages = False
        self.settings = settings
        self.scorer = scorer
        self.deduper = Deduper(settings.pipeline.dedupe_capacity)
        self.attributor = Attributor(settings.brands)
        self.rule_inputs = RuleInputs(rules)
        series = self.rule_inputs.series(settings)
        self.aggregator = Aggregator(
            series,
            bucket=bucket,
            allowed_lateness=settings.pipeline.allowed_lateness,
            per_author_cap=settings.pipeline.per_author_cap,
            samples_per_bucket=settings.pipeline.samples_per_bucket,
            brand_terms=_brand_terms(settings),
        )
        self.detector = SignalDetector(int(bucket.total_seconds()))
        self.history = SeriesHistory(int(bucket.total_seconds()))  # for the pages' charts
        self._prepare(series)
        self.engine = RuleEngine(rules, settings.calendar)
        self.incidents = IncidentManager(
            {rule.id: rule.keep_firing_for for rule in rules},
            group_by=settings.incidents.group_by,
            routes=settings.routes,
        )
        self.stats = PipelineStats()
        # The bucket end judged last, with whether it was wholly watched, while its learning
        # waits for its pages to leave (`learn_pending`); None: nothing waits.
        self._unlearned: tuple[Judged, bool] | None = None
        self._collection_held: bool | None = None  # the collector was enabled; None: not held

    def reconfigure(self, settings: Settings, rules: Sequence[Rule]) -> None:
        """Swap in a new, already checked config and rule set, keeping what was learned.

        Brands, rules, routes and the calendar change at once; detectors, open buckets, the
        dedupe window and open incidents carry over (a rule whose filter changed starts a new
        view from the next mention). Bucket size, lateness and sources need a restart. The new
        parts are built before any is swapped in, so one that fails leaves the running ones.
        """
        self.learn_pending()
        attributor, rule_inputs = Attributor(settings.brands), RuleInputs(rules)
        series = rule_inputs.series(settings)
        brand_terms = _brand_terms(settings)
        engine = self.engine.replaced(rules, settings.calendar)
        self.settings, self.attributor, self.rule_inputs = settings, attributor, rule_inputs
        self.aggregator.reconfigure(series, brand_terms)
        self._prepare(series)
        self.engine = engine
        self.incidents.keep_firing_for = {rule.id: rule.keep_firing_for for rule in rules}
        self.incidents.routes = dict(settings.routes)

    def _prepare(self, series: Sequence[SeriesKey]) -> None:
        """Every configured series' detectors and chart ring, allocated up front: memory is set
        by the configuration, and does not step up when a busy stream first closes a bucket."""
        self.detector.prepare(series)
        self.history.prepare(series)

    def snapshot(self) -> dict[str, Any]:
        """The learned state worth keeping across a restart (saved by `checkpoint.py`), with
        the last close's learning in it."""
        self.learn_pending()
        return {
            "aggregator": self.aggregator,
            "detector": self.detector,
            "incidents": self.incidents,
            "holding": self.engine.holding_since,
            "history": self.history,
            "stats": self.stats,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take back a snapshot, then apply the running config and rules to it."""
        self._unlearned = None  # what was judged belongs to the state replaced
        self.aggregator = snapshot["aggregator"]
        self.detector = snapshot["detector"]
        self.incidents = snapshot["incidents"]
        self.engine.holding_since = dict(snapshot["holding"])
        self.history = snapshot["history"]
        self.stats = snapshot["stats"]
        self.reconfigure(self.settings, self.engine.rules)

    def resolve(self, incident_id: str, by: str) -> list[Page]:
        """A person resolved an incident: its resolution page (none if it is no longer open)."""
        incident = self.incidents.find(incident_id)
        if incident is None or self.incidents.open.get(incident.key) is not incident:
            return []
        now = max(filter(None, (incident.updated_at, self.aggregator.watermark)))
        return self._out(self.incidents.resolve_now(incident.key, now, f"resolved by {by}"))

    def false_alarm(self, incident_id: str) -> bool:
        """A person said an incident was no crisis: its latest bucket's volume is learned as
        normal, unless it was already (see `SignalDetector.accept`); whether it was now."""
        self.learn_pending()  # accepted after its bucket is learned, not undone by it
        incident = self.incidents.find(incident_id)
        return incident is not None and self.detector.accept(incident.latest.bucket)

    def feed(self, mention: Mention) -> list[Page]:
        """Take one mention; return the pages that the buckets it closed produced."""
        if self._unlearned is not None:
            self.learn_pending()
        if mention.created_at > self._horizon and self._ahead(mention.created_at):
            self.stats.future += 1
            return []
        if not self.deduper.first_time(mention.id):
            self.stats.duplicates += 1
            return []
        tokens = tokenize(mention.text)
        attributions = self.attributor.attribute(mention, tokens)
        if not attributions:
            if self.attributor.own_post(mention):
                self.stats.own += 1
            else:
                self.stats.unattributed += 1
            return []
        negative = self.scorer.negative_one(mention.text)
        bursts = self.rule_inputs.bursts.find(tokens)
        counted = True
        for found in attributions:
            scored = ScoredMention(
                mention, found.brand, found.topics, negative, found.replies_to_brand
            )
            views = ("", *self.rule_inputs.views_of(scored, tokens))
            counted = self.aggregator.add(scored, tokens, views, bursts)
        if counted:
            self.stats.mentions += 1
        else:
            self.stats.late += 1
        return self.advance(mention.created_at)

    def _ahead(self, moment: datetime) -> bool:
        """Whether `moment` is more than MAX_AHEAD ahead of the clock. The horizon moves up to
        the clock only when a mention passes it, so the clock is not read per mention."""
        if self._clock is None:
            self._horizon = datetime.max.replace(tzinfo=UTC)
            return False
        self._horizon = self._clock() + MAX_AHEAD
        return moment > self._horizon

    def advance(self, now: datetime) -> list[Page]:
        """Let time pass (a mention's time, or a live daemon's clock), up to the ceiling: close
        the buckets that ended and judge them."""
        if self.ceiling is not None and now > self.ceiling:
            if self.aggregator.watermark is None:
                return []  # held from the start: no watermark yet, so every bucket stays open
            now = self.ceiling
        if not self.aggregator.move_watermark(now):
            return []  # the usual case: nothing has ended
        return self.close_pending()

    @property
    def closes_pending(self) -> bool:
        """Whether buckets have ended that are not closed yet (more than `close_step` ended)."""
        return self.aggregator.ended

    def close_pending(self) -> list[Page]:
        """Close and judge the buckets that have ended (at most `close_step` bucket ends), one
        bucket end at a time, so what was passed over before one breaks what spans it. With
        `learn_after_pages`, the last one's learning waits for `learn_pending`, and the
        collector stays held off until then."""
        pages: list[Page] = []
        self._hold_collection()
        try:
            for _ in range(self.close_step or sys.maxsize):
                before = self.aggregator.next_to_close
                if before is None or not self.aggregator.ended:
                    break
                closed = self.aggregator.close_ended(1, self.unobserved_until)
                after = self.aggregator.next_to_close
                if after is not None and after - before > (1 if closed else 0):
                    self._passed_over()
                pages.extend(self.decide(closed))
                # Let go of the closed buckets while the collector is still held off: alive
                # when it comes back, they would be walked by a collection before the pages
                # leave (about 40 ms at 200 brands); dead, they cost it nothing. What was
                # judged holds them until it is learned from.
                del closed
        finally:
            self._closed()
        return pages

    def _passed_over(self) -> None:
        """Bucket ends were passed over as unknown: nothing spans them, neither a rule's `for`
        (a rule that held before a downtime has not held through it) nor a surge."""
        self._learn_judged()
        self.engine.holding_since.clear()
        self.detector.forget_recent()

    def finish(self) -> list[Page]:
        """The stream has ended: close every open bucket and resolve what went quiet (the last
        bucket end's learning waits with `learn_after_pages`, as a close's does)."""
        self._hold_collection()
        try:
            closed = self.aggregator.flush()
            pages = self.decide(closed)
        finally:
            self._closed()
        if closed:
            pages.extend(self._out(self.incidents.resolve_all(closed[-1].end)))
        return pages

    def decide(self, closed: list[Bucket]) -> list[Page]:
        """Judge closed buckets (grouped by their end, in order); return the pages they make.
        Each bucket end is learned from before the next is judged; the last one's is left to
        `_closed`, so its pages need not wait for it (about a third of a busy close's time)."""
        if not closed:
            return []
        pages: list[Page] = []
        for end, buckets in groupby(closed, key=lambda b: b.end):
            self._learn_judged()
            alerts = []
            watched = self.unobserved_until is None or end > self.unobserved_until
            judged = self.detector.judge(list(buckets), new_terms=self.rule_inputs.emerging_terms)
            self._unlearned = (judged, watched)
            self.stats.buckets += len(judged.signals)
            for signal in judged.signals:
                self.history.record(signal)
                alerts.extend(self.engine.evaluate(signal))
            self.stats.alerts += len(alerts)
            pages.extend(self.incidents.update(alerts, end))
        return self._out(pages)

    def _closed(self) -> None:
        """After closing: learn now (replays), even when judging raised, so what was judged
        is learned; or (`learn_after_pages`) leave it to `learn_pending`, the collector held
        off until then."""
        if not self.learn_after_pages:
            self.learn_pending()
        elif self._unlearned is None:
            self._release_collection()

    @property
    def learning_pending(self) -> bool:
        """Whether the last bucket end judged is still to be learned from."""
        return self._unlearned is not None

    def learn_pending(self) -> None:
        """With `learn_after_pages`: learn from the last bucket end judged, once its pages
        have left (the daemon calls this after queueing them; the next mention or snapshot
        would), then let the collector run again. Until then the closed buckets are still
        alive: the collector, held off since the close, would walk them all first."""
        try:
            self._learn_judged()
        finally:
            self._release_collection()

    def _learn_judged(self) -> None:
        if self._unlearned is not None:
            judged, watched = self._unlearned
            self._unlearned = None  # once, even if it raises
            self.detector.learn(judged, watched=watched)

    def _hold_collection(self) -> None:
        """Hold the cyclic garbage collector off from a close until its learning is done.

        A close allocates thousands of buckets and signals, enough to set off the collector,
        and a full collection walks every object made since `settle` (the open buckets'
        sample posts, above all): 10–45 ms at 200 brands, landing on the close in one of every
        few. Held off, it runs after the closed buckets are let go of, so the time goes to the
        next mention rather than between a surge's close and its page.
        """
        if self._collection_held is None:
            self._collection_held = gc.isenabled()
            gc.disable()

    def _release_collection(self) -> None:
        if self._collection_held:
            gc.enable()
        self._collection_held = None

    def _out(self, pages: list[Page]) -> list[Page]:
        """Pages as they leave the pipeline: counted, and each incident with its totals so far
        (all the brand's mentions since it began, which a page's latest bucket does not say)."""
        self.stats.pages += len(pages)
        return [replace(page, incident=self._with_totals(page.incident, page.at)) for page in pages]

    def _with_totals(self, incident: Incident, now: datetime) -> Incident:
        totals = self.history.totals(SeriesKey(incident.brand), incident.started_at, now)
        return replace(incident, totals=totals)


def _brand_terms(settings: Settings) -> dict[str, frozenset[str]]:
    return {b.id: _own_terms(b.keywords, b.hashtags, b.handles) for b in settings.brands}


def _own_terms(*groups: list[str]) -> frozenset[str]:
    """A brand's own names, which would otherwise top every bucket's terms."""
    terms: set[str] = set()
    for group in groups:
        for term in group:
            for token in tokenize(term):
                terms.update((token, token.lstrip("#@")))
    return frozenset(terms)


def settle() -> None:
    """Call once the pipeline's long-lived state is built (at start, after a reload).

    Every configured series' detectors and rings, the dedupe table and the sentiment model live
    as long as the process. Frozen out of the cyclic garbage collector's sight, they are no
    longer walked by each full collection, which had landed on bucket closes: 40–60 ms at 1,200
    series. What was frozen before is thawed first, so a cycle that has died since (a request,
    a task, what a reload replaced) is still collected rather than kept for good.

    Young collections then run every `YOUNG_COLLECTION` net allocations rather than CPython's
    700: at firehose rates that was one every few dozen mentions, each promoting the sample
    posts it caught alive towards the old generation, whose full collections they then made
    slower (1.2 s of collector time per 1.5 million mentions at 200 brands; 0.24 s after).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION, *gc.get_threshold()[1:])
