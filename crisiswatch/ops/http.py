"""The ops endpoint on localhost: `/metrics` for Prometheus, `/healthz` and `/readyz` for probes.

Metrics are read from the daemon's own counters when scraped (a custom collector), so the hot
path pays nothing for them. `/healthz` answers while the event loop and the pipeline are alive;
`/readyz` also needs the daemon to be up and no source stalled, and says in JSON what is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from crisiswatch.ops.listener import DEFAULT_LIMITS, REFUSED, Limits, serving

if TYPE_CHECKING:
    from crisiswatch.daemon import Daemon
    from crisiswatch.ops.latency import Latency


class DaemonCollector(Collector):
    """Turns the daemon's counters into Prometheus metrics at scrape time."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.queued = 0  # outbox pages waiting, refreshed by the handler before each scrape

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        daemon = self.daemon
        stats = daemon.pipeline.stats
        mentions = CounterMetricFamily(
            "crisiswatch_mentions", "Mentions taken in, by what became of them", labels=["outcome"]
        )
        for outcome, value in (
            ("counted", stats.mentions),
            ("duplicate", stats.duplicates),
            ("unattributed", stats.unattributed),
            ("own", stats.own),
            ("late", stats.late),
            ("future", stats.future),
            ("failed", stats.failed),
        ):
            mentions.add_metric([outcome], value)
        yield mentions
        by_source = CounterMetricFamily(
            "crisiswatch_source_mentions", "Mentions read per source", labels=["source"]
        )
        for source, count in sorted(daemon.read_per_source.items()):
            by_source.add_metric([source], count)
        yield by_source
        lag = GaugeMetricFamily(
            "crisiswatch_source_lag_seconds",
            "Seconds since each live source last fetched successfully",
            labels=["source"],
        )
        for health in daemon.health():
            lag.add_metric([health.source], health.stalled_for)
        yield lag
        pages = CounterMetricFamily("crisiswatch_pages", "Pages by outcome", labels=["outcome"])
        dispatcher = daemon.dispatcher
        for outcome, value in (
            ("sent", dispatcher.sent),
            ("failed", dispatcher.failed),
            ("silenced", dispatcher.silenced),
        ):
            pages.add_metric([outcome], value)
        yield pages
        yield GaugeMetricFamily("crisiswatch_pages_queued", "Pages in the outbox", self.queued)
        yield GaugeMetricFamily(
            "crisiswatch_pages_in_memory",
            "Pages waiting in memory because the outbox cannot take them (a full disk)",
            dispatcher.in_memory,
        )
        yield GaugeMetricFamily(
            "crisiswatch_queue_depth", "Mentions waiting for the pipeline", daemon.queue.qsize()
        )
        yield GaugeMetricFamily(
            "crisiswatch_incidents_open", "Incidents firing", len(daemon.pipeline.incidents.open)
        )
        yield CounterMetricFamily("crisiswatch_buckets_closed", "Buckets judged", stats.buckets)
        watermark = daemon.pipeline.aggregator.watermark
        if watermark is not None:
            yield GaugeMetricFamily(
                "crisiswatch_watermark_delay_seconds",
                "Seconds the watermark that closes buckets is behind the clock (the allowed "
                "lateness; more while closes wait for a source to catch up)",
                (daemon.clock() - watermark).total_seconds(),
            )
        yield CounterMetricFamily("crisiswatch_alerts", "Rule alerts", stats.alerts)
        refused = CounterMetricFamily(
            "crisiswatch_http_connections_refused",
            "Connections closed over an HTTP server's connection limit (a new one, or the one "
            "idle longest)",
            labels=["server"],
        )
        for server, count in sorted(REFUSED.items()):
            refused.add_metric([server], count)
        yield refused
        yield _histogram(
            "crisiswatch_pipeline_seconds",
            "Time the pipeline took per mention or clock tick (closing buckets and judging them)",
            daemon.latency,
        )
        yield _histogram(
            "crisiswatch_bucket_close_seconds",
            "Time from closing a bucket end to its pages (every series' bucket, detectors, rules "
            "and incidents), per pipeline call that closed one",
            daemon.closes,
        )
        yield _histogram(
            "crisiswatch_learning_seconds",
            "Time the detectors took to learn from a closed bucket end, after its pages were "
            "queued (the next mention waits for it)",
            daemon.learning,
        )
        age = daemon.checkpoint_age()
        if age is not None:
            yield GaugeMetricFamily(
                "crisiswatch_checkpoint_age_seconds",
                "Seconds since the last checkpoint (since the start while none has worked)",
                age,
            )
            yield CounterMetricFamily(
                "crisiswatch_checkpoint_failures",
                "Checkpoints that could not be written",
                daemon.checkpoint_failures,
            )


def _histogram(name: str, documentation: str, latency: Latency) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=latency.cumulative(), sum_value=latency.total
    )


def problems(daemon: Daemon) -> list[str]:
    """What keeps the daemon from being ready, in plain words (empty: ready)."""
    found = []
    if not daemon.ready:
        found.append("starting: config, state or sources not up yet")
    if daemon.stopping.is_set():
        found.append("stopping")
    found.extend(h.describe() for h in daemon.health() if h.stalled)
    return found


def app(daemon: Daemon) -> web.Application:
    registry = CollectorRegistry()
    collector = DaemonCollector(daemon)
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        collector.queued = await daemon.queued_pages()
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        alive = daemon.pipeline_alive()
        body = {"status": "ok" if alive else "pipeline stopped or stuck"}
        return web.json_response(body, status=200 if alive else 503, dumps=_dumps)

    async def readyz(request: web.Request) -> web.Response:
        found = problems(daemon)
        body = {"ready": not found, "problems": found}
        return web.json_response(body, status=503 if found else 200, dumps=_dumps)

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    return application


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def serve(
    daemon: Daemon, listen: str, limits: Limits = DEFAULT_LIMITS
) -> AbstractAsyncContextManager[tuple[str, int]]:
    """Serve the endpoint on `host:port` for the block's duration; yields where it listens."""
    return serving(app(daemon), listen, name="ops", limits=limits)
