"""`crisiswatch backtest` on small deployments of its own: quiet hours, file order, which config."""

from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from conftest import PageFactory

from crisiswatch.backtest import Backtest, Collector, Delivered, report
from crisiswatch.cli import main
from crisiswatch.config import Route
from crisiswatch.daemon import RunSummary
from crisiswatch.domain import PageKind, Severity
from crisiswatch.pipeline import PipelineStats
from crisiswatch.rules.schema import Rule

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # midnight: inside the routes' quiet hours below
CONFIG = """\
brands:
  - {id: acme, keywords: [acme]}
  - {id: beta, keywords: [beta]}
routes:
  default:
    channel: "#social"
    quiet_hours: {start: "00:00", end: "07:00", timezone: UTC, min_severity: critical}
"""
RULES = """\
rules:
  - {id: acme-busy, scope: {brands: [acme]}, when: {min_count: 20}, keep_firing_for: 30m}
  - id: beta-busy
    scope: {brands: [beta]}
    when: {min_count: 20}
    severity: critical
    keep_firing_for: 30m
"""


def mention_lines(bursts: dict[str, int], minutes: int = 180) -> list[str]:
    """A mention of each brand a minute, and 25 more of a brand in the five minutes from its
    burst's minute."""
    lines = []
    for minute in range(minutes):
        at = T0 + timedelta(minutes=minute, seconds=30)
        extra = [b for b, start in bursts.items() if start <= minute < start + 5] * 5
        for number, brand in enumerate(["acme", "beta", *extra]):
            mention = {
                "id": f"{brand}-{minute}-{number}",
                "created_at": at.isoformat(),
                "text": f"{brand} ordinary post",
                "author": f"{brand}-{minute}-{number}",
                "brand": brand,
                "source": "x",
            }
            lines.append(orjson.dumps(mention).decode())
    return lines


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path]:
    """A config with quiet hours until 07:00 for warnings, and its rules."""
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"rules: [rules.yaml]\n{CONFIG}", encoding="utf-8")
    return config, tmp_path / "rules.yaml"


def write_mentions(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "mentions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_quiet_hours_hold_a_warning_until_they_end_in_event_time(
    tmp_path: Path, deployment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A warning at 01:05 in quiet hours goes out at 07:00, as `rules test` and Slack would
    send it, after the critical pages made meanwhile; the report says when it was made."""
    config, _ = deployment
    mentions = write_mentions(tmp_path, mention_lines({"acme": 60, "beta": 120}))
    assert main(["backtest", str(mentions), "--config", str(config), "--json"]) == 0
    pages = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [
        (p["at"][11:16], p["kind"], p["brand"], p["made_at"][11:16], p["held"]) for p in pages
    ] == [
        ("02:05", "opened", "beta", "02:05", False),
        ("02:35", "resolved", "beta", "02:35", False),
        ("07:00", "opened", "acme", "01:05", True),
        ("07:00", "resolved", "acme", "01:35", True),
    ]
    assert main(["backtest", str(mentions), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        "2026-03-02 07:00 UTC  opened    warning  spark acme         acme-busy  acme: 30 mentions, "
        "0% negative  (made 2026-03-02 01:05 UTC, held by the route's quiet hours)\n"
        "                      why: 30 mentions (at least 20)\n"
    ) in out
    assert "\n4 pages sent, 2 of them held by quiet hours until they ended\n2 incidents " in out


def test_a_file_not_in_time_order_is_an_error_with_the_count_too_late(
    tmp_path: Path, deployment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Newest first, nearly every mention is too late and is not counted: rather than report
    few or no pages and exit 0, the backtest says the file is out of order, how many mentions
    it lost, and exits 1 (with --compare too)."""
    config, rules = deployment
    lines = mention_lines({"acme": 60})
    mentions = write_mentions(tmp_path, lines[::-1])
    assert main(["backtest", str(mentions), "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    late = re.search(r"(\d+) too late", out)
    assert late and int(late[1]) > len(lines) * 0.9, out
    assert f"{mentions} is not in time order: {late[1]} mentions were too late" in err
    assert "sort the file by created_at" in err
    assert main(["backtest", str(mentions), "--config", str(config), "--compare", str(rules)]) == 1
    assert "is not in time order" in capsys.readouterr().err
    write_mentions(tmp_path, lines)
    assert main(["backtest", str(mentions), "--config", str(config)]) == 0
    assert capsys.readouterr().err == ""


def test_the_report_names_the_deployment_it_ran_on(
    tmp_path: Path, deployment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The first line says which config's brands and routes the rules ran on; without
    --config that is the demo's, and it says how to give yours (on stderr with --json)."""
    config, rules = deployment
    mentions = write_mentions(tmp_path, mention_lines({}, minutes=30))
    assert main(["backtest", str(mentions), "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"deployment: {config}\n")
    scoped_to_all = tmp_path / "all.yaml"
    scoped_to_all.write_text("rules:\n  - {id: busy, when: {min_count: 20}}\n", encoding="utf-8")
    assert main(["backtest", str(mentions), "--rules", str(scoped_to_all)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("deployment: the demo's, ") and "give --config FILE" in first, first
    assert main(["backtest", str(mentions), "--config", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"deployment: {config}\n") and "deployment" not in out
    assert main(["backtest", str(mentions), "--config", str(config), "--compare", str(rules)]) == 0
    assert capsys.readouterr().out.startswith(f"deployment: {config}\nbacktest of ")


SUMMARY = RunSummary(PipelineStats(), 0, 0, 0, 0, 0, 0.0)


async def test_a_held_page_a_newer_one_overtook_is_superseded(make_page: PageFactory) -> None:
    """A warning held by quiet hours is not delivered at 07:00 after its incident's critical
    escalation and resolution went out, as the daemon's dispatcher (and `rules test`) would not
    send it over newer state; a held page nothing overtook still goes. The report's counts
    agree with the pages it lists: the overtaken page is listed apart, as not sent, and still
    counts for the rules that opened its incident (both rules its opening page names); the
    run's own count of pages (every page made) is not printed."""
    route = Route.model_validate(
        {"quiet_hours": {"start": "00:00", "end": "07:00", "min_severity": "critical"}}
    )
    collector = Collector({"default": route})
    both = ("angry-surge", "negative-turn")
    warning, critical = Severity.WARNING, Severity.CRITICAL
    opened = make_page(PageKind.OPENED, T0 + timedelta(hours=1), severity=warning, rules=both)
    worse = make_page(PageKind.ESCALATED, T0 + timedelta(hours=2), severity=critical, rules=both)
    resolved = make_page(PageKind.RESOLVED, T0 + timedelta(hours=3), severity=critical, rules=both)
    other = make_page(PageKind.OPENED, T0 + timedelta(hours=1), id="b@1", severity=warning)
    for page in (opened, other, worse, resolved):
        await collector.send(page)
    collector.finish()
    assert [(d.page.kind, d.page.incident.id, d.held) for d in collector.pages] == [
        (PageKind.ESCALATED, worse.incident.id, False),
        (PageKind.RESOLVED, resolved.incident.id, False),
        (PageKind.OPENED, "b@1", True),
    ]
    assert [(d.page.kind, d.made_at) for d in collector.overtaken] == [(PageKind.OPENED, opened.at)]
    rules = [Rule.model_validate({"id": r, "when": {"min_count": 1}}) for r in both]
    summary = replace(SUMMARY, incidents_opened=2, pages_sent=4)
    out = io.StringIO()
    report(Backtest("rules", rules, collector.pages, summary, collector.overtaken), out)
    lines = out.getvalue().splitlines()
    assert lines[:5] == [
        "",
        "3 pages sent, 1 of them held by quiet hours until they ended",
        "1 more held by quiet hours, then overtaken by a newer page of their incident (not sent):",
        "  2026-03-02 01:00 UTC  opened    warning  flame kestrel      angry-surge,negative-turn  "
        "kestrel: 40 mentions in 5m (8 expected), 75% negative  (held by the route's quiet hours "
        "until 2026-03-02 07:00 UTC)",
        "                        why: volume 40 vs 8 expected (alert level 15), in a surge this "
        "series sees less than once a year",
    ]
    assert lines[5].startswith("2 incidents opened; per rule: incidents it took part in opening")
    counts = [line.split() for line in lines[6:8]]
    assert counts == [["angry-surge", "2", "/", "3"], ["negative-turn", "1", "/", "2"]]
    assert "pages sent" not in lines[-1] and "→ 2 incidents (0 still open), in" in lines[-1]


def test_each_page_says_why_under_its_line(make_page: PageFactory) -> None:
    """Under a page's line, why it pages: the reasons it carries, as Slack shows them (one
    line, below its kind, after a prefix too); a resolution, which shows no reasons, has none."""
    reasons = ("35 mentions (at least 12)", "negative share 51% vs usual 20% (18 of 35)")
    opened = Delivered(make_page(PageKind.OPENED, T0, reasons=reasons), T0)
    resolved = Delivered(make_page(PageKind.RESOLVED, T0, reasons=reasons), T0)
    assert opened.text("  - ").splitlines() == [
        f"  - {opened.line()}",
        "                          why: 35 mentions (at least 12); negative share 51% vs usual "
        "20% (18 of 35)",
    ]
    assert resolved.text() == resolved.line()


def test_json_lists_the_overtaken_pages_and_gives_the_counts_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --json, a warning held by quiet hours that its incident's critical escalation
    overtook is an object too, marked not sent, after the pages sent; the counts that the text
    report ends with come on stderr, so stdout stays one JSON object a line."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {id: acme-busy, scope: {brands: [acme]}, when: {min_count: 20}}\n"
        "  - id: acme-flood\n"
        "    scope: {brands: [acme]}\n"
        "    when: {min_count: 40}\n"
        "    severity: critical\n",
        encoding="utf-8",
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"rules: [rules.yaml]\n{CONFIG}", encoding="utf-8")
    flood = []  # ten more a minute from 01:10: a bucket of 55 mentions
    for minute in range(70, 75):
        for n in range(10):
            at = (T0 + timedelta(minutes=minute, seconds=40)).isoformat()
            post = {"id": f"flood-{minute}-{n}", "author": f"flood-{minute}-{n}", "created_at": at}
            flood.append(orjson.dumps({**orjson.loads(mention_lines({})[0]), **post}).decode())
    lines = sorted(mention_lines({"acme": 60}) + flood, key=lambda line: line[line.index("2026") :])
    mentions = write_mentions(tmp_path, lines)
    assert main(["backtest", str(mentions), "--config", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    pages = [orjson.loads(line) for line in out.splitlines()]
    overtaken = pages[-1]  # made at 01:05, held until 07:00, overtaken by 01:15's escalation
    assert (overtaken["made_at"][11:16], overtaken["at"][11:16], overtaken["kind"]) == (
        "01:05",
        "07:00",
        "opened",
    )
    assert (overtaken["severity"], overtaken["held"], overtaken["sent"]) == ("warning", True, False)
    assert all(p["sent"] for p in pages[:-1]) and len(pages) > 1
    assert "1 more held by quiet hours, then overtaken by a newer page" in err
    assert f"{len(pages) - 1} pages sent" in err


@pytest.mark.parametrize("damage", ["cut short", "not gzip"])
def test_a_file_that_cannot_be_read_to_its_end_is_an_error(
    tmp_path: Path, deployment: tuple[Path, Path], capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """A gzip file cut short (a copy that stopped) is replayed up to where it can be read, every
    line of it counted (a batch of lines read before the break had been dropped with it), and
    the backtest says where it stopped and exits 1; so does a file that only looks gzipped."""
    config, _ = deployment
    lines = mention_lines({"acme": 60})
    whole = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    mentions = tmp_path / "mentions.jsonl.gz"
    damaged = whole[: len(whole) * 2 // 3] if damage == "cut short" else whole[:2] + b"x" * 50
    mentions.write_bytes(damaged)
    assert main(["backtest", str(mentions), "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert f"crisiswatch: {mentions} line " in err and "cannot be read from here on" in err
    found = re.search(r"([\d,]+) mentions counted", out)
    assert found is not None, out
    readable = zlib.decompressobj(wbits=31).decompress(damaged) if damage == "cut short" else b""
    assert int(found[1].replace(",", "")) == readable.count(b"\n")  # every whole line read
    assert damage == "not gzip" or readable.count(b"\n") > 100
