"""A deliberately broken rules folder: one clear line per problem, exit 1, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crisiswatch.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "config" / "crisiswatch.yaml"

BROKEN = {
    "typos.yaml": "rules:\n  - id: a\n    when: {min_count: 3}\n    severty: critical\n",
    "types.yaml": "rules:\n  - id: b\n    when: {negative_share: {above: high}}\n",
    "route.yaml": "rules:\n  - id: c\n    when: {min_count: 3}\n    route: pager\n",
    "regex.yaml": (
        "rules:\n  - id: d\n    when: {min_count: 3}\n    scope: {regex: '(?=refund)\\\\w+'}\n"
    ),
    "dupes.yaml": "rules:\n  - id: a\n    when: {min_count: 9}\n",
    "yaml.yaml": "rules:\n  - id: e\n    when: {min_count: 3\n",
    "numbers.yaml": "rules:\n  - id: f\n    when: {min_count: 3}\n    keep_firing_for: 30\n",
    "deep.yaml": "rules: " + "[" * 3000 + "]" * 3000 + "\n",
}


def test_every_problem_is_one_line_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typos, wrong types, unknown route, an unsafe regex, duplicate ids, broken YAML, a
    duration written as a bare number (which would have been seconds) and nesting deep enough
    to exhaust the parser's recursion."""
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert main(["rules", "check", str(tmp_path), "--config", str(CONFIG)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and captured.out == ""
    assert all(re.match(r"^\S+\.yaml:\d+:\d+: \S", line) for line in lines), lines
    expected = {
        "typos.yaml:4:5": "unknown key 'severty'; did you mean 'severity'?",
        "types.yaml:3:": "above",
        "route.yaml:4:12": "unknown route 'pager'",
        "regex.yaml:4:": "invalid regex",
        "typos.yaml:2:": "duplicate rule id 'a' (first at",
        "yaml.yaml:": "invalid YAML",
        "numbers.yaml:4:22": "30 is not a duration; write it like 30s",
        "deep.yaml:1:1": "invalid YAML: nested too deeply",
    }
    for where, message in expected.items():
        assert any(where in line and message in line for line in lines), (where, lines)
    assert len(lines) == len(expected)


def test_a_pattern_that_would_backtrack_is_safe_and_accepted(tmp_path: Path) -> None:
    """(a+)+$ is catastrophic for backtracking engines but linear under RE2, so it is allowed."""
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: a\n    when: {min_count: 3}\n    scope: {regex: '(a+)+$'}\n"
    )
    assert main(["rules", "check", str(tmp_path)]) == 0
