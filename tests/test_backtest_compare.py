"""`crisiswatch backtest --compare`: the alert budget of a rule change on the demo stream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crisiswatch.cli import DEMO_DIR, main

DEMO_STREAM = DEMO_DIR / "demo_mentions.jsonl.gz"
RULES = Path(__file__).resolve().parents[1] / "rules"
_BUDGET = re.compile(
    r"^  (?P<name>\S+)\s+(?P<before>\d+) →\s+(?P<after>\d+) pages; "
    r"(?P<gone>\d+) gone, (?P<new>\d+) new$",
    re.M,
)


def budgets(out: str) -> dict[str, tuple[int, int, int, int]]:
    return {
        m["name"]: (int(m["before"]), int(m["after"]), int(m["gone"]), int(m["new"]))
        for m in _BUDGET.finditer(out)
    }


def test_a_stricter_copy_pages_less_and_lists_what_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raising the high-reach floor out of reach removes that rule's pages, and says which."""
    strict = tmp_path / "strict"
    strict.mkdir()
    text = (RULES / "crisis.yaml").read_text(encoding="utf-8")
    assert "min_followers: 100000" in text
    (strict / "crisis.yaml").write_text(
        text.replace("min_followers: 100000", "min_followers: 100000000"), encoding="utf-8"
    )
    assert (
        main(["backtest", str(DEMO_STREAM), "--rules", str(RULES), "--compare", str(strict)]) == 0
    )
    out = capsys.readouterr().out
    counts = budgets(out)
    before, after, gone, new = counts["high-reach-complaint"]
    assert before > 0 and after == 0 and gone >= before and new >= 0, out
    total_before, total_after, total_gone, total_new = counts["default"]  # the route
    assert total_after < total_before and total_gone - total_new == total_before - total_after
    listed_gone = re.findall(r"^  - 2026-03-0\d \d\d:\d\d UTC", out, re.M)
    listed_new = re.findall(r"^  \+ 2026-03-0\d \d\d:\d\d UTC", out, re.M)
    assert (len(listed_gone), len(listed_new)) == (total_gone, total_new), out
    assert f"gone ({total_gone}):" in out


def test_a_folder_against_itself_shows_no_difference(capsys: pytest.CaptureFixture[str]) -> None:
    """The same rules twice: every budget unchanged, nothing gone or new."""
    assert main(["backtest", str(DEMO_STREAM), "--rules", str(RULES), "--compare", str(RULES)]) == 0
    out = capsys.readouterr().out
    counts = budgets(out)
    assert counts and all(b == a and g == n == 0 for b, a, g, n in counts.values()), out
    assert "no difference: the same pages at the same times" in out


def test_progress_line_shows_how_far_the_file_has_been_read(tmp_path: Path) -> None:
    """On a terminal, the progress line has a bar and the share of the file read."""
    import io

    from crisiswatch.backtest import ProgressLine
    from crisiswatch.sources.replay import ReplaySource

    err = io.StringIO()
    progress = ProgressLine(err, "backtest")
    replay = ReplaySource(tmp_path / "m.jsonl")
    progress.watch(replay)
    replay.fraction_read = 0.5
    progress.pages = 3
    progress.draw()
    line = err.getvalue()
    assert "██████████··········  50%" in line and "3 pages" in line
