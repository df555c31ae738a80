"""Backtests: what a rule set would have paged over a mentions file, and how two rule sets differ.

Every backtest runs the daemon itself (the CLI's `serve`: a `Daemon` with a replay source and a
temporary state directory) with a notifier that collects the pages, so a backtest pages exactly
what `crisiswatch run` would. A page its route's quiet hours hold goes out when they end, in
event time, as `rules test` decides it and as Slack would get it. `--compare` runs a second
rule set over the same file and reports the difference per rule and per route, then the pages
that are gone, the new ones and the changed ones (the same time, kind and incident, going
elsewhere or saying something else), each with what differs: an alert budget to review with a
rule change.
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
from crisiswatch.notify.render import clean_text, render_line, shown_changes, shown_reasons
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

    def reasons(self) -> tuple[str, ...]:
        """Why it pages: the reasons it carries (its latest alert's conditions, in numbers), as
        Slack and the console show them; none for a resolution, which shows none."""
        return shown_reasons(self.page)

    def text(self, prefix: str = "") -> str:
        """Its line after `prefix`, and under it why it pages."""
        why = "; ".join(self.reasons())
        below = f"\n{' ' * len(prefix)}{WHY_INDENT}why: {why}" if why else ""
        return prefix + self.line() + below

    def record(self) -> dict[str, Any]:
        made = self.made_at.isoformat()
        return {**page_record(self.page), "made_at": made, "held": self.held, "sent": self.sent}

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
    with `as_json`, so that `out` stays JSON), before the rules are checked against it. With
    `as_json`, the pages overtaken (never sent) follow those sent, and the counts go to `err`.
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
        if as_json:  # what the stream could not print as it went: then the counts, for people
            for delivered in result.overtaken:
                out.write(delivered.json() + "\n")
        report(result, err if as_json else out)
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
    """The exit code: 1, saying why, when the file could not be read to its end (a gzip file
    cut short) or mentions came too late to count. A replay reads the file in its order, so a
    mention that late is one out of order (a newest-first file loses nearly all). Either way the
    pages are not what the rules would have paged on the whole file."""
    for problem in result.summary.cut_short:
        print(
            f"crisiswatch: {problem}; the pages above are of the mentions before it",
            file=err,
        )
    if result.summary.cut_short:
        return 1
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


Slot = tuple[datetime, str, str]  # when, what kind of page, which incident (its key)


def _slot(delivered: Delivered) -> Slot:
    page = delivered.page
    return (page.at, page.kind.value, page.incident.key)


ITEMS = ("rules", "changes", "why")  # the facts of several items, compared item by item


def facts(delivered: Delivered) -> dict[str, tuple[str, ...]]:
    """What the report shows of a page besides its time, kind and incident, by name: where it
    goes, how bad, which rules, what it says (and what changed), why, and when it was made
    (earlier when held). Each is a tuple: of one item, or of several for those in ITEMS."""
    page, incident = delivered.page, delivered.page.incident
    return {
        "route": (incident.route,),
        "severity": (incident.severity.label,),
        "stage": (incident.stage.label,),
        "rules": incident.rules,
        "summary": (clean_text(incident.summary, 100),),
        "changes": tuple(clean_text(change, 160) for change in shown_changes(page)),
        "why": delivered.reasons(),
        "made": (f"{delivered.made_at:%Y-%m-%d %H:%M} UTC",),
    }


PageId = tuple[Slot, tuple[tuple[str, ...], ...]]


def page_id(delivered: Delivered) -> PageId:
    """What makes two backtests' pages the same page: the same slot, and all it shows alike."""
    return _slot(delivered), tuple(facts(delivered).values())


@dataclass(frozen=True, slots=True)
class Changed:
    """A page both rule sets send at the same time, of the same kind and incident, that differs
    in where it goes or what it shows."""

    before: Delivered
    after: Delivered

    def differences(self) -> list[str]:
        """Each fact that differs, as "route: default → oncall"; one of several items (rules,
        changes, reasons) as the items taken out and put in, "rules: - a", "why: + b"."""
        before, after = facts(self.before), facts(self.after)
        shown: list[str] = []
        for name, old in before.items():
            new = after[name]
            if old == new:
                continue
            items = [f"- {item}" for item in old if item not in new]
            items += [f"+ {item}" for item in new if item not in old]
            if name in ITEMS and items:
                shown.extend(f"{name}: {item}" for item in items)
            else:  # one item, or the same items in another order
                shown.append(f"{name}: {'; '.join(old) or 'none'} → {'; '.join(new) or 'none'}")
        return shown

    def text(self) -> str:
        """The page's line as it is after, and under it what differs, before → after."""
        below = " " * len("  ~ ") + WHY_INDENT
        return "\n".join([f"  ~ {self.after.line()}", *(below + d for d in self.differences())])

    def record(self) -> dict[str, Any]:
        return {"before": self.before.record(), "after": self.after.record()}


@dataclass(frozen=True, slots=True)
class Budget:
    """One rule's (or route's) pages before and after; `lost`, the pages it had before that it
    has no more (gone, or changed to name another rule or go to another route), and `gained`
    the converse, so that before - lost + gained == after."""

    name: str
    before: int
    after: int
    lost: int
    gained: int

    def line(self, width: int) -> str:
        return (
            f"  {self.name:<{width}} {self.before:>4} → {self.after:>4} pages; "
            f"{self.lost} lost, {self.gained} gained"
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    before: Backtest
    after: Backtest
    gone: list[Delivered]  # pages of `before` that `after` does not send, in order
    new: list[Delivered]  # pages of `after` that `before` did not send, in order
    changed: list[Changed]  # pages both send, at the same time, that differ, in order
    rules: list[Budget]
    routes: list[Budget]

    @classmethod
    def of(cls, before: Backtest, after: Backtest) -> Comparison:
        gone, new, changed = _differences(before.pages, after.pages)
        rule_ids = list(dict.fromkeys(r.id for r in [*before.rules, *after.rules]))
        routes = list(
            dict.fromkeys(
                [
                    *(r.route for r in [*before.rules, *after.rules]),
                    *(d.page.incident.route for d in [*before.pages, *after.pages]),
                ]
            )
        )

        def budget(name: str, has: Callable[[Delivered], bool]) -> Budget:
            lost = sum(map(has, gone)) + sum(has(c.before) and not has(c.after) for c in changed)
            gained = sum(map(has, new)) + sum(has(c.after) and not has(c.before) for c in changed)
            return Budget(
                name, sum(map(has, before.pages)), sum(map(has, after.pages)), lost, gained
            )

        return cls(
            before,
            after,
            gone,
            new,
            changed,
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
        if not (self.gone or self.new or self.changed):
            lines.append("no difference: the same pages at the same times")
        if self.gone:
            lines.append(f"gone ({len(self.gone)}):")
            lines.extend(delivered.text("  - ") for delivered in self.gone)
        if self.new:
            lines.append(f"new ({len(self.new)}):")
            lines.extend(delivered.text("  + ") for delivered in self.new)
        if self.changed:
            lines.append(f"changed ({len(self.changed)}), before → after:")
            lines.extend(changed.text() for changed in self.changed)
        return "\n".join(lines) + "\n"

    def json(self) -> str:
        def budgets(items: list[Budget], key: str) -> list[dict[str, Any]]:
            return [
                {
                    key: b.name,
                    "before": b.before,
                    "after": b.after,
                    "lost": b.lost,
                    "gained": b.gained,
                }
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
                "changed": [changed.record() for changed in self.changed],
            }
        ).decode()


def _by_rule(rule_id: str) -> Callable[[Delivered], bool]:
    return lambda delivered: rule_id in delivered.page.incident.rules


def _by_route(route: str) -> Callable[[Delivered], bool]:
    return lambda delivered: delivered.page.incident.route == route


def _differences(
    before: list[Delivered], after: list[Delivered]
) -> tuple[list[Delivered], list[Delivered], list[Changed]]:
    """The pages gone, the new ones, and the changed: of the pages with no same page on the
    other side, one before and one after at the same time, of the same kind and incident (the
    first such of each, in order) are one page, changed."""
    ids = {id(d): page_id(d) for d in (*before, *after)}  # each page's made once, not per side
    unmatched = _missing(after, before, ids)
    waiting: dict[Slot, list[Delivered]] = {}
    for delivered in unmatched:
        waiting.setdefault(_slot(delivered), []).append(delivered)
    gone: list[Delivered] = []
    changed: list[Changed] = []
    for delivered in _missing(before, after, ids):
        same_slot = waiting.get(_slot(delivered))
        if same_slot:
            changed.append(Changed(delivered, same_slot.pop(0)))
        else:
            gone.append(delivered)
    paired = {id(c.after) for c in changed}
    return gone, [d for d in unmatched if id(d) not in paired], changed


def _missing(
    pages: list[Delivered], others: list[Delivered], ids: dict[int, PageId]
) -> list[Delivered]:
    """The pages of `pages` with no same page in `others` (each other page matches once);
    `ids`: each page's `page_id`, by its object's id."""
    available = Counter(ids[id(d)] for d in others)
    missing = []
    for delivered in pages:
        key = ids[id(delivered)]
        if available[key]:
            available[key] -= 1
        else:
            missing.append(delivered)
    return missing
