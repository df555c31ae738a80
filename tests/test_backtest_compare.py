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
    r"(?P<lost>\d+) lost, (?P<gained>\d+) gained$",
    re.M,
)
DEFAULT_ROUTE = '  default:\n    channel: "#crisis-demo"\n'


def budgets(out: str) -> dict[str, tuple[int, int, int, int]]:
    """(before, after, lost, gained) by rule and by route, each checked to add up."""
    counts = {
        m["name"]: (int(m["before"]), int(m["after"]), int(m["lost"]), int(m["gained"]))
        for m in _BUDGET.finditer(out)
    }
    assert all(b - lost + gained == a for b, a, lost, gained in counts.values()), out
    return counts


def changed_rules(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the shipped rules with `old` replaced by `new` in crisis.yaml."""
    folder = tmp_path / "changed"
    folder.mkdir()
    text = (RULES / "crisis.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    (folder / "crisis.yaml").write_text(text.replace(old, new), encoding="utf-8")
    return folder


def test_a_stricter_copy_pages_less_and_lists_what_is_gone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Raising the high-reach floor out of reach removes that rule's pages, and says which:
    those gone, and those still sent without it."""
    strict = changed_rules(tmp_path, "min_followers: 100000", "min_followers: 100000000")
    assert (
        main(["backtest", str(DEMO_STREAM), "--rules", str(RULES), "--compare", str(strict)]) == 0
    )
    out = capsys.readouterr().out
    counts = budgets(out)
    before, after, lost, gained = counts["high-reach-complaint"]
    assert before > 0 and after == 0 and lost == before and gained == 0, out
    # the only route: the pages it lost are those gone, those it gained the new ones
    total_before, total_after, total_gone, total_new = counts["default"]
    assert total_after < total_before
    listed_gone = re.findall(r"^  - 2026-03-0\d \d\d:\d\d UTC", out, re.M)
    listed_new = re.findall(r"^  \+ 2026-03-0\d \d\d:\d\d UTC", out, re.M)
    assert (len(listed_gone), len(listed_new)) == (total_gone, total_new), out
    assert f"gone ({total_gone}):" in out
    # a page still sent at the same time, no longer naming the rule: changed, the rule taken out
    assert "]\n                          rules: - high-reach-complaint\n  ~ " in out, out


def test_a_folder_against_itself_shows_no_difference(capsys: pytest.CaptureFixture[str]) -> None:
    """The same rules twice: every budget unchanged, nothing gone or new."""
    assert main(["backtest", str(DEMO_STREAM), "--rules", str(RULES), "--compare", str(RULES)]) == 0
    out = capsys.readouterr().out
    counts = budgets(out)
    assert counts and all(b == a and lost == gained == 0 for b, a, lost, gained in counts.values())
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


def test_a_route_change_shows_as_the_same_pages_going_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Routing negative-turn to oncall sends its pages at the same times to another route: each
    is listed once, as changed, with where it went before and goes after (not as a page gone
    and an identical one new); the route budgets say how many moved."""
    config_text = (DEMO_DIR / "config.yaml").read_text(encoding="utf-8")
    assert config_text.count(DEFAULT_ROUTE) == 1
    config = tmp_path / "config.yaml"
    oncall = '  oncall:\n    channel: "#crisis-oncall"\n'
    config.write_text(config_text.replace(DEFAULT_ROUTE, DEFAULT_ROUTE + oncall), encoding="utf-8")
    routed = changed_rules(
        tmp_path, "  - id: negative-turn\n", "  - id: negative-turn\n    route: oncall\n"
    )
    args = ["--config", config, "--rules", RULES, "--compare", routed]
    assert main(["backtest", str(DEMO_STREAM), *map(str, args)]) == 0
    out = capsys.readouterr().out
    counts = budgets(out)
    moved = counts["oncall"][1]
    assert moved > 0 and counts["oncall"] == (0, moved, 0, moved), out
    assert counts["default"][2:] == (moved, 0) and counts["negative-turn"][2:] == (0, 0), out
    assert "\ngone (" not in out and "\nnew (" not in out, out
    assert (
        "  ~ 2026-03-03 11:45 UTC  opened    warning  spark kestrel      negative-turn  "
        "kestrel: 51% of 35 mentions negative (usually 20%)\n"
        "                          route: default → oncall\n"
    ) in out
    assert out.count("route: default → oncall\n") == moved


def test_a_page_that_says_something_else_is_a_change_not_no_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A higher high-reach floor leaves the same pages at the same times, but the 18:45
    resolution now says what the incident's last alert was: listed as changed, before → after,
    rather than "no difference"."""
    higher = changed_rules(tmp_path, "min_followers: 100000", "min_followers: 200000")
    assert (
        main(["backtest", str(DEMO_STREAM), "--rules", str(RULES), "--compare", str(higher)]) == 0
    )
    out = capsys.readouterr().out
    assert "no difference" not in out and "\ngone (" not in out and "\nnew (" not in out, out
    assert (
        "changed (1), before → after:\n"
        "  ~ 2026-03-02 18:45 UTC  resolved  critical fire  kestrel      complaint-jumps-platform,"
        "high-reach-complaint,negative-turn,reply-pile-on  kestrel: complaints on several "
        "platforms at once (64% of 33 negative)\n"
        "                          summary: kestrel: a negative post from a high-reach account "
        "(23 mentions in 5m) → kestrel: complaints on several platforms at once (64% of 33 "
        "negative)\n"
    ) in out
