"""Per-series signal state: which terms a series already knows, so that new ones stand out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import KeywordScorer

from crisiswatch.aggregate import TOP_TERMS
from crisiswatch.config import load_settings
from crisiswatch.detect.signals import (
    KNOWN_TERMS,
    KNOWN_TERMS_BUDGET,
    KNOWN_TERMS_LEAST,
    TERMS_WARMUP,
    SignalDetector,
)
from crisiswatch.domain import Bucket, SeriesKey
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.schema import Rule

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "crisiswatch" / "demo" / "config.yaml"
KEY = SeriesKey("kestrel")
T0 = datetime(2026, 3, 2, tzinfo=UTC)
STEP = timedelta(minutes=5)


def bucket(n: int, terms: list[str]) -> Bucket:
    start = T0 + n * STEP
    top = tuple((term, 3) for term in terms)
    return Bucket(KEY, start, start + STEP, 40, 40, 4, 30, 900, (("x", 40),), top, ())


def test_known_terms_forget_the_least_recently_seen_and_stay_bounded() -> None:
    """A term seen every bucket stays known however many others pass through; terms not seen
    for longest are forgotten first, and the memory of terms stays within KNOWN_TERMS."""
    detector = SignalDetector(300)
    buckets = KNOWN_TERMS // 29 * 2  # twice as many one-off terms as are remembered
    for n in range(buckets):
        terms = ["outage", *(f"w{n}x{k}" for k in range(29))]
        if n == buckets - 1:
            terms.append("w0x0")  # an old term, seen again just now
        detector.signal(bucket(n, terms))
    known = detector._series[KEY].known_terms
    assert KNOWN_TERMS // 2 <= len(known) <= KNOWN_TERMS
    assert "outage" in known and "w0x0" in known
    assert "w0x1" not in known and f"w{buckets - 1}x5" in known
    last = detector.signal(bucket(buckets, ["outage", "w0x1", "w0x0"]))
    assert [term for term, _ in last.new_terms] == ["w0x1"]


def test_signals_together_equal_signals_one_by_one() -> None:
    """Scoring a bucket end's series together (the negative-share tails in one pass) gives the
    same signals, and leaves the same learned state, as scoring them one at a time."""
    together, alone = SignalDetector(300), SignalDetector(300)
    keys = [SeriesKey(f"brand{b}", topic) for b in range(40) for topic in ("*", "cards")]
    for n in range(30):
        start = T0 + n * STEP
        buckets = []
        for i, key in enumerate(keys):
            count = (i * 7 + n * 13) % 90 + (400 if n == 20 and i % 3 == 0 else 0)
            negative = min(count, (i + n) % 17 + (count // 2 if n == 25 and i % 5 == 0 else 0))
            buckets.append(
                Bucket(key, start, start + STEP, count, count, negative, 9, 90, (), (), ())
            )
        ours, theirs = together.signals(buckets), [alone.signal(b) for b in buckets]
        # The tails agree to rounding (a row's sum depends on its block's padding).
        assert [s.negative_score for s in ours] == pytest.approx(
            [s.negative_score for s in theirs], rel=1e-12, abs=1e-15
        )
        assert [replace(s, negative_score=0.0) for s in ours] == [
            replace(s, negative_score=0.0) for s in theirs
        ]
        if n == 25:
            assert sum(s.negative_score > 0.995 for s in ours) >= 5


def test_a_brand_s_series_share_what_terms_are_known() -> None:
    """A term the brand has had is known to each of its series (the brand's roll-up had it, so
    its topic series do not call it new); a term new to the brand is news to every series of
    the brand that has it in the same bucket, and known to all of them after."""
    detector = SignalDetector(300)
    topic = SeriesKey("kestrel", "cards")
    other = SeriesKey("osprey")
    for n in range(TERMS_WARMUP):
        detector.signals([bucket(n, ["outage"]), replace(bucket(n, []), series=topic)])
    fresh = [bucket(TERMS_WARMUP, ["outage", "swallowed"])]
    fresh += [replace(fresh[0], series=topic), replace(fresh[0], series=other)]
    assert [s.new_terms for s in detector.signals(fresh)] == [(("swallowed", 3),)] * 2 + [()]
    again = [replace(b, start=b.start + STEP, end=b.end + STEP) for b in fresh]
    assert [s.new_terms for s in detector.signals(again)] == [(), (), ()]


def test_the_memory_of_terms_is_shared_out_among_brands() -> None:
    """Each brand remembers its share of KNOWN_TERMS_BUDGET (within the least and most a brand
    may have), however many distinct words its buckets bring."""
    detector = SignalDetector(300)
    configured = [SeriesKey(f"brand{b}", topic) for b in range(200) for topic in ("*", "x")]
    detector.prepare(configured)
    share = KNOWN_TERMS_BUDGET // 200
    assert KNOWN_TERMS_LEAST <= share <= KNOWN_TERMS
    key = SeriesKey("brand7")
    for n in range(share // 10):
        words = tuple((f"w{n}x{k}", 3) for k in range(TOP_TERMS))
        detector.signal(replace(bucket(n, []), series=key, top_terms=words))
    known = detector._series[key].known_terms
    assert share // 2 <= len(known) <= share
    assert f"w{share // 10 - 1}x0" in known and "w0x0" not in known
    detector.prepare([*configured, SeriesKey("solo")])  # a reload with one brand more
    assert known.capacity == KNOWN_TERMS_BUDGET // 201
    detector.prepare(configured[:80])  # a reload down to 40 brands: theirs is a bigger share
    assert detector._series[configured[0]].known_terms.capacity == KNOWN_TERMS_BUDGET // 40


def test_a_reload_lets_go_of_series_no_longer_configured() -> None:
    """Each reload that edits a filtered rule makes new views; the old views' detectors, known
    terms and chart rings are let go, so memory and checkpoints stay the size of the config
    (twenty edits had kept twenty-one views' worth)."""
    settings = load_settings(DEMO_CONFIG)
    rule = "rules:\n  - id: r\n    when: {{min_count: 3}}\n    scope: {{regex: '{}'}}\n"

    def rules(pattern: str) -> list[Rule]:
        return [Rule.model_validate(y) for y in yaml.safe_load(rule.format(pattern))["rules"]]

    pipeline = Pipeline(settings, rules("refund"), KeywordScorer())
    sizes = {(len(pipeline.detector._series), len(pipeline.history._rings))}
    for n in range(20):
        pipeline.reconfigure(settings, rules(f"refund{n}"))
        sizes.add((len(pipeline.detector._series), len(pipeline.history._rings)))
    assert len(sizes) == 1, sizes
    views = {key.view for key in pipeline.detector._series}
    assert len(views) == 2 and "" in views  # every series and the one filtered view now
    pipeline.reconfigure(settings.model_copy(update={"brands": []}), [])
    assert pipeline.detector._series == {} and pipeline.detector._known == {}
