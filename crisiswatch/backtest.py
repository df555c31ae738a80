"""Backtests: what a rule set would have paged over a mentions file, and how two rule sets differ.

Every backtest runs the daemon itself (the CLI's `serve`: a `Daemon` with a replay source and a
temporary state directory) with a notifier that collects the pages, so a backtest pages exactly
what `crisiswatch run` would. A page its route's quiet hours hold goes out when they end, in
event time, as `rules test` decides it and as Slack would get it. `--compare` runs a second
rule set over the same file and reports the difference per rule and per route, then the pages
that are gone and the new ones: an alert budget to review with a rule change.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

import orjson

from crisiswatch.config import ReplaySettings, Route, Settings
from crisiswatch.daemon import RunSummary
from crisiswatch.domain import Page, PageKind
from crisiswatch.durations import format_duration
from crisiswatch.notify import Notifier
from crisiswatch.notify.render import clean_text, render_line
from crisiswatch.notify.stages import QuietQueue
from crisiswatch.rules.loader import load_rules
from crisiswatch.rules.schema import Rule
from crisiswatch.sources.replay import ReplaySource

TICK_SECONDS = 0.25  # how often the progress line on a terminal is redrawn


class Serve(Protocol):
    """Runs the daemon over the config's sources until they end (the CLI's `_serve`)."""

    def __call__(
        self,
        settings: Settings,
        rules: list[Rule],
        notifiers: list[Notifier],
        directory: Path,
        *,
        finite: bool,
        watch: Callable[[ReplaySource], None] | None = None,
    ) -> Coroutine[Any, Any, RunSummary]: ...


def page_record(page: Page) -> dict[str, Any]:
    incident = page.incident
    return {
        "at": page.at.isoformat(),
        "kind": page.kind.value,
        "incident": incident.id,
        "brand": incident.brand,
        "severity": incident.severity.label,
        "stage": incident.stage.label,
        "route": incident.route,
        "rules": incident.rules,
        "topics": incident.topics,
        "sources": incident.sources,
        "summary": incident.summary,
        "reasons": incident.reasons,
        "changes": page.changes,
    }


WHY_INDENT = " " * len("2026-03-02 15:20 UTC  ")  # a page's reasons go under its kind


@dataclass(frozen=True, slots=True)
class Delivered:
    """A page as it would have gone out: `page.at` is when; `made_at` is when the daemon made
    it, earlier when its route's quiet hours held it. Not `sent`: held, then overtaken by a
    newer page of its incident."""

    page: Page
    made_at: datetime
    sent: bool = True

    @property
    def held(self) -> bool:
        return self.page.at != self.made_at

    def line(self) -> str:
        """One line; an overtaken page's at when it was made, as it never went out."""
        if not self.sent:
            until = f"  (held by the route's quiet hours until {self.page.at:%Y-%m-%d %H:%M} UTC)"
            return render_line(replace(self.page, at=self.made_at)) + until
        held = f"  (made {self.made_at:%Y-%m-%d %H:%M} UTC, held by the route's quiet hours)"
        return render_line(self.page) + (held if self.held else "")

    def why(self) -> str | None:
        """Why it pages: the reasons it carries (its latest alert's conditions, in numbers), as
        Slack and the console show them; None for a resolution, which shows none."""
        reasons = self.page.incident.reasons
        if self.page.kind is PageKind.RESOLVED or not reasons:
            return None
        return "; ".join(clean_text(reason, 300) for reason in reasons)

    def text(self, prefix: str = "") -> str:
        """Its line after `prefix`, and under it why it pages."""
        why = self.why()
        below = f"\n{' ' * len(prefix)}{WHY_INDENT}why: {why}" if why else ""
        return prefix + self.line() + below

    def record(self) -> dict[str, Any]:
        return {**page_record(self.page), "made_at": self.made_at.isoformat(), "held": self.held}

    def json(self) -> str:
        return orjson.dumps(self.record()).decode()


class ProgressLine:
    """One self-redrawing status line on a terminal's stderr: time, pages, the latest page."""

    def __init__(self, err: TextIO, label: str) -> None:
        self._err = err
        self._label = label
        self._started = time.monotonic()
        self.pages = 0
        self.latest: datetime | None = None
        self.replay: ReplaySource | None = None  # the source being read, for how far it has got

    def draw(self) -> None:
        latest = f", latest {self.latest:%Y-%m-%d %H:%M} UTC" if self.latest else ""
        seconds = time.monotonic() - self._started
        done = self.replay.fraction_read if self.replay is not None else 0.0
        bar = "█" * round(done * 20) + "·" * (20 - round(done * 20))
        self._err.write(
            f"\r\x1b[K{self._label}: {bar} {done:4.0%} {seconds:.1f}s, {self.pages} pages{latest}"
        )
        self._err.flush()

    def watch(self, replay: ReplaySource) -> None:
        self.replay = replay

    def clear(self) -> None:
        self._err.write("\r\x1b[K")
        self._err.flush()

    async def run(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(TICK_SECONDS)


class Collector:
    """A notifier that keeps the pages in the order they would have gone out, and prints each
    as it goes when given `out`. A page in its route's quiet hours (decided in event time, as in
    rule tests: the daemon's dispatcher would read the wall clock) waits for their end, while
    the pages made meanwhile go out."""

    name = "backtest"

    def __init__(
        self,
        routes: Mapping[str, Route],
        out: TextIO | None = None,
        as_json: bool = False,
        progress: ProgressLine | None = None,
    ) -> None:
        self.pages: list[Delivered] = []
        self._queue = QuietQueue(routes)
        self._out = out
        self._json = as_json
        self._progress = progress

    @property
    def overtaken(self) -> list[Delivered]:
        """Held pages a newer page of their incident overtook: not sent."""
        return [Delivered(page, made, sent=False) for page, made in self._queue.superseded]

    async def send(self, page: Page) -> None:
        released = self._queue.offer(page)
        if self._progress is not None:
            self._progress.pages += 1
            self._progress.latest = page.at
        self._deliver(released)

    def finish(self) -> None:
        """The stream has ended: the pages still held go out as their quiet hours end."""
        self._deliver(self._queue.finish())

    def _deliver(self, released: list[tuple[Page, datetime]]) -> None:
        for page, made_at in released:
            delivered = Delivered(page, made_at)
            self.pages.append(delivered)
            if self._out is not None:
                self._out.write((delivered.json() if self._json else delivered.text()) + "\n")


@dataclass(frozen=True, slots=True)
class Backtest:
    label: str  # the rule files or folders
    rules: list[Rule]
    pages: list[Delivered]  # in the order they would have gone out
    summary: RunSummary
    # held by quiet hours, then overtaken by a newer page of their incident: never sent
    overtaken: list[Delivered] = field(default_factory=list)


def replay(
    settings: Settings,
    rule_paths: Sequence[Path],
    mentions: Path,
    serve: Serve,
    *,
    out: TextIO | None = None,
    as_json: bool = False,
    progress: ProgressLine | None = None,
) -> Backtest:
    """Run the daemon over `mentions` with the rules in `rule_paths`; keep what it paged.

    With `out`, each page is printed as it is sent (a line, or a JSON object with `as_json`).
    """
    rules = load_rules(rule_paths, settings)
    collector = Collector(settings.routes, out, as_json, progress)
    sources = settings.sources.model_copy(update={"replay": ReplaySettings(path=mentions)})
    # A backtest sends nothing: its pages go to the report, never to a deployment's Slack.
    quiet = settings.notify.model_copy(
        update={
            "console": False,
            "slack": settings.notify.slack.model_copy(update={"enabled": False}),
        }
    )
    settings = settings.model_copy(update={"sources": sources, "notify": quiet})

    async def run() -> RunSummary:
        ticker = asyncio.create_task(progress.run()) if progress is not None else None
        try:
            watch = progress.watch if progress is not None else None
            return await serve(settings, rules, [collector], directory, finite=True, watch=watch)
        finally:
            if ticker is not None and progress is not None:
                ticker.cancel()
                progress.clear()

    with tempfile.TemporaryDirectory(prefix="crisiswatch-backtest-") as tmp:
        directory = Path(tmp)
        summary = asyncio.run(run())
    collector.finish()
    label = ", ".join(str(p) for p in rule_paths)
    return Backtest(label, rules, collector.pages, summary, collector.overtaken)


def backtest(
    settings: Settings,
    mentions: Path,
    serve: Serve,
    *,
    deployment: str,
    rules: Sequence[Path] | None = None,
    compare: Sequence[Path] | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`crisiswatch backtest`: report one rule set's pages, or compare two; the exit code.

    `deployment` says whose config `settings` are; it is the report's first line (on `err`
    with `as_json`, so that `out` stays JSON), before the rules are checked against it.
    """
    out, err = out or sys.stdout, err or sys.stderr
    if not mentions.is_file():
        print(f"crisiswatch: no such mentions file: {mentions}", file=err)
        return 1
    print(f"deployment: {deployment}", file=err if as_json else out, flush=True)
    before_paths = list(rules or settings.rules)
    if not compare:
        progress = _progress(err, "backtest")
        result = replay(
            settings, before_paths, mentions, serve, out=out, as_json=as_json, progress=progress
        )
        if not as_json:
            report(result, out)
        return _in_time_order(result, mentions, settings, err)
    before, after = (
        replay(settings, paths, mentions, serve, progress=_progress(err, f"backtest {n}/2"))
        for n, paths in enumerate((before_paths, list(compare)), start=1)
    )
    diff = Comparison.of(before, after)
    out.write(diff.json() + "\n" if as_json else diff.text(mentions.name))
    return _in_time_order(before, mentions, settings, err)


def _progress(err: TextIO, label: str) -> ProgressLine | None:
    return ProgressLine(err, label) if err.isatty() else None


def _in_time_order(result: Backtest, mentions: Path, settings: Settings, err: TextIO) -> int:
    """The exit code: 1, saying why, when mentions came too late to count. A replay reads the
    file in its order, so a mention that late is one out of order (a newest-first file loses
    nearly all), and the pages are not what the rules would have paged on the whole file."""
    late = result.summary.stats.late
    if not late:
        return 0
    lateness = format_duration(settings.pipeline.allowed_lateness)
    print(
        f"crisiswatch: {mentions} is not in time order: {late:,} mentions were too late (older, "
        f"by more than pipeline.allowed_lateness ({lateness}), than a mention before them in the "
        "file) and were not counted, so these pages miss them; sort the file by created_at and "
        "run the backtest again",
        file=err,
    )
    return 1


def report(result: Backtest, out: TextIO) -> None:
    """The counts after the pages, each of pages printed: the pages sent (those listed above)
    and how many of them quiet hours held; the held pages a newer page overtook, listed, as
    they were never sent; the incidents opened and, per rule, the incidents it took part in
    opening and the pages sent naming it; then the run's counts (without its pages: every page
    made is counted here, sent or overtaken)."""
    held = sum(delivered.held for delivered in result.pages)
    print(
        f"\n{len(result.pages)} pages sent, {held} of them held by quiet hours until they ended",
        file=out,
    )
    if result.overtaken:
        print(
            f"{len(result.overtaken)} more held by quiet hours, then overtaken by a newer page of "
            "their incident (not sent):",
            file=out,
        )
        for delivered in result.overtaken:
            print(delivered.text("  "), file=out)
    opening = [d.page for d in (*result.pages, *result.overtaken) if d.page.kind is PageKind.OPENED]
    print(
        f"{len(opening)} incidents opened; per rule: incidents it took part in opening (the "
        "rules its opening page names) / pages sent naming it",
        file=out,
    )
    opened = Counter(rule_id for page in opening for rule_id in page.incident.rules)
    paged = Counter(rule_id for d in result.pages for rule_id in d.page.incident.rules)
    for rule in result.rules:
        print(f"  {rule.id:<28} {opened[rule.id]:>4} / {paged[rule.id]}", file=out)
    print(result.summary.text(pages=False), file=out)


PageId = tuple[datetime, str, str, str, str, str, tuple[str, ...]]


def page_id(page: Page) -> PageId:
    """What makes two backtests' pages the same page: when, what, which incident, how bad, why."""
    incident = page.incident
    return (
        page.at,
        page.kind.value,
        incident.key,
        incident.route,
        incident.severity.label,
        incident.stage.label,
        incident.rules,
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """One rule's (or route's) pages before and after."""

    name: str
    before: int
    after: int
    gone: int
    new: int

    def line(self, width: int) -> str:
        return (
            f"  {self.name:<{width}} {self.before:>4} → {self.after:>4} pages; "
            f"{self.gone} gone, {self.new} new"
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    before: Backtest
    after: Backtest
    gone: list[Delivered]  # pages of `before` that `after` does not send, in order
    new: list[Delivered]  # pages of `after` that `before` did not send, in order
    rules: list[Budget]
    routes: list[Budget]

    @classmethod
    def of(cls, before: Backtest, after: Backtest) -> Comparison:
        gone = _missing(before.pages, after.pages)
        new = _missing(after.pages, before.pages)
        rule_ids = list(dict.fromkeys(r.id for r in [*before.rules, *after.rules]))
        routes = list(
            dict.fromkeys(
                [
                    *(r.route for r in [*before.rules, *after.rules]),
                    *(d.page.incident.route for d in [*before.pages, *after.pages]),
                ]
            )
        )

        def budget(name: str, belongs: Callable[[Delivered], bool]) -> Budget:
            counts = [sum(map(belongs, pages)) for pages in (before.pages, after.pages, gone, new)]
            return Budget(name, *counts)

        return cls(
            before,
            after,
            gone,
            new,
            [budget(rule_id, _by_rule(rule_id)) for rule_id in rule_ids],
            [budget(route, _by_route(route)) for route in routes],
        )

    def text(self, mentions: str) -> str:
        width = max(len(b.name) for b in [*self.rules, *self.routes])
        lines = [
            f"backtest of {mentions}: {self.before.label} ({len(self.before.pages)} pages) "
            f"→ {self.after.label} ({len(self.after.pages)} pages)",
            "per rule:",
            *(b.line(width) for b in self.rules),
            "per route:",
            *(b.line(width) for b in self.routes),
        ]
        if not (self.gone or self.new):
            lines.append("no difference: the same pages at the same times")
        else:
            lines.append(f"gone ({len(self.gone)}):")
            lines.extend(delivered.text("  - ") for delivered in self.gone)
            lines.append(f"new ({len(self.new)}):")
            lines.extend(delivered.text("  + ") for delivered in self.new)
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        def budgets(items: list[Budget], key: str) -> list[dict[str, Any]]:
            return [
                {key: b.name, "before": b.before, "after": b.after, "gone": b.gone, "new": b.new}
                for b in items
            ]

        return orjson.dumps(
            {
                "before": {"rules": self.before.label, "pages": len(self.before.pages)},
                "after": {"rules": self.after.label, "pages": len(self.after.pages)},
                "rules": budgets(self.rules, "rule"),
                "routes": budgets(self.routes, "route"),
                "gone": [delivered.record() for delivered in self.gone],
                "new": [delivered.record() for delivered in self.new],
            }
        ).decode()


def _by_rule(rule_id: str) -> Callable[[Delivered], bool]:
    return lambda delivered: rule_id in delivered.page.incident.rules


def _by_route(route: str) -> Callable[[Delivered], bool]:
    return lambda delivered: delivered.page.incident.route == route


def _missing(pages: list[Delivered], others: list[Delivered]) -> list[Delivered]:
    """The pages of `pages` with no same page in `others` (each other page matches once)."""
    available = Counter(page_id(d.page) for d in others)
    missing = []
    for delivered in pages:
        key = page_id(delivered.page)
        if available[key]:
            available[key] -= 1
        else:
            missing.append(delivered)
    return missing
