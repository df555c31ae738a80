"""`bench pipeline` runs the real pipeline over a generated stream and reports its numbers."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest

from crisiswatch.bench.pipeline import bench_pipeline, generate
from crisiswatch.cli import main
from crisiswatch.enrich.attribution import tokenize
from crisiswatch.mentions import parse_mention


def test_generated_stream_is_valid_mentions_at_the_rate() -> None:
    """Every generated line parses; the stream comes at the rate asked, in event time."""
    mentions = [parse_mention(line) for line in generate(500, brands=3, rate=0.5)]
    assert len(mentions) == 500
    span = mentions[-1].created_at - mentions[0].created_at
    assert span.total_seconds() == 998


def test_generated_posts_bring_a_real_stream_s_vocabulary() -> None:
    """Posts carry everyday words by Zipf's law: a few are very common, and 10,000 posts bring
    thousands of distinct words (six fixed phrases alone had brought a few dozen), so the
    benchmark loads the term counters as a real stream does."""
    counts: Counter[str] = Counter()
    for line in generate(10_000, brands=1):
        counts.update(tokenize(parse_mention(line).text))
    assert len(counts) > 3_000
    (_, most), *_ = counts.most_common(1)
    assert most > 100 * sorted(counts.values())[len(counts) // 2]


def test_report_has_every_number() -> None:
    """The report names throughput, the parse ratio, decision latency and memory."""
    out = io.StringIO()
    assert bench_pipeline(out, mentions=3_000, brands=2) == 0
    report = out.getvalue()
    parts = ("mentions per second", "pipeline / parse", "sentiment only", "judging", "peak RSS")
    for part in parts:
        assert part in report, report
    assert "(1 close)" in report  # 3,000 mentions at the firehose rate: one, at the end


def test_an_empty_file_is_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    """A mentions file with nothing in it says so and fails, rather than dividing by zero."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = io.StringIO()
    assert bench_pipeline(out, mentions=1, brands=1, path=empty) == 1
    assert "no mentions" in out.getvalue()


def test_bench_numbers_must_be_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """A zero or negative count or rate is a one-line usage error (exit 2)."""
    for args in (["--mentions", "0"], ["--rate", "-5"], ["--brands", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", "pipeline", *args])
        assert exit_.value.code == 2
        assert "--" in capsys.readouterr().err
