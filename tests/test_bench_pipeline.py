"""`bench pipeline` runs the real pipeline over a generated stream and reports its numbers."""

from __future__ import annotations

import gzip
import io
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from crisiswatch.bench.pipeline import _warm_up_at_density, bench_pipeline, generate, settings_for
from crisiswatch.cli import DEMO_DIR, main
from crisiswatch.domain import PageKind, SeriesKey
from crisiswatch.enrich.attribution import tokenize
from crisiswatch.enrich.sentiment import SentimentModel
from crisiswatch.mentions import parse_mention
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules


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


def test_learning_after_the_pages_is_timed_apart() -> None:
    """As in the daemon, a close's learning comes after its pages: the report times it on
    its own line, once for each close in the stream and once for the stream's end (which
    may close several bucket ends: each is learned before the next is judged)."""
    out = io.StringIO()
    assert bench_pipeline(out, mentions=3_000, brands=2, rate=2.0) == 0  # 25 minutes
    lines = out.getvalue().splitlines()
    (closes,) = [line for line in lines if "closing and judging" in line]
    (learning,) = [line for line in lines if "then learning from it (after its pages" in line]
    assert closes.endswith("(5 closes)") and learning.endswith("(5 closes)")


def test_an_empty_file_is_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    """A mentions file with nothing in it says so and fails, rather than dividing by zero."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = io.StringIO()
    assert bench_pipeline(out, mentions=1, brands=1, path=empty) == 1
    assert "no mentions" in out.getvalue()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("missing.jsonl", None),
        ("fake.jsonl", b"\x1f\x8bnot gzip\n"),
        ("truncated.jsonl.gz", gzip.compress(b'{"id": "x:1"}\n' * 1_000)[:40]),
    ],
)
def test_an_unreadable_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes | None
) -> None:
    """A missing file, a file that only looks gzipped and a truncated gzip: one line on
    stderr naming the file (exit 1), no traceback."""
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["bench", "pipeline", "--file", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"crisiswatch bench pipeline: cannot read {path}: ")
    assert len(err.splitlines()) == 1


def demo_slice(tmp_path: Path, count: int) -> Path:
    """The demo's first `count` lines, and a malformed line and a blank one."""
    with gzip.open(DEMO_DIR / "demo_mentions.jsonl.gz") as demo:
        lines = [next(demo) for _ in range(count)]
    path = tmp_path / "demo.jsonl"
    path.write_bytes(b"".join(lines[:10]) + b"not json\n\n" + b"".join(lines[10:]))
    return path


def test_a_file_s_report_says_what_was_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report of a file says how many lines were malformed (and not measured as
    mentions), how many mentions were counted and how many were about none of the brands;
    with the benchmark's made-up brands a real stream is unattributed, and it says to give
    `--config`, which runs the file with that deployment's brands and rules."""
    path = demo_slice(tmp_path, 400)
    assert main(["bench", "pipeline", "--file", str(path)]) == 0
    made_up = capsys.readouterr().out
    assert made_up.startswith("pipeline: 399 mentions")  # the demo's line 244 is malformed
    assert "3 malformed lines skipped" in made_up
    unattributed = re.search(r"([\d,]+) about none of the brands", made_up)
    assert unattributed is not None and int(unattributed.group(1).replace(",", "")) > 300
    assert "--config" in made_up
    config = str(DEMO_DIR / "config.yaml")
    assert main(["bench", "pipeline", "--file", str(path), "--config", config]) == 0
    deployed = capsys.readouterr().out
    counted = re.search(r"([\d,]+) counted", deployed)
    assert counted is not None and int(counted.group(1).replace(",", "")) > 300
    assert "1 brands, 4 series" in deployed and "--config" not in deployed


def test_bench_numbers_must_be_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """A zero or negative count or rate is a one-line usage error (exit 2)."""
    for args in (["--mentions", "0"], ["--rate", "-5"], ["--brands", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(["bench", "pipeline", *args])
        assert exit_.value.code == 2
        assert "--" in capsys.readouterr().err


def test_a_warm_up_is_judged_but_not_measured() -> None:
    """A warm-up (detectors past their first hours) comes before the measured stream, in
    event time, and none of it is counted: the report's counts are the measured stream's alone,
    none of which comes too late for the warm-up's buckets."""
    out = io.StringIO()
    assert bench_pipeline(out, mentions=3_000, brands=2, warm_up=timedelta(hours=4)) == 0
    report = out.getvalue()
    assert report.startswith("warm-up: 4 h of event time"), report
    assert "576 series-buckets judged (not measured)" in report  # 48 bucket ends × 12 series
    assert "3,000 counted, 0 about none of the brands, 0 duplicates, 0 too late" in report
    assert "12 series-buckets judged (0.004 per mention)" in report


@pytest.mark.parametrize("option", ["--warm-up", "--surging"])
def test_a_warm_up_goes_with_a_generated_stream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """A file is its own history: a warm-up asked for with one is refused, not ignored."""
    path = tmp_path / "mentions.jsonl"
    path.write_text("")
    value = "1h" if option == "--warm-up" else "1"
    assert main(["bench", "pipeline", "--file", str(path), option, value]) == 2
    assert f"{option} goes with a generated stream" in capsys.readouterr().err


def test_more_brands_surging_than_there_are_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "pipeline", "--brands", "2", "--surging", "3"]) == 2
    assert "--surging is more than --brands" in capsys.readouterr().err


def test_a_surge_without_a_warm_up_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Detectors in their first hours page nothing: a surge they cannot see is refused."""
    assert main(["bench", "pipeline", "--surging", "1", "--warm-up", "0"]) == 2
    assert "--surging needs a warm-up" in capsys.readouterr().err


@pytest.mark.parametrize("surging", [0, 1])
def test_a_warm_up_at_the_stream_s_density_pages_only_the_surging_brands(surging: int) -> None:
    """Warmed up on buckets like the stream's own, the detectors find its buckets usual: an
    ordinary stream opens no incident, and one where a brand surges (four times its share)
    opens incidents about that brand alone."""
    settings = settings_for(4)
    pipeline = Pipeline(
        settings, load_rules(settings.rules, settings), SentimentModel.load_default()
    )
    rate = 20.0  # mentions/s: 1,500 a brand in a five-minute bucket
    start = _warm_up_at_density(pipeline, 4, rate, timedelta(hours=4))  # past 3 h: surprises
    assert pipeline.stats.buckets == 47 * 24  # every bucket end before the sample's, judged
    opened = pipeline.stats.pages
    pages = []
    for line in generate(12_000, 4, rate, start=start, surging=surging):
        pages += pipeline.feed(parse_mention(line))
    pages += pipeline.finish()
    brands = {page.incident.brand for page in pages if page.kind is PageKind.OPENED}
    assert brands == ({"brand000"} if surging else set())
    assert opened <= 2  # the warm-up's own buckets are usual too


def test_a_warm_up_at_density_teaches_each_brand_its_stream_s_usual_count() -> None:
    """Every brand's series learn the count a bucket of the measured stream has, not that of
    their own few sample mentions scaled up: about 2,500 a brand in the sample, scaled to
    37,500 in a bucket, were some 700 off (3.6 standard deviations of a bucket), either way:
    an ordinary stream surged or slumped in every brand."""
    brands, rate = 8, 1_000.0  # mentions/s: 37,500 a brand in a five-minute bucket
    settings = settings_for(brands)
    pipeline = Pipeline(
        settings, load_rules(settings.rules, settings), SentimentModel.load_default()
    )
    start = _warm_up_at_density(pipeline, brands, rate, timedelta(hours=2))
    usual = rate * settings.pipeline.bucket.total_seconds() / brands
    for brand in range(brands):
        volume = pipeline.detector._series[SeriesKey(f"brand{brand:03d}")].volume
        learned = volume.score_one(usual, start).expected
        assert abs(learned - usual) < usual**0.5, (brand, learned)  # within a bucket's sd


@pytest.mark.parametrize(("brands", "surging"), [(1, 1), (2, 2)])
def test_every_brand_can_surge(brands: int, surging: int) -> None:
    """A surging brand is `SURGE` times as busy as in the warm-up however many surge: with
    every brand surging (one brand of one), the stream is a surge in each, not as usual."""
    out = io.StringIO()
    warm_up = timedelta(hours=4)
    done = bench_pipeline(
        out, mentions=12_000, brands=brands, rate=20.0, warm_up=warm_up, surging=surging
    )
    assert done == 0
    assert f"then {surging} of {brands} brands surge" in out.getvalue()
    (pages,) = re.findall(r"series, (\d+) pages", out.getvalue())
    assert int(pages) > 0, out.getvalue()
