"""Event time against the live daemon's clock: a mention dated ahead of it is refused, never
allowed to move event time on and make every real mention after it too late."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from conftest import KeywordScorer, MentionFactory

from crisiswatch.config import load_settings
from crisiswatch.mentions import MentionError, parse_mention
from crisiswatch.pipeline import MAX_AHEAD, Pipeline
from crisiswatch.rules.loader import load_rules

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "crisiswatch" / "demo" / "config.yaml"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def pipeline(clock: Callable[[], datetime] | None) -> Pipeline:
    settings = load_settings(DEMO_CONFIG)
    return Pipeline(settings, load_rules(settings.rules, settings), KeywordScorer(), clock=clock)


def feed_stream(target: Pipeline, make_mention: MentionFactory) -> None:
    """A post stamped in Tokyo time without its offset (read as UTC: 9 hours ahead), then ten
    minutes of real posts, the last from a phone whose clock is a few minutes fast."""
    target.feed(make_mention(id="x:tokyo", created_at=NOW + timedelta(hours=9)))
    for minute in range(10):
        target.feed(make_mention(id=f"x:{minute}", created_at=NOW + timedelta(minutes=minute)))
    target.feed(make_mention(id="x:fast", created_at=NOW + timedelta(minutes=9) + MAX_AHEAD / 2))


def test_a_mention_hours_ahead_of_the_clock_is_refused(make_mention: MentionFactory) -> None:
    """Live, the post 9 hours ahead is refused and counted; every real post counts, none is
    late, and event time stays with them."""
    live = pipeline(lambda: NOW + timedelta(minutes=9))
    feed_stream(live, make_mention)
    assert (live.stats.future, live.stats.mentions, live.stats.late) == (1, 11, 0)
    assert live.aggregator.watermark is not None
    assert live.aggregator.watermark < NOW + timedelta(minutes=20)


def test_a_replay_has_no_clock_to_refuse_by(make_mention: MentionFactory) -> None:
    """A replay is a function of its file alone: it takes the post as dated, and the real
    posts after it are then too late, which the backtest reports."""
    replay = pipeline(None)
    feed_stream(replay, make_mention)
    assert (replay.stats.future, replay.stats.mentions, replay.stats.late) == (0, 1, 11)


def test_the_horizon_follows_the_clock(make_mention: MentionFactory) -> None:
    """A post refused while ahead of the clock is taken once the clock has caught up."""
    clock = [NOW]
    live = pipeline(lambda: clock[0])
    early = make_mention(id="x:early", created_at=NOW + timedelta(hours=1))
    live.feed(early)
    clock[0] = NOW + timedelta(hours=1)
    live.feed(early)
    assert (live.stats.future, live.stats.mentions) == (1, 1)


@pytest.mark.parametrize("stamp", ["9999-06-01T00:00:00Z", "1970-01-01T00:00:00Z"])
def test_an_implausible_year_is_a_malformed_line(stamp: str) -> None:
    """A post dated in the year 9999 (or at the Unix epoch) is a bad line, whatever the clock:
    event time could not be computed past it."""
    line = orjson.dumps({"id": "a", "created_at": stamp, "text": "t"})
    with pytest.raises(MentionError, match="not a plausible time"):
        parse_mention(line)
