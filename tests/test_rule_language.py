"""The rule language's conditions and mention filters, through the real pipeline."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import judged_signals

from crisiswatch.config import Settings
from crisiswatch.domain import Mention, Page, PageKind
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import load_rules
from crisiswatch.rules.schema import Rule, compile_regex
from crisiswatch.yamlfile import ProblemsError

T0 = datetime(2026, 3, 2, tzinfo=UTC)


class Scorer:
    def negative_one(self, text: str) -> float:
        return 0.95 if "furious" in text else 0.05


def settings(**extra: object) -> Settings:
    return Settings.model_validate(
        {
            "brands": [
                {"id": "acme", "keywords": ["acme"], "handles": ["@AcmeBank"], "topics": {}}
            ],
            **extra,
        }
    )


def rule(when: dict[str, object], **extra: object) -> Rule:
    return Rule.model_validate({"id": "r", "when": when, **extra})


class Stream:
    """Feeds a pipeline minute by minute: a calm day, then whatever a test adds."""

    def __init__(self, rules: list[Rule], config: Settings | None = None) -> None:
        self.pipeline = Pipeline(config or settings(), rules, Scorer())
        self.pages: list[Page] = []
        self.n = 0

    def post(self, minute: int, text: str, **fields: object) -> None:
        self.n += 1
        defaults: dict[str, object] = {"source": "x", "author": f"user{self.n}"}
        mention = Mention(
            id=f"m{self.n}",
            created_at=T0 + timedelta(minutes=minute),
            text=text,
            **{**defaults, **fields},  # type: ignore[arg-type]
        )
        self.pages += self.pipeline.feed(mention)

    def calm(self, start: int, minutes: int, per_minute: int = 1) -> None:
        for minute in range(start, start + minutes):
            for _ in range(per_minute):
                self.post(minute, "acme is fine, ordinary day for acme customers")

    def opened(self) -> list[Page]:
        self.pages += self.pipeline.finish()
        return [p for p in self.pages if p.kind is PageKind.OPENED]


class TestConditions:
    def test_keyword_burst(self) -> None:
        """Watched words at 3× their usual count page; their usual rate does not."""
        burst = {"keyword_burst": {"terms": ["refund", "charged twice"], "min_count": 5}}
        stream = Stream([rule(burst)])
        stream.calm(0, 600)
        for minute in range(0, 600, 30):  # a refund question every half hour is usual
            stream.post(minute, "acme how do I get a refund")
        assert stream.pipeline.stats.alerts == 0
        for n in range(12):
            stream.post(600 + n % 5, "acme charged twice for one coffee, furious")
        (page,) = stream.opened()
        assert "12 mentions of refund, charged twice" in page.incident.reasons[0]

    def test_reply_pile_on_counts_replies_to_the_brands_own_posts(self) -> None:
        """Angry replies to the brand's handle page; the same posts not as replies do not."""
        pile_on = {"reply_pile_on": {"min_replies": 10, "min_negative_share": 0.6}}
        stream = Stream([rule(pile_on)])
        stream.calm(0, 60)
        for n in range(12):
            stream.post(60 + n % 4, "acme is furious-making, not a reply @AcmeBank")
        assert stream.pipeline.stats.alerts == 0
        for n in range(12):
            stream.post(70 + n % 4, "@AcmeBank furious about your post")
        for _ in range(3):
            stream.post(71, "so furious", in_reply_to_author="AcmeBank")
        (page,) = stream.opened()
        assert "15 replies to the brand's own posts, 100% negative" in page.incident.reasons

    def test_emerging_term_after_warm_up(self) -> None:
        """A term the brand never had pages once the series knows its usual vocabulary."""
        stream = Stream([rule({"emerging_term": {"min_count": 4}})])
        stream.calm(0, 24 * 60 + 60)
        for n in range(5):
            stream.post(24 * 60 + 60, f"acme skimmer found on machine {n}")
        (page,) = stream.opened()
        assert "'skimmer' (5)" in page.incident.reasons[0]

    def test_new_terms_are_looked_for_only_while_a_rule_asks(self) -> None:
        """Without an emerging_term rule no signal carries new terms (none is looked for),
        yet the brand's terms are still learned: a reload that adds one, nested in `any`,
        finds a new word at once, and not an everyday one."""
        quiet = rule({"min_count": 10_000})
        stream = Stream([quiet])
        judged = judged_signals(stream.pipeline.detector)
        stream.calm(0, 24 * 60 + 60)
        for n in range(5):
            stream.post(24 * 60 + 60, f"acme skimmer found on machine {n}")
        stream.post(24 * 60 + 68, "acme is fine")  # closes the skimmer's bucket
        assert judged and not any(signal.new_terms for signal in judged)
        asks = rule({"any": [{"min_count": 10_000}, {"emerging_term": {"min_count": 4}}]})
        stream.pipeline.reconfigure(stream.pipeline.settings, [asks])
        for n in range(5):
            stream.post(24 * 60 + 70, f"acme phishing {n}, ordinary day for acme customers")
        (page,) = stream.opened()
        assert page.incident.reasons == ("new term never seen for this brand: 'phishing' (5)",)

    def test_cross_platform_needs_negative_mentions_on_two_sources(self) -> None:
        """Complaints on X alone do not hold; X and Reddit together do."""
        stream = Stream([rule({"cross_platform": {"min_count": 3}})])
        for _n in range(6):
            stream.post(10, "acme furious")
        for _n in range(3):
            stream.post(20, "acme furious")
            stream.post(20, "acme furious", source="reddit")
        (page,) = stream.opened()
        assert page.incident.reasons == (
            "negative mentions on 2 platforms at once (x 3, reddit 3)",
        )


class TestMentionFilters:
    def test_a_filtered_rule_counts_only_matching_mentions(self) -> None:
        """A scope filter gives the rule its own series: other mentions never reach it."""
        filtered = rule(
            {"min_count": 5},
            scope={"sources": ["reddit"], "min_followers": 100, "regex": "(?i)over ?charg"},
        )
        stream = Stream([filtered])
        for _n in range(10):
            stream.post(5, "acme overcharged me", source="x", author_followers=500)
            stream.post(6, "acme overcharged me", source="reddit", author_followers=5)
            stream.post(7, "acme is lovely", source="reddit", author_followers=500)
        assert stream.opened() == []
        stream = Stream([filtered])
        for _n in range(5):
            stream.post(5, "acme OVER CHARGING again", source="reddit", author_followers=500)
        (page,) = stream.opened()
        assert page.incident.latest.series.view == filtered.scope.view != ""

    def test_keywords_and_languages_filter(self) -> None:
        """Keyword and language filters combine."""
        scoped = rule({"min_count": 3}, scope={"keywords": ["branch"], "languages": ["en"]})
        stream = Stream([scoped])
        for _n in range(3):
            stream.post(5, "acme branches closing", lang="en")
            stream.post(6, "acme branch closing", lang="de")
        assert len(stream.opened()) == 1

    def test_rules_sharing_a_filter_each_count_their_own_brand(self) -> None:
        """Two rules with the same filter for different brands share a view, and it counts
        the mentions of both brands: the second rule's brand pages too."""
        two = settings(
            brands=[{"id": "acme", "keywords": ["acme"]}, {"id": "beta", "keywords": ["beta"]}]
        )
        rules = [
            Rule.model_validate(
                {
                    "id": f"{b}-reddit",
                    "when": {"min_count": 5},
                    "scope": {"brands": [b], "sources": ["reddit"]},
                }
            )
            for b in ("acme", "beta")
        ]
        for brand in ("acme", "beta"):
            stream = Stream(rules, two)
            for _n in range(5):
                stream.post(5, f"{brand} is down again", source="reddit")
            (page,) = stream.opened()
            assert page.incident.rules == (f"{brand}-reddit",)

    def test_same_filter_shares_a_view_and_a_changed_one_does_not(self) -> None:
        """The view name depends on the filter only, not on the rule."""
        a = rule({"min_count": 1}, scope={"keywords": ["x"]})
        b = Rule.model_validate({"id": "b", "when": {"min_count": 1}, "scope": {"keywords": ["x"]}})
        c = rule({"min_count": 1}, scope={"keywords": ["y"]})
        assert a.scope.view == b.scope.view != c.scope.view
        assert rule({"min_count": 1}).scope.view == ""


class TestRegexSafety:
    def test_catastrophic_pattern_runs_in_linear_time(self) -> None:
        """(a+)+$ on a long hostile text returns at once (RE2, not backtracking)."""
        pattern = compile_regex("(a+)+$")
        started = time.perf_counter()
        assert pattern.search("a" * 50_000 + "b") is None
        assert time.perf_counter() - started < 1.0

    def test_backreferences_and_bad_patterns_are_check_errors(self, tmp_path: Path) -> None:
        """A pattern RE2 cannot run is a clear file:line problem, never a traceback."""
        path = tmp_path / "r.yaml"
        path.write_text(
            "rules:\n  - id: a\n    when: {min_count: 1}\n    scope: {regex: '(a)\\1'}\n"
        )
        with pytest.raises(ProblemsError) as caught:
            load_rules([path])
        (problem,) = caught.value.problems
        assert problem.line == 4 and "invalid regex" in problem.message
        assert "RE2 syntax" in problem.message


class TestPlannedEvents:
    def calendar(self) -> Settings:
        event = {
            "brand": "acme",
            "start": "2026-03-02T10:00:00Z",
            "end": "2026-03-02T14:00:00Z",
            "expect_volume": 3,
        }
        return settings(calendar=[event])

    def surge(self, stream: Stream, at_minute: int, per_minute: int, text: str) -> None:
        for minute in range(at_minute, at_minute + 10):
            for _ in range(per_minute):
                stream.post(minute, text)

    def test_planned_volume_mutes_volume_conditions_in_its_window(self) -> None:
        """A campaign's expected volume does not page; the same surge outside the window does."""
        rules = [rule({"volume_spike": "high"}, keep_firing_for="30m")]
        inside = Stream(rules, self.calendar())
        inside.calm(0, 600, per_minute=2)
        self.surge(inside, 600, 8, "acme launch day, great app")
        assert inside.opened() == []
        outside = Stream(rules, self.calendar())
        outside.calm(0, 900, per_minute=2)
        self.surge(outside, 900, 8, "acme launch day, great app")
        assert len(outside.opened()) == 1

    def test_sentiment_conditions_still_page_during_an_event(self) -> None:
        """Anger during a campaign still pages."""
        rules = [rule({"negative_share": {"above": 0.5, "min_count": 10}})]
        stream = Stream(rules, self.calendar())
        stream.calm(0, 600, per_minute=2)
        self.surge(stream, 600, 8, "acme furious about the launch")
        assert len(stream.opened()) == 1

    def test_unknown_brand_in_calendar_is_an_error(self) -> None:
        """Planned events name configured brands."""
        with pytest.raises(ValueError, match="calendar: unknown brand 'nope'"):
            settings(
                calendar=[
                    {
                        "brand": "nope",
                        "start": "2026-03-02T10:00:00Z",
                        "end": "2026-03-02T11:00:00Z",
                    }
                ]
            )
