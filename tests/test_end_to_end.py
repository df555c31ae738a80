"""The whole product path: the embedded demo through `crisiswatch run` and `backtest`."""

from __future__ import annotations

import io
import re
import sys
from datetime import UTC, datetime

import orjson
import pytest

from crisiswatch.cli import DEMO_DIR, main

DEMO_STREAM = DEMO_DIR / "demo_mentions.jsonl.gz"
_BLOCK = re.compile(
    r"^── (?P<kind>[A-Z]+) · .*?\n  when     (?P<when>[\d-]+ [\d:]+) UTC.*?"
    r"^  incident (?P<incident>\S+)$",
    re.S | re.M,
)


# The demo's three crises (crisiswatch/demo/generate.py), as windows in which each must open.
def _utc(day: int, hour: int, minute: int) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


EXPECTED_OPENINGS = [
    ("tone-deaf reply", _utc(2, 15, 10), _utc(2, 16, 0)),
    ("ATM swallows cards", _utc(3, 2, 5), _utc(3, 2, 45)),
    ("hijacked hashtag", _utc(3, 11, 30), _utc(3, 12, 30)),
]


def pages_of_run(out: str) -> list[tuple[str, str, str]]:
    """(time, kind, incident) of every page block `crisiswatch run` printed."""
    return [(m["when"], m["kind"].lower(), m["incident"]) for m in _BLOCK.finditer(out)]


@pytest.fixture(scope="module")
def demo_run() -> str:
    capture = pytest.MonkeyPatch()
    buffer = io.StringIO()
    capture.setattr(sys, "stdout", buffer)
    try:
        assert main(["run"]) == 0
    finally:
        capture.undo()
    return buffer.getvalue()


class TestDemo:
    def test_opens_the_three_expected_incidents_and_nothing_else(self, demo_run: str) -> None:
        """Each modelled crisis opens one incident in its window; campaign and spam do not."""
        opened = [
            datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            for when, kind, _ in pages_of_run(demo_run)
            if kind == "opened"
        ]
        assert len(opened) == len(EXPECTED_OPENINGS), demo_run
        for at, (name, start, end) in zip(opened, EXPECTED_OPENINGS, strict=True):
            assert start <= at <= end, f"{name} opened at {at}"

    def test_every_incident_resolves_and_the_summary_counts_bad_input(self, demo_run: str) -> None:
        """The replay ends with every incident resolved and the malformed lines counted."""
        pages = pages_of_run(demo_run)
        opened = {incident for _, kind, incident in pages if kind == "opened"}
        resolved = {incident for _, kind, incident in pages if kind == "resolved"}
        assert opened == resolved
        summary = demo_run.strip().splitlines()[-1]
        assert summary.startswith("demo finished:")
        assert "3 malformed lines skipped" in summary
        assert "176 duplicates dropped" in summary
        assert "83 by the brands' own accounts" in summary

    def test_the_brand_s_own_posts_are_never_shown_as_complaints(self, demo_run: str) -> None:
        """The brand's apology and its support team's replies (a sorry reads as negative) are
        not mentions of it: no page shows them among its posts."""
        authors = re.findall(r"^(?:  posts |           )\s*(\S+) \(", demo_run, re.M)
        assert authors and not {"KestrelBank", "KestrelHelp"} & set(authors)

    def test_pages_carry_the_context_to_act(self, demo_run: str) -> None:
        """An opening page says who it is for, why in numbers, and shows posts."""
        first = demo_run.split("\n\n")[1]
        for part in ("to       #crisis-demo", "why", "posts", "followers", "https://"):
            assert part in first, first

    def test_hostile_posts_never_reach_the_output_raw(self, demo_run: str) -> None:
        """No control characters leave the renderer."""
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", demo_run)


class TestBacktest:
    def test_backtest_prints_the_same_pages_as_run_in_the_same_order(
        self, demo_run: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`backtest --json` on the demo stream sends exactly the pages `run` printed."""
        capsys.readouterr()
        assert main(["backtest", str(DEMO_STREAM), "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        pages = [orjson.loads(line) for line in lines]
        from_backtest = [
            (datetime.fromisoformat(p["at"]).strftime("%Y-%m-%d %H:%M"), p["kind"], p["incident"])
            for p in pages
        ]
        assert from_backtest == pages_of_run(demo_run)

    def test_backtest_is_deterministic_and_counts_per_rule(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Two backtests print identical reports, ending with the per-rule counts."""
        outputs = []
        for _ in range(2):
            assert main(["backtest", str(DEMO_STREAM)]) == 0
            outputs.append(capsys.readouterr().out)
        strip_time = [re.sub(r" in [\d.]+s$", "", o.strip(), flags=re.M) for o in outputs]
        assert strip_time[0] == strip_time[1]
        assert "3 incidents opened; per rule: incidents it took part in opening" in outputs[0]
        assert re.search(r"^  angry-surge\s+\d+ / \d+", outputs[0], re.M)

    def test_missing_file_is_a_clear_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A backtest of a file that is not there says so and exits 1."""
        assert main(["backtest", "/nonexistent/mentions.jsonl"]) == 1
        assert "no such mentions file" in capsys.readouterr().err
