"""Wiring and lifecycle: sources → bounded queue → pipeline → dispatcher, until stopped.

Each source pumps into one bounded queue (a slow pipeline slows the sources, it never drops
mentions); one consumer owns the pipeline, so pages leave in the order they were decided.
SIGTERM/SIGINT stop the sources and drain the queue. A finite run (the demo replay) ends when
its sources end: open buckets are closed and their pages sent.

With live sources (Reddit, X, HTTP ingest) the clock also closes buckets: a tick marker goes
through the same queue every `tick_seconds`, so pages keep their order; replay-only runs never
tick and stay deterministic. Closes wait (for at most `catch_up_seconds`) while Reddit or X is
behind: starting, catching up or failing (`crisiswatch/frontiers.py`). A live source that ends
or fails is started again with back-off; one that stays stalled is reported to ops. Sources'
cursors are saved with the seen ids, once the pipeline has taken the mentions before them. A
helper task (reload, file watch, tick, health, feedback, watchdog) that fails is logged, told to
ops and started again with back-off; the pipeline's own task failing stops the daemon with its
error (systemd restarts it). Checkpoints and the pruning of old state run on an APScheduler
schedule in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from crisiswatch import checkpoint
from crisiswatch.checkpoint import Checkpoint, CheckpointError
from crisiswatch.config import LiveSettings
from crisiswatch.domain import IncidentStatus, Mention, Page, PageKind
from crisiswatch.frontiers import START, Frontiers
from crisiswatch.notify import Notifier, OpsNotifier
from crisiswatch.notify.codec import load_page
from crisiswatch.notify.dispatch import Dispatcher
from crisiswatch.ops import http as ops_http
from crisiswatch.ops.latency import Latency
from crisiswatch.ops.systemd import SdNotify, heartbeat, watchdog_interval
from crisiswatch.pipeline import Pipeline, PipelineStats, settle
from crisiswatch.reload import Deployment, Fingerprint, Watcher, load_deployment, needs_restart
from crisiswatch.retry import Backoff
from crisiswatch.sources import Progress, Source
from crisiswatch.sources.cursors import Checkpointed, Monitored
from crisiswatch.sources.resilience import HealthSnapshot, SourceSetupError, describe_error
from crisiswatch.store import Store, StoreError, to_the_end
from crisiswatch.yamlfile import ProblemsError

log = structlog.get_logger(__name__)
SEEN_BATCH = 2_000  # ids written at once when they do not wait for checkpoints
HELPER_STEADY = 60.0  # seconds a helper task runs before a failure of it counts as a new one
WATCH_FAILURES_TOLD = 3  # failed looks in a row at the watched files before ops are told
FORGOTTEN = "closed at a restart: the saved state did not know it (if it goes on, it pages anew)"
FAILING_IN_A_ROW = 20  # mentions the pipeline raises on in a row before it counts as broken
YIELD_EVERY = 500  # items the pipeline takes from a backlog before the loop's other work runs
PRUNE_FIRST = 60.0  # seconds after the start that old state is first pruned, then every …


@dataclass(frozen=True, slots=True)
class Tick:
    """The wall clock's time, put through the queue so that live buckets close on time."""

    at: datetime


@dataclass(frozen=True, slots=True)
class RunSummary:
    stats: PipelineStats
    malformed: int
    incidents_opened: int
    incidents_open_at_end: int
    pages_sent: int
    pages_failed: int
    seconds: float
    cut_short: tuple[str, ...] = ()  # files a source could not read to their end, and why

    def __str__(self) -> str:
        return self.text()

    def text(self, *, pages: bool = True) -> str:
        """One line of counts; without the pages sent and failed when `pages` is false (a
        backtest, whose notifier sends nothing, counts its pages itself)."""
        s = self.stats
        sent = f"{self.pages_sent} pages sent, {self.pages_failed} failed, " if pages else ""
        return (
            f"{s.mentions:,} mentions counted, {s.duplicates:,} duplicates dropped, "
            f"{self.malformed:,} malformed lines skipped, {s.unattributed:,} not about a watched "
            f"brand, {s.own:,} by the brands' own accounts, {s.late:,} too late, "
            f"{s.future:,} dated ahead of the clock, {s.failed:,} failed in the pipeline; "
            f"{s.buckets:,} buckets closed, {s.alerts:,} alerts → "
            f"{self.incidents_opened} incidents ({self.incidents_open_at_end} still open), "
            f"{sent}in {self.seconds:.1f}s"
        )


@dataclass(frozen=True, slots=True)
class Command:
    """A person's decision about an incident (Slack's Resolve or False alarm), applied by the
    pipeline's own task so it is ordered with the mentions."""

    action: str  # "resolve" or "false_alarm"
    incident_id: str
    by: str


Item = Mention | Progress | Tick | Command | None  # what the pipeline's task takes from its queue


class Unsaved:
    """The ids the pipeline took that are not in the store's seen ids yet (nor their sources'
    cursors saved), oldest first; `taken` counts every id ever added, so that a checkpoint can
    name the ids its picture has counted."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.refused: set[str] = set()  # of those, ids the pipeline refused: not to remember
        self.taken = 0
        self.newest = datetime.now(UTC)  # the newest one's time, stored with the batch

    def add(self, mention: Mention, *, refused: bool = False) -> None:
        """Note a mention the pipeline took; a `refused` one (dated ahead of the clock) still
        moves its source's cursors, but is not remembered as seen, so that its corrected resend
        counts after a restart too."""
        self.ids.append(mention.id)
        if refused:
            self.refused.add(mention.id)
        self.taken += 1
        self.newest = mention.created_at

    def to_remember(self, batch: list[str]) -> list[str]:
        """The ids of a batch taken that are to be remembered as seen (not the refused)."""
        if not self.refused:
            return batch
        kept = [mention_id for mention_id in batch if mention_id not in self.refused]
        self.refused.difference_update(batch)
        return kept

    def take(self, upto: int | None = None) -> list[str]:
        """Remove and return the oldest ids: those up to the `upto`-th taken, else all."""
        count = len(self.ids)
        if upto is not None:
            count = max(0, min(count, upto - (self.taken - count)))
        if count == len(self.ids):
            batch, self.ids = self.ids, []
        else:
            batch, self.ids = self.ids[:count], self.ids[count:]
        return batch


class Daemon:
    def __init__(
        self,
        pipeline: Pipeline,
        sources: Sequence[Source],
        notifiers: Sequence[Notifier],
        store: Store,
        *,
        queue_size: int,
        drain_seconds: float = 30.0,
        config: Path | None = None,
        watch_seconds: float = 5.0,
        tick_seconds: float = 10.0,
        notice_after: float = 900.0,
        health_seconds: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        checkpoint_dir: Path | None = None,
        checkpoint_seconds: float = 300.0,
        systemd: SdNotify | None = None,
        ops_listen: str | None = None,
        wedged_after: float = 60.0,
        live: LiveSettings | None = None,
        prune_seconds: float = 6 * 3600.0,
        catch_up_seconds: float = 300.0,
    ) -> None:
        self.pipeline = pipeline
        pipeline.close_step = 1  # the loop's other work goes on between bucket ends
        pipeline.learn_after_pages = True  # a close's pages are queued first (`_learn_pending`)
        self.sources = list(sources)
        # the settings every part reads at use time (Slack, escalation, digest, console): a
        # reload swaps them here; those it cannot apply are judged against the start-up ones
        self.live = live or LiveSettings(pipeline.settings)
        self._started_with = self.live.current
        self.dispatcher = Dispatcher(notifiers, store, live=self.live)
        self.drain_seconds = drain_seconds  # at the end, how long queued pages may take to leave
        self.store = store
        self.queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=queue_size)
        self.stopping = asyncio.Event()
        self._unsaved = Unsaved()
        self._saving = asyncio.Lock()  # one save of seen ids and cursors at a time, in order
        self._opened = 0
        self.notifiers = list(notifiers)
        self.config = config  # reloaded on SIGHUP and when it or its rule files change
        self.watch_seconds = watch_seconds
        self.reload_wanted = asyncio.Event()
        self.reloads = 0  # successful reloads (tests wait on it)
        self.tick_seconds = tick_seconds  # live runs: how often the clock closes buckets
        self.notice_after = notice_after  # a source stalled this long is reported to ops
        self.health_seconds = health_seconds
        self.clock = clock
        # the sources whose catch-up bucket closes wait for, and for how long at most
        waited_for = [s.name for s in self.sources if s.reports_progress]
        self.frontiers = Frontiers(
            waited_for,
            wait=timedelta(seconds=catch_up_seconds),
            now=clock() if waited_for else START,
        )  # a replay never reads the clock
        self._stalled_noticed: set[str] = set()
        self.checkpoint_dir = checkpoint_dir  # learned state is saved here (None: never)
        self.checkpoint_seconds = checkpoint_seconds
        self.checkpoints = 0
        self.checkpoint_failures = 0  # checkpoints that could not be written, for the metrics
        self._checkpointing = asyncio.Lock()  # the scheduled one and the last one never overlap
        self._checkpoint_failing = False  # the last checkpoint failed
        self._seen_problem: str | None = None  # the error saving seen ids, logged while it lasts
        self._started_at = time.monotonic()
        self.prune_seconds = prune_seconds  # how often state nothing needs is deleted (0: never)
        self.systemd = systemd or SdNotify("")
        self.ops_listen = ops_listen  # /metrics, /healthz, /readyz (None: no endpoint)
        self.ready = False
        self.read_per_source: Counter[str] = Counter()
        self.latency = Latency()  # time the pipeline takes per mention or tick, for the metrics
        self.closes = Latency()  # … per call that closed a bucket end: the close to its pages
        self.learning = Latency()  # … per close's learning, after its pages were queued
        self.last_checkpoint: float | None = None  # monotonic time of the last checkpoint
        self._consumer: asyncio.Task[None] | None = None
        self.wedged_after = wedged_after  # one item held this long while others wait: wedged
        self._took_at = time.monotonic()  # when the pipeline last took an item
        self._failing = 0  # mentions (or bucket ends) in a row the pipeline raised on
        self._forgotten: dict[str, Page] = {}  # unknown firing incidents: see _close_forgotten

    async def run(self, *, exit_when_sources_end: bool) -> RunSummary:
        started = self._started_at = time.monotonic()
        if any(not s.finite for s in self.sources):
            # Live: nothing watched what was posted before now but what the sources catch up
            # on, so the buckets before it (a downtime since the checkpoint) are not quiet.
            self.pipeline.unobserved_until = self.clock()
        if any(s.reports_progress for s in self.sources):  # before any mention
            self.pipeline.ceiling = self.frontiers.ceiling(self.clock())
        restored = await self._restore_seen()
        self._install_signal_handlers()
        self.dispatcher.start()
        if self.pipeline.unobserved_until is not None:  # live
            self._forgotten = await self._unknown_firing()
        log.info("daemon.started", sources=[s.name for s in self.sources], restored_ids=restored)
        consumer = self._consumer = asyncio.create_task(self._consume(), name="pipeline")
        ops = contextlib.AsyncExitStack()
        await self._serve_ops(ops)
        helpers = [self._helper("reload", self._reloader)] if self.config else []
        if self.config:
            helpers.append(self._helper("feedback", self._learn_feedback))
        if self.config and self.watch_seconds > 0:
            helpers.append(self._helper("watch", partial(self._watch, self.config)))
        if any(not s.finite for s in self.sources):
            if self.tick_seconds > 0:
                helpers.append(self._helper("tick", self._tick))
            helpers.append(self._helper("health", self._watch_health))
        pumps = [asyncio.create_task(self._pump(s), name=f"source:{s.name}") for s in self.sources]
        scheduler = self._start_schedule()
        watchdog = watchdog_interval()
        if watchdog:
            pings = partial(heartbeat, self.systemd, watchdog, self._alive)
            helpers.append(self._helper("watchdog", pings))
        self.systemd.ready(self.status())
        self.ready = True
        stop_wait = asyncio.create_task(self.stopping.wait())
        watched: set[asyncio.Future[Any]] = {stop_wait, consumer, *pumps}
        finished_all = False
        while not self.stopping.is_set():
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            watched -= done
            if consumer in done:  # the pipeline died: stop (systemd restarts us), never hang
                break
            if exit_when_sources_end and not any(p in watched for p in pumps):
                finished_all = True
                break
        self.systemd.stopping()
        await ops.aclose()
        scheduler.shutdown(wait=False)
        for task in (*pumps, stop_wait, *helpers):
            task.cancel()
        await asyncio.gather(*pumps, stop_wait, *helpers, return_exceptions=True)
        if consumer.done():
            await self.dispatcher.close(self.drain_seconds)  # pages already decided still go
            log.critical("daemon.pipeline_failed", error=repr(consumer.exception()))
            self._remove_signal_handlers()
            await consumer  # raises: the process exits non-zero
        await self.queue.put(None)  # the consumer drains what is queued, then ends
        await consumer
        if finished_all:
            for page in self.pipeline.finish():
                await self._send(page)
            await self._learn_pending()
        await self.dispatcher.close(self.drain_seconds)
        if not await self.checkpoint():  # saves the seen ids and cursors with it
            await self._save_seen()
        self._remove_signal_handlers()
        summary = RunSummary(
            stats=self.pipeline.stats,
            malformed=sum(getattr(s, "malformed", 0) for s in self.sources),
            incidents_opened=self._opened,
            incidents_open_at_end=len(self.pipeline.incidents.open),
            pages_sent=self.dispatcher.sent,
            pages_failed=self.dispatcher.failed,
            seconds=time.monotonic() - started,
            cut_short=tuple(
                problem for s in self.sources if (problem := getattr(s, "cut_short", None))
            ),
        )
        log.info("daemon.stopped", summary=str(summary))
        return summary

    async def _restore_seen(self) -> int:
        """Fill the dedupe window from the store's newest seen ids, a chunk at a time (a million
        ids held as one list would be ~150 MB); how many."""
        deduper = self.pipeline.deduper
        restored = 0
        async for chunk in self.store.recent_seen_chunks(deduper.capacity):
            for mention_id in chunk:
                deduper.first_time(mention_id)
            restored += len(chunk)
        return restored

    def _helper(self, name: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start one of the daemon's long-running helper tasks under `_keep_running`."""
        return asyncio.create_task(self._keep_running(name, work), name=name)

    async def _keep_running(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run a helper (reload, watch, tick, health, feedback, watchdog) for the daemon's whole
        life: one that fails is logged as critical, told to ops and started again after a
        back-off, rather than ending silently (no rule change would ever apply again)."""
        backoff = Backoff()
        while True:
            started = time.monotonic()
            try:
                await work()
                return  # a helper with nothing to do (no learning model) ends by itself
            except Exception as exc:
                if time.monotonic() - started > HELPER_STEADY:
                    backoff.reset()  # it ran well for a while: this is a new failure
                delay = backoff.next()
                log.critical(
                    "daemon.task_failed", task=name, restart_in=round(delay, 3), exc_info=True
                )
                await self._notice(
                    f"crisiswatch's {name} task failed ({describe_error(exc)}); "
                    f"it starts again in {delay:.0f}s"
                )
            await asyncio.sleep(delay)

    async def _pump(self, source: Source) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._read(source, backoff)
            except asyncio.CancelledError:
                raise
            except SourceSetupError as exc:
                log.error("source.cannot_start", source=source.name, error=str(exc))
                await self._notice(f"crisiswatch source {source.name} cannot start: {exc}")
                return
            except Exception:
                log.exception("source.failed", source=source.name)
            else:
                log.info("source.ended", source=source.name)
            if source.finite:
                return
            delay = backoff.next()  # a live source never stops for good: start it again
            log.warning("source.restarting", source=source.name, retry_in=round(delay, 3))
            await asyncio.sleep(delay)

    async def _read(self, source: Source, backoff: Backoff) -> None:
        """Put a source's mentions into the pipeline's queue. Its stream is closed however this
        ends, a stop too, so that it lets go at once (HTTP ingest answers the requests still
        waiting and closes its port) rather than when the process exits."""
        stream = source.stream()
        try:
            async for item in stream:
                if isinstance(item, Mention):
                    backoff.reset()
                    self.read_per_source[source.name] += 1
                await self.queue.put(item)
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def _consume(self) -> None:
        try:
            await self._take_items()
        finally:
            # A close's learning still waiting (its pages' queueing was cut short) is done
            # now: the collector is held off until it is, and must not stay off for good.
            if self.pipeline.learning_pending:
                try:
                    self.pipeline.learn_pending()
                except Exception:
                    log.exception("pipeline.learning_failed")

    async def _take_items(self) -> None:
        taken = 0
        while (item := await self.queue.get()) is not None:
            taken += 1
            if taken % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a backlog's items come without a wait: let others in
            self._took_at = time.monotonic()
            mark = self._mark()
            if isinstance(item, Command):
                pages = self._apply(item)
            elif isinstance(item, Tick):
                pages = self._closing(partial(self._advance, item.at))
                self._took(mark)
                if not self._ids_wait_for_checkpoints():
                    await self._save_seen()
            elif isinstance(item, Progress):
                self.frontiers.report(item, now := self.clock())
                pages = self._closing(partial(self._advance, now))
                self._took(mark, per_item=False)
            else:
                ahead = self.pipeline.stats.future
                pages = self._feed(item)
                self._took(mark)
                self._unsaved.add(item, refused=self.pipeline.stats.future > ahead)
                if len(self._unsaved.ids) >= self._held_at_most():
                    await self._save_seen()
            for page in pages:
                await self._send(page)
            await self._learn_pending()
            while self.pipeline.closes_pending:  # a long gap closes a bucket end at a time
                await asyncio.sleep(0)  # /healthz, clicks, sources and the watchdog in between
                self._took_at = time.monotonic()  # busy, not wedged
                mark = self._mark()
                closed = self._closing(self.pipeline.close_pending)
                self._took(mark, per_item=False)
                for page in closed:
                    await self._send(page)
                await self._learn_pending()
            if self._forgotten:
                await self._close_forgotten()

    def _mark(self) -> tuple[float, int, int]:
        """Before a pipeline call: the time, the series-buckets judged and the failures in a
        row, for `_took`."""
        return time.perf_counter(), self.pipeline.stats.buckets, self._failing

    def _took(self, mark: tuple[float, int, int], *, per_item: bool = True) -> None:
        """Count the pipeline's time since `mark` for an item (a mention or a clock tick) and,
        when it closed a bucket end and made its pages, for the close to its pages (a call
        that raised is a failure, not a close, wherever in the close it raised)."""
        started, judged, failing = mark
        took = time.perf_counter() - started
        if per_item:
            self.latency.observe(took)
        if self.pipeline.stats.buckets > judged and self._failing <= failing:
            self.closes.observe(took)

    def _closing(self, close: Callable[[], list[Page]]) -> list[Page]:
        """Bucket ends closed by the clock, a source's progress or a long gap's next step; one
        that raises (a bug its numbers set off) is logged and passed, as a mention the pipeline
        raises on is, and `FAILING_IN_A_ROW` in a row stop the daemon."""
        try:
            return close()  # one that works does not reset the count: mentions may still fail
        except Exception:
            self._pipeline_failed("pipeline.close_failed")
            return []

    async def _learn_pending(self) -> None:
        """A close's pages are queued before its detectors learn from it: the senders get
        their turn first, then the learning runs (about a third of a busy close's time). One
        that raises (a bug its numbers set off) is logged and passed, as a close is."""
        if self.pipeline.learning_pending:
            await asyncio.sleep(0)
            started = time.perf_counter()
            try:
                self.pipeline.learn_pending()
            except Exception:
                self._pipeline_failed("pipeline.learning_failed")
                return
            self.learning.observe(time.perf_counter() - started)

    def _feed(self, mention: Mention) -> list[Page]:
        """One mention through the pipeline. One it raises on (a bug its content sets off) is
        logged and dropped: were the daemon to stop, systemd would restart it, its source
        would send the same mention again, and it would stop again, for good. A pipeline that
        fails on `FAILING_IN_A_ROW` mentions in a row is broken, not fed a bad mention: the
        error then stops the daemon."""
        try:
            pages = self.pipeline.feed(mention)
        except Exception:
            self.pipeline.stats.failed += 1
            self._pipeline_failed(
                "pipeline.mention_failed", mention=mention.id[:80], source=mention.source
            )
            return []
        self._failing = 0
        return pages

    def _pipeline_failed(self, event: str, **fields: str) -> None:
        """Count the failure being handled: logged, or raised again once it is the
        `FAILING_IN_A_ROW`-th in a row (a broken pipeline, not one bad input)."""
        self._failing += 1
        if self._failing >= FAILING_IN_A_ROW:
            raise  # called from an except block: re-raises the failure it handles
        log.exception(event, **fields)

    def _advance(self, now: datetime) -> list[Page]:
        """Close what has ended by `now`, as far as the sources being waited for allow. While a
        source is behind and no longer waited for, what closes was not wholly watched."""
        self.pipeline.ceiling = self.frontiers.ceiling(now)
        if self.frontiers.unwatched(now):
            self.pipeline.unobserved_until = now
        return self.pipeline.advance(now)

    async def resolve(self, incident_id: str, by: str) -> None:
        await self.queue.put(Command("resolve", incident_id, by))

    async def false_alarm(self, incident_id: str, by: str) -> None:
        await self.queue.put(Command("false_alarm", incident_id, by))

    def _apply(self, command: Command) -> list[Page]:
        log.info("incident.feedback", action=command.action, incident=command.incident_id)
        if command.action == "resolve":
            return self.pipeline.resolve(command.incident_id, command.by)
        if not self.pipeline.false_alarm(command.incident_id):
            log.info(
                "incident.false_alarm_not_learned",
                incident=command.incident_id,
                reason="its latest bucket was learned already, or it is unknown",
            )
        return []

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            await self.queue.put(Tick(self.clock()))

    def health(self) -> list[HealthSnapshot]:
        """The health of every source that reports it."""
        return [s.health() for s in self.sources if isinstance(s, Monitored)]

    async def _watch_health(self) -> None:
        """Tell ops when a source has been stalled for `notice_after`, and when it recovers."""
        while True:
            await asyncio.sleep(self.health_seconds)
            await self.check_health()

    async def check_health(self) -> None:
        for snapshot in self.health():
            name = snapshot.source
            if snapshot.stalled:
                log.warning("source.stalled", health=snapshot.describe())
            if snapshot.stalled and snapshot.stalled_for >= self.notice_after:
                if name not in self._stalled_noticed:
                    self._stalled_noticed.add(name)
                    await self._notice(f"crisiswatch source {snapshot.describe()}")
            elif not snapshot.stalled and name in self._stalled_noticed:
                self._stalled_noticed.discard(name)
                await self._notice(f"crisiswatch source {name} recovered")

    async def _unknown_firing(self) -> dict[str, Page]:
        """The incidents the store has as firing that the restored state does not know, with
        the last page of each (a checkpoint moved aside or older than the incident, an upgrade
        that starts state fresh): nothing would resolve them, so their message would say firing
        for ever and escalation would call people about them."""
        found = {}
        for incident_id, payload in await self.store.firing():
            if self.pipeline.incidents.find(incident_id) is None:
                found[incident_id] = load_page(payload)
        return found

    async def _close_forgotten(self) -> None:
        """Resolve each unknown incident once the watermark has passed its last page and the
        pipeline still does not know it: the mentions read again since the checkpoint (a crash)
        may make it again first, as the same incident. Its people are told why; a crisis that
        goes on opens a new incident."""
        watermark = self.pipeline.aggregator.watermark
        if watermark is None:
            return
        for incident_id, last in list(self._forgotten.items()):
            if watermark < last.at:
                continue
            del self._forgotten[incident_id]
            if self.pipeline.incidents.find(incident_id) is not None:
                continue  # made again from the mentions read again
            now = self.clock()
            closed = replace(
                last.incident, status=IncidentStatus.RESOLVED, resolved_at=now, updated_at=now
            )
            log.warning("incident.forgotten", incident=incident_id)
            await self._send(Page(closed, PageKind.RESOLVED, now, (FORGOTTEN,)))

    async def _send(self, page: Page) -> None:
        if page.kind is PageKind.OPENED:
            self._opened += 1
        await self.dispatcher.dispatch(page)

    def _ids_wait_for_checkpoints(self) -> bool:
        """Whether taken ids and cursors are saved with the checkpoints: then after a crash the
        mentions since the last one are read again and counted into the restored state, nothing
        lost, nothing counted twice. Without scheduled checkpoints, or while they fail, they are
        saved on their own, in batches, so that they reach the store and memory stays bounded."""
        return self._checkpoints_scheduled and not self._checkpoint_failing

    @property
    def _checkpoints_scheduled(self) -> bool:
        return self.checkpoint_dir is not None and self.checkpoint_seconds > 0

    def _held_at_most(self) -> int:
        """Taken ids kept before they are saved on their own: while they wait for checkpoints,
        the dedupe window's worth (the store would prune older ones anyway), else a batch."""
        return self.pipeline.deduper.capacity if self._ids_wait_for_checkpoints() else SEEN_BATCH

    async def _save_seen(self, upto: int | None = None) -> None:
        """Save the oldest unsaved ids (those up to the `upto`-th taken, else all) as seen, then
        the cursors they reached. One save at a time, each taking the oldest ids when its turn
        comes, so ids and cursors are saved in the order taken, and each once."""
        async with self._saving:
            ids = self._unsaved.take(upto)
            if remembered := self._unsaved.to_remember(ids):
                await self._mark_seen(remembered)
            for source in self.sources:
                if isinstance(source, Checkpointed):
                    try:
                        await source.commit(ids)
                    except Exception as exc:
                        log.error("store.cursor_unsaved", source=source.name, error=str(exc))

    async def _mark_seen(self, ids: list[str]) -> None:
        """Write ids to the store's seen ids. A failure (a full disk) is logged once while it
        lasts; the ids are not kept for another try, so memory stays bounded (a restart may
        then count a redelivered mention of them again)."""
        keep = self.pipeline.deduper.capacity
        try:
            await self.store.mark_seen(ids, self._unsaved.newest, keep=keep)
        except Exception as exc:
            if str(exc) != self._seen_problem:
                log.error(
                    "store.seen_unsaved",
                    count=len(ids),
                    error=str(exc),
                    effect="not remembered across a restart; logged once while this lasts",
                )
            self._seen_problem = str(exc)
            return
        if self._seen_problem is not None:
            log.info("store.seen_saved_again")
            self._seen_problem = None

    def _start_schedule(self) -> AsyncIOScheduler:
        """The periodic work (APScheduler, in this event loop): checkpoints when there is a
        place, and pruning old state, first soon after the start (a daemon restarted often
        prunes too), then every `prune_seconds`. A run that falls due while the loop is busy
        (closing a long downtime's buckets) runs once when it is free, however late: with
        APScheduler's default grace of a second it was skipped until the next one."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        late = {"coalesce": True, "misfire_grace_time": None}
        if self._checkpoints_scheduled:
            scheduler.add_job(self.checkpoint, "interval", seconds=self.checkpoint_seconds, **late)
        if self.prune_seconds > 0:
            first = datetime.now(UTC) + timedelta(seconds=min(PRUNE_FIRST, self.prune_seconds))
            scheduler.add_job(
                self.prune, "interval", seconds=self.prune_seconds, next_run_time=first, **late
            )
        scheduler.start()
        return scheduler

    async def prune(self) -> None:
        """Delete the state nothing needs any more, older than `ops.retention`; a failure is
        logged and the next run tries again."""
        before = self.clock() - self._started_with.ops.retention
        try:
            deleted = await self.store.prune(before)
        except StoreError as exc:
            log.error("store.prune_failed", error=str(exc), effect="tried again at the next run")
            return
        if any(deleted.values()):
            log.info("store.pruned", before=before.isoformat(), rows=deleted)

    async def checkpoint(self) -> bool:
        """Save the learned state now, then the seen ids and cursors of the mentions it counted.
        A failure is logged loudly and counted; the daemon goes on, saving seen ids and cursors
        on their own until a checkpoint works again."""
        if self.checkpoint_dir is None:
            return False
        async with self._checkpointing:
            state = getattr(self.pipeline.scorer, "state", None)
            with self.pipeline.history.frozen() as history:  # the bulk, written by the thread
                saved = Checkpoint(
                    saved_at=datetime.now(UTC),
                    pipeline=checkpoint.Snapshot(self.pipeline.snapshot(), {"history": history}),
                    sentiment=state() if callable(state) else None,
                )  # here, in the loop: a consistent picture
                counted = self._unsaved.taken  # the mentions this picture has counted
                try:
                    size = await to_the_end(partial(checkpoint.save, self.checkpoint_dir, saved))
                except CheckpointError as exc:
                    self._checkpoint_failed(exc)
                    await self._save_seen()
                    return False
            self._checkpoint_saved(size)
            await self._save_seen(counted)
            return True

    def _checkpoint_failed(self, exc: CheckpointError) -> None:
        self.checkpoint_failures += 1
        self._checkpoint_failing = True
        log.error(
            "checkpoint.failed",
            error=str(exc),
            failures=self.checkpoint_failures,
            effect="learned state not saved; seen ids and cursors are saved without it",
        )

    def _checkpoint_saved(self, size: int) -> None:
        if self._checkpoint_failing:
            log.info("checkpoint.recovered", failures=self.checkpoint_failures)
        self._checkpoint_failing = False
        self.checkpoints += 1
        self.last_checkpoint = time.monotonic()
        log.info("checkpoint.saved", bytes=size)

    def checkpoint_age(self) -> float | None:
        """Seconds since the last checkpoint, or since the start while none has worked; None
        when this daemon does not checkpoint."""
        if self.checkpoint_dir is None:
            return None
        last = self.last_checkpoint if self.last_checkpoint is not None else self._started_at
        return time.monotonic() - last

    def status(self) -> str:
        """One line for `systemctl status`."""
        stats = self.pipeline.stats
        line = (
            f"{stats.mentions:,} mentions, {len(self.pipeline.incidents.open)} incidents open, "
            f"{self.dispatcher.sent} pages sent, queue {self.queue.qsize()}"
        )
        if self.pipeline.ceiling is not None and (waiting := self.frontiers.waiting_for(
            self.clock()
        )):  # fmt: skip
            line += f", bucket closes wait for {', '.join(waiting)} to catch up"
        live = self.pipeline.unobserved_until is not None
        if live and (behind := self.frontiers.unwatched(self.clock())):
            verb = "is" if len(behind) == 1 else "are"
            line += f", baselines not learning while {', '.join(behind)} {verb} behind"
        return line

    async def _serve_ops(self, stack: contextlib.AsyncExitStack) -> None:
        """Start /metrics, /healthz and /readyz until `stack` closes; a port in use is logged,
        not fatal."""
        if not self.ops_listen:
            return
        try:
            await stack.enter_async_context(ops_http.serve(self, self.ops_listen))
        except (OSError, ValueError) as exc:
            log.error("ops.endpoint_failed", listen=self.ops_listen, error=str(exc))

    def pipeline_alive(self) -> bool:
        """The pipeline's task runs and is not stuck on one item while others wait."""
        if self._consumer is None or self._consumer.done():
            return False
        return self.queue.empty() or time.monotonic() - self._took_at <= self.wedged_after

    async def queued_pages(self) -> int:
        """Pages waiting in the outbox, over every notifier."""
        total = 0
        for notifier in self.notifiers:
            with contextlib.suppress(StoreError):  # undercount rather than fail the scrape
                total += await self.store.pending(notifier.name)
        return total

    def _alive(self) -> bool:
        """The watchdog's question: is the pipeline still consuming? If not, the pings stop and
        systemd restarts the service (which resumes from the last checkpoint)."""
        self.systemd.status(self.status())
        if self.stopping.is_set():
            return False
        if not self.pipeline_alive():
            log.error("pipeline.wedged", queued=self.queue.qsize(), effect="watchdog not fed")
            return False
        return True

    async def _learn_feedback(self) -> None:
        """Teach the sentiment model what `crisiswatch feedback` queued in the store."""
        learn = getattr(self.pipeline.scorer, "learn_one", None)
        if not callable(learn):
            return
        while True:
            try:
                pending = await self.store.pending_feedback()
                for _, text, label in pending:
                    learn(text, label)
                if pending:
                    await self.store.feedback_applied([seq for seq, _, _ in pending])
                    log.info("feedback.learned", examples=len(pending))
            except StoreError as exc:
                log.error("feedback.unreadable", error=str(exc))
            await asyncio.sleep(self.watch_seconds or 5.0)

    async def _reloader(self) -> None:
        while True:
            await self.reload_wanted.wait()
            self.reload_wanted.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Load and check the config and rules; swap them in whole, or keep the running ones.

        Whatever goes wrong (problems in the files, a rule folder removed while it is read, a
        bug), the running rules stay, ops are told, and systemd hears READY=1 after RELOADING=1.
        """
        assert self.config is not None
        self.systemd.reloading()
        refusal = None
        try:
            self._swap_in(await asyncio.to_thread(load_deployment, self.config))
        except ProblemsError as exc:
            problems = [str(problem) for problem in exc.problems]
            log.error("config.reload_failed", problems=problems, kept="the running rules")
            listed = "\n".join(problems[:10])
            refusal = f"the new config or rules have {len(problems)} problem(s):\n{listed}"
        except Exception as exc:
            log.exception("config.reload_failed", kept="the running rules")
            refusal = f"reloading failed: {describe_error(exc)}"
        self.systemd.ready(self.status())
        if refusal is not None:
            await self._notice(f"crisiswatch kept its running rules: {refusal}")
            return False
        return True

    def _swap_in(self, deployment: Deployment) -> None:
        """Swap a checked deployment in; warn about the settings only a restart applies."""
        restart = needs_restart(self._started_with, deployment.settings)
        if restart:
            log.warning(
                "config.reload_needs_restart",
                settings=restart,
                effect="these keep their start-up values until crisiswatch is restarted",
            )
        self.pipeline.reconfigure(deployment.settings, deployment.rules)
        settle()
        self.live.swap(deployment.settings)
        self.reloads += 1
        log.info(
            "config.reloaded", rules=len(deployment.rules), brands=len(deployment.settings.brands)
        )

    async def _watch(self, config: Path) -> None:
        """Reload when the config or a rule file changes. A look that fails (a rule folder
        removed while it is walked, in a deploy's rm -rf + copy) is tried again at the next
        one; one that keeps failing is logged as an error and told to ops, once."""
        watcher = Watcher(config)
        seen: Fingerprint | None = None
        failures = 0
        while True:
            try:
                now = await asyncio.to_thread(watcher.fingerprint)
            except Exception as exc:
                failures += 1
                await self._watch_failed(exc, failures)
            else:
                if failures:
                    log.info("config.watch_recovered", failures=failures)
                failures = 0
                if seen is not None and now != seen:
                    changed = sorted({mark[0] for mark in set(now) ^ set(seen)})
                    log.info("config.changed", files=changed)  # edited, added or removed
                    self.reload_wanted.set()
                seen = now
            await asyncio.sleep(self.watch_seconds)

    async def _watch_failed(self, exc: Exception, failures: int) -> None:
        """A warning for the first failed look in a row; an error and ops told at the third."""
        error = describe_error(exc)
        if failures == 1:
            log.warning("config.watch_failed", error=error, effect="looking again")
        elif failures == WATCH_FAILURES_TOLD:
            log.error(
                "config.watch_failing",
                error=error,
                failures=failures,
                effect="file changes are not noticed; SIGHUP still reloads",
            )
            await self._notice(
                f"crisiswatch cannot watch its config and rules for changes ({error}); "
                "reload with SIGHUP (systemctl reload) until this is fixed"
            )

    async def _notice(self, text: str) -> None:
        """Tell ops through every notifier that has an ops channel."""
        for notifier in self.notifiers:
            if isinstance(notifier, OpsNotifier):
                try:
                    await notifier.notice(text)
                except Exception as exc:
                    log.error("ops_notice.failed", notifier=notifier.name, error=str(exc))

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _on_reload_signal(self) -> None:
        if self.config is None:
            log.warning("daemon.reload_ignored", reason="no config file (the demo)")
            return
        log.info("daemon.reloading", signal="SIGHUP")
        self.reload_wanted.set()

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.stopping", signal=sig.name)
        self.stopping.set()
