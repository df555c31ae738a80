"""`crisiswatch rules test`: the shipped rules' tests pass; failures and typos are reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from crisiswatch.cli import main

ROOT = Path(__file__).resolve().parents[1]
RULE_TESTS = Path(__file__).resolve().parents[1] / "rules" / "tests"
CRISIS_RULES = ROOT / "rules" / "crisis.yaml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "case_test.yaml"
    path.write_text(
        f"rules: [{CRISIS_RULES}]\nstart: 2026-03-02T00:00:00Z\ntests:\n{body}", encoding="utf-8"
    )
    return path


def test_the_shipped_rules_pass_their_tests(capsys: pytest.CaptureFixture[str]) -> None:
    """Every test of the shipped rules passes; the summary is one line."""
    assert main(["rules", "test", str(RULE_TESTS)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and out.count("\n") == 1, out
    assert " 0 failed (3 test files)" in out


def test_a_wrong_expectation_fails_and_shows_expected_and_got(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An angry surge expected 10 minutes late: exit 1, both page lists printed."""
    path = write(
        tmp_path,
        """\
  - name: late on purpose
    series:
      - {series: acme, count: "10x36 80x6 10x40", negative: "0.1x36 0.7x6 0.1x40"}
    expect:
      - {at: 3h15m, kind: opened, rules: [angry-surge], severity: critical}
      - {at: 5h30m, kind: resolved}
""",
    )
    assert main(["rules", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {path}: late on purpose" in out
    assert "expected (2):\n  >   +3h15m  2026-03-02 03:15 UTC  opened    critical" in out
    assert "got (3):\n  >    +3h5m  2026-03-02 03:05 UTC  opened    warning  spark acme" in out
    assert "angry-surge,negative-turn" in out
    assert out.strip().endswith("FAILED: 0 passed, 1 failed (1 test file)")


def test_typos_are_problems_with_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo'd key, a bad post key and an unknown rule: each at its place; never a traceback."""
    path = write(
        tmp_path,
        """\
  - name: typos
    series:
      - series: acme
        count: "10x12"
        posts:
          - {at: 30m, folowers: 5}
    expct: []
""",
    )
    assert main(["rules", "test", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:10:5: unknown key 'expct'; did you mean 'expect'?" in err
    assert "missing required key 'expect'" in err


def test_bad_series_are_problems_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad notation, mismatched lengths, unknown post keys and rule ids are located."""
    notation = write(
        tmp_path, '  - {name: bad, series: [{series: acme, count: "10x"}], expect: []}\n'
    )
    assert main(["rules", "test", str(notation)]) == 1
    err = capsys.readouterr().err
    assert f"{notation}:4:48: tests.series.count: '10x': the repeat after 'x' must be" in err
    content = write(
        tmp_path,
        """\
  - name: bad content
    series:
      - series: acme
        count: "10x12"
        negative: "0.1x11"
        posts:
          - {at: 30m, folowers: 5}
    expect:
      - {at: 1h, kind: opened, rules: [angy-surge]}
""",
    )
    assert main(["rules", "test", str(content)]) == 1
    err = capsys.readouterr().err
    assert f"{content}:8:19: 11 shares for 12 counts; give one per bucket or a single" in err
    assert f"{content}:10:23: unknown key 'folowers'; did you mean 'followers'?" in err
    assert f"{content}:12:40: no rule 'angy-surge' is loaded; did you mean 'angry-surge'?" in err


def test_a_yml_test_file_is_found_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`case_test.yml` is a test like `case_test.yaml` (the loader leaves both out of the rules:
    found by neither, it had been silently skipped)."""
    write(tmp_path, '  - {name: calm, series: [{series: acme, count: "10x12"}], expect: []}\n')
    (tmp_path / "case_test.yaml").rename(tmp_path / "case_test.yml")
    assert main(["rules", "test", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "OK: 1 passed, 0 failed (1 test file)\n"


def test_an_editors_lock_file_is_not_a_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Emacs' lock `.#case_test.yaml` (a dangling symlink) beside a test: skipped, not read."""
    write(tmp_path, '  - {name: calm, series: [{series: acme, count: "10x12"}], expect: []}\n')
    (tmp_path / ".#case_test.yaml").symlink_to("editor@host.12345:1700000000")
    assert main(["rules", "test", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "OK: 1 passed, 0 failed (1 test file)\n"


def test_a_rule_file_or_a_missing_rule_path_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule file given as a test is named as one (it had read as 'Input is not a valid path'
    at each rule); a rules path that does not exist is one problem at the test's `rules:`
    line (it had been two, at the missing file's 1:1)."""
    assert main(["rules", "test", str(CRISIS_RULES)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{CRISIS_RULES}:2:1: this is a rule file, not a rule test: `crisiswatch rules check` "
        "checks it; a rule test (NAME_test.yaml, with `tests:`) names the rule files it runs "
        "in its `rules:`"
    ]
    path = tmp_path / "gone_test.yaml"
    path.write_text(
        f"rules: [{CRISIS_RULES}, nope.yaml]\nstart: 2026-03-02T00:00:00Z\ntests:\n"
        '  - {name: a, series: [{series: acme, count: "1x3"}], expect: []}\n'
    )
    assert main(["rules", "test", str(path)]) == 1
    column = len(f"rules: [{CRISIS_RULES}, ") + 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:1:{column}: no such rule file or folder: {tmp_path / 'nope.yaml'}"
    ]


def test_a_mentions_file_cut_short_is_a_problem_not_a_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test's gzip mentions file cut short (a copy that stopped) is a problem at the line it
    stops: run on the part it could read, a test expecting no page had passed."""
    demo = ROOT / "crisiswatch" / "demo"
    whole = (demo / "demo_mentions.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    path = tmp_path / "cut_test.yaml"
    path.write_text(
        f"rules: [{CRISIS_RULES}]\nconfig: {demo / 'config.yaml'}\n"
        "start: 2026-03-02T00:00:00Z\ntests:\n"
        "  - name: nothing pages\n    mentions: cut.jsonl.gz\n    expect: []\n",
        encoding="utf-8",
    )
    assert main(["rules", "test", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cut.jsonl.gz'}:" in err and "cannot be read from here on" in err, err
