"""`bench pipeline` runs the real pipeline over a generated stream and reports its numbers."""

from __future__ import annotations

import io

from crisiswatch.bench.pipeline import bench_pipeline, generate
from crisiswatch.mentions import parse_mention


def test_generated_stream_is_valid_mentions_over_a_day() -> None:
    """Every generated line parses; the stream spans a day of event time."""
    lines = generate(500, brands=3)
    mentions = [parse_mention(line) for line in lines]
    assert len(mentions) == 500
    span = mentions[-1].created_at - mentions[0].created_at
    assert 23 * 3600 < span.total_seconds() < 24 * 3600


def test_report_has_every_number() -> None:
    """The report names throughput, the parse ratio, decision latency and memory."""
    out = io.StringIO()
    assert bench_pipeline(out, mentions=3_000, brands=2) == 0
    report = out.getvalue()
    for part in ("mentions per second", "pipeline / parse", "judging a closed bucket", "peak RSS"):
        assert part in report, report
