"""The rule language: loading, checking (file:line:column messages) and evaluation."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MentionFactory

from crisiswatch.cli import main
from crisiswatch.config import PlannedEvent, load_settings
from crisiswatch.detect.volume import recurrence
from crisiswatch.domain import Bucket, ScoredMention, SeriesKey, Signal
from crisiswatch.rules.conditions import Condition, Context, KeywordBurst, how_often
from crisiswatch.rules.engine import RuleEngine
from crisiswatch.rules.loader import load_rules
from crisiswatch.rules.schema import PLACEHOLDERS, Rule
from crisiswatch.yamlfile import ProblemsError

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"
DEMO_CONFIG = ROOT / "crisiswatch" / "demo" / "config.yaml"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def signal(
    count: int = 50,
    negative: int = 30,
    volume_score: float = 0.99,
    negative_score: float = 0.999,
    start: datetime = T0,
) -> Signal:
    bucket = acme_bucket(count, negative, start=start, reach=1000, sources=(("x", count),))
    return Signal(bucket, volume_score, 8.0, 15.0, negative_score, 0.2, 10)


def acme_bucket(count: int, negative: int, start: datetime = T0, **fields: Any) -> Bucket:
    """A five-minute bucket of acme's with one author a mention; `fields` sets the rest."""
    defaults: dict[str, Any] = {"reach": 0, "sources": (), "top_terms": (), "samples": ()}
    return Bucket(
        series=SeriesKey("acme"),
        start=start,
        end=start + timedelta(minutes=5),
        count=count,
        raw_count=count,
        negative_count=negative,
        unique_authors=count,
        **(defaults | fields),
    )


def favourable(n: int, make_mention: MentionFactory) -> Signal:
    """A bucket of `n` mentions with everything a condition could ask of them: all negative,
    all replies to the brand, split over two platforms, a far-reaching author, all saying
    "down", and a new term in each."""
    down = KeywordBurst.model_validate({"terms": ["down"]}).term_set
    post = ScoredMention(make_mention(author_followers=10**9), "acme", (), 1.0)
    halves = (("x", n - n // 2), ("reddit", n // 2))
    bucket = acme_bucket(
        n,
        n,
        reach=10**9 * min(n, 1),
        sources=halves,
        top_terms=(("down", n),) if n else (),
        samples=(post,) if n else (),
        brand_replies=n,
        brand_reply_negative=n,
        negative_sources=halves,
        bursts=((down, n),),
    )
    return Signal(bucket, 1.0, 0.0, 0.0, 1.0, 0.0, 0, new_terms=(("outage", n),) if n else ())


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(*paths: Path) -> list[str]:
    with pytest.raises(ProblemsError) as caught:
        load_rules(list(paths), load_settings(DEMO_CONFIG))
    return [str(p) for p in caught.value.problems]


class TestReadmeExamples:
    def test_every_example_in_the_rules_readme_loads(self) -> None:
        """Each YAML example in rules/README.md is a valid rule or condition."""
        text = (RULES / "README.md").read_text(encoding="utf-8")
        blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
        assert len(blocks) >= 12
        import yaml

        for block in blocks:
            data = yaml.safe_load(block)
            if "rules" in data:
                for rule in data["rules"]:
                    Rule.model_validate(rule)
            elif "calendar" in data:
                for event in data["calendar"]:
                    PlannedEvent.model_validate(event)
            else:
                Condition.model_validate(data["when"])


class TestCheck:
    def test_shipped_rules_are_valid(self) -> None:
        """The shipped rules load against the demo config."""
        rules = load_rules([RULES], load_settings(DEMO_CONFIG))
        assert {r.id for r in rules} >= {"angry-surge", "negative-turn"}

    def test_misspelled_key_names_file_line_column_and_suggestion(self, tmp_path: Path) -> None:
        """A typo in a key is an error at its line, with a did-you-mean."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when: {min_count: 3}\n    severty: critical\n",
        )
        assert problems_of(path) == [f"{path}:4:5: unknown key 'severty'; did you mean 'severity'?"]

    def test_misspelled_condition_suggests_the_condition(self, tmp_path: Path) -> None:
        """A typo inside `when` suggests the condition's real name."""
        path = write(tmp_path, "rules:\n  - id: a\n    when:\n      volume_spke: high\n")
        found = problems_of(path)
        assert any(
            ":4:7: unknown key 'volume_spke'; did you mean 'volume_spike'?" in p for p in found
        )

    def test_wrong_type_names_the_key(self, tmp_path: Path) -> None:
        """A value of the wrong type is reported at that key."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when:\n      negative_share: {above: lots}\n",
        )
        (problem,) = problems_of(path)
        assert problem.startswith(f"{path}:4:")
        assert "above" in problem

    def test_invalid_yaml_gives_its_line(self, tmp_path: Path) -> None:
        """Broken YAML is one clear line, not a traceback."""
        path = write(tmp_path, "rules:\n  - id: a\n    when: [unclosed\n")
        (problem,) = problems_of(path)
        assert problem.startswith(f"{path}:") and "invalid YAML" in problem

    def test_duplicate_ids_across_files(self, tmp_path: Path) -> None:
        """Two rules with one id are an error pointing at the second."""
        body = "rules:\n  - id: same\n    when: {min_count: 3}\n"
        first, second = write(tmp_path, body, "a.yaml"), write(tmp_path, body, "b.yaml")
        (problem,) = problems_of(first, second)
        assert problem.startswith(f"{second}:2:")
        assert f"duplicate rule id 'same' (first at {first}:2)" in problem

    def test_unknown_route_and_brand_against_config(self, tmp_path: Path) -> None:
        """Routes and brands must exist in the deployment's config."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when: {min_count: 3}\n    route: defualt\n"
            "    scope: {brands: [kestrl]}\n",
        )
        found = problems_of(path)
        assert f"{path}:4:12: unknown route 'defualt'; did you mean 'default'?" in found
        assert any("unknown brand 'kestrl'; did you mean 'kestrel'?" in p for p in found)

    def test_unknown_topics_and_sources_against_config(self, tmp_path: Path) -> None:
        """A topic none of the rule's brands has, or a misspelt built-in source, would
        silently never match: each is an error at its place, with a did-you-mean. A feed of
        its own (an ingest or replay line's `source`) is fine."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when: {min_count: 3}\n"
            "    scope: {brands: [kestrel], topics: [crads, '*'], sources: [twitter, redit, X]}\n",
        )
        assert problems_of(path) == [
            f"{path}:4:41: unknown topic 'crads': not a topic of kestrel; did you mean 'cards'?",
            f"{path}:4:64: unknown source 'twitter'; X's mentions have source 'x'",
            f"{path}:4:73: unknown source 'redit'; did you mean 'reddit'?",
            f"{path}:4:80: unknown source 'X': sources are lowercase, as in 'x'",
        ]
        fine = write(
            tmp_path,
            "rules:\n  - id: b\n    when: {min_count: 3}\n"
            "    scope: {topics: [cards, '*'], sources: [x, reddit, trustpilot]}\n",
            "fine.yaml",
        )
        assert [r.id for r in load_rules([fine], load_settings(DEMO_CONFIG))] == ["b"]

    def test_empty_lists_and_bad_language_codes_in_a_scope_are_errors(self, tmp_path: Path) -> None:
        """An empty list matches nothing, and mentions carry lowercase language codes (en):
        either would silently disable the rule, so both are errors even without a config."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when: {min_count: 3}\n"
            "    scope: {keywords: [], sources: [], brands: [], languages: [EN]}\n"
            "  - id: b\n    when: {min_count: 3}\n    scope: {languages: [en, pt-br, english]}\n",
        )
        with pytest.raises(ProblemsError) as caught:
            load_rules([path])
        found = [str(p) for p in caught.value.problems]
        assert len(found) == 5, found
        for key in ("keywords", "sources", "brands"):
            assert any(f"scope.{key}: an empty list" in p for p in found), (key, found)
        assert any(
            p.startswith(f"{path}:4:") and "language codes are lowercase" in p and "'en'" in p
            for p in found
        ), found
        assert any(
            p.startswith(f"{path}:7:24: ") and "'english' is not a language" in p for p in found
        )

    def test_condition_needs_exactly_one_key(self, tmp_path: Path) -> None:
        """Two conditions in one mapping is an error (use `all`)."""
        path = write(tmp_path, "rules:\n  - id: a\n    when: {min_count: 3, volume_spike: high}\n")
        (problem,) = problems_of(path)
        assert "exactly one of" in problem and "found volume_spike, min_count" in problem

    def test_unknown_summary_placeholder(self, tmp_path: Path) -> None:
        """A placeholder the renderer does not know is an error."""
        path = write(
            tmp_path, "rules:\n  - id: a\n    when: {min_count: 3}\n    summary: '{brnad}'\n"
        )
        (problem,) = problems_of(path)
        assert "unknown placeholder {brnad}" in problem

    @pytest.mark.parametrize(
        ("summary", "said"),
        [
            ("{{ $labels.brand }}: {count}", "not as an Alertmanager template"),
            ("{brand}: { negative_pct } negative", "'{ negative_pct }' in summary is not a"),
            ("{count:>5} mentions", "'{count:>5}' in summary is not a placeholder"),
            ("{brand} up {count", "'{' in summary is not a placeholder"),
        ],
    )
    def test_text_that_only_looks_like_a_placeholder(
        self, tmp_path: Path, summary: str, said: str
    ) -> None:
        """Braces that are not a known placeholder would reach pages as written: an error,
        at the summary's line, that says how to write one."""
        path = write(
            tmp_path, f"rules:\n  - id: a\n    when: {{min_count: 3}}\n    summary: '{summary}'\n"
        )
        (problem,) = problems_of(path)
        assert problem.startswith(f"{path}:4:") and said in problem, problem
        assert "known: {authors}, {brand}" in problem

    def test_every_documented_placeholder_passes(self, tmp_path: Path) -> None:
        """rules/README's list of placeholders is the renderer's, and each one passes."""
        readme = (ROOT / "rules" / "README.md").read_text()
        section = readme.split("## Summary placeholders", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"`\{(\w+)\}`", section))
        assert documented == PLACEHOLDERS
        summary = " ".join("{" + name + "}" for name in sorted(documented))
        path = write(
            tmp_path, f"rules:\n  - id: a\n    when: {{min_count: 3}}\n    summary: '{summary}'\n"
        )
        (rule,) = load_rules([path], load_settings(DEMO_CONFIG))
        assert rule.summary == summary

    @pytest.mark.parametrize(
        ("raw", "said"),
        [
            (b"rules:\n\t- id: a\n", ":2:1: invalid YAML: found character '\\t' that cannot "
             "start any token (YAML indents with spaces, never tabs)"),
            (b"rules:\n  - id: caf\xe9\n", ":2:12: not UTF-8 (byte 0xe9): save the file as UTF-8"),
            ("rules:\n  - id: é".encode() + b"\xe9\n", ":2:10: not UTF-8 (byte 0xe9): save the "
             "file as UTF-8"),
            (b"rules:\n  - id: a\x01\n", ":2:10: invalid YAML: character U+0001 is not allowed "
             "here; remove it"),
            (b"rules: []\rnote: \x02\n", ":2:7: invalid YAML: character U+0002 is not allowed "
             "here; remove it"),  # a lone \r breaks a line in YAML too
            (b"rules:\n  - id: a\n    when: {min_count: 3}\n    for: 2024-02-30\n",
             ":4:10: invalid YAML value: day is out of range for month"),
            (b"rules: []\n---\nrules: []\n", ":2:1: invalid YAML: but found another document "
             "(a file holds one document: take out the `---` line, or split the file)"),
            (b"rules:\n  - id: on\n    when: {min_count: 3}\n", ":2:9: rules.id: Input should "
             "be a valid string (YAML reads on/off/yes/no/true/false as true or false: put it "
             "in quotes)"),
            (b"rules:\n  - id: a\n    when: {negative_share: {above: 40}}\n",
             ":3:36: rules.when.negative_share.above: Input should be less than or equal to 1 "
             "(a share is a fraction: 0.4 for 40%)"),
        ],
    )  # fmt: skip
    def test_common_mistakes_say_how_to_fix_them(
        self, tmp_path: Path, raw: bytes, said: str
    ) -> None:
        """The YAML mistakes editors make most: located, with what to do, where the parser's or
        the validator's own words do not say it."""
        path = tmp_path / "rules.yaml"
        path.write_bytes(raw)
        assert problems_of(path) == [f"{path}{said}"]

    def test_bad_duration_and_bad_id(self, tmp_path: Path) -> None:
        """Durations read like 10m; ids are checked."""
        path = write(
            tmp_path, "rules:\n  - id: Bad Id\n    when: {min_count: 3}\n    for: 10 minutes\n"
        )
        found = problems_of(path)
        assert any(":2:" in p and "not a valid id" in p for p in found)
        assert any(":4:" in p and "not a duration" in p for p in found)

    def test_dotfiles_in_a_rules_folder_are_not_rules(self, tmp_path: Path) -> None:
        """An editor's lock (Emacs' `.#crisis.yaml`, a dangling symlink), a hidden file or
        folder: skipped by the loader (and so by reloads), never read as a broken rule file."""
        write(tmp_path, "rules:\n  - id: a\n    when: {min_count: 3}\n", "crisis.yaml")
        (tmp_path / ".#crisis.yaml").symlink_to("editor@host.12345:1700000000")
        write(tmp_path, "rules: [unclosed\n", ".crisis.yaml")
        (tmp_path / ".backup").mkdir()
        write(tmp_path / ".backup", "rules: [unclosed\n", "crisis.yaml")
        assert [rule.id for rule in load_rules([tmp_path])] == ["a"]

    def test_an_empty_folder_beside_rules_is_no_problem_but_no_rules_at_all_is(
        self, tmp_path: Path
    ) -> None:
        """A placeholder folder listed beside the real one loads the real one's rules; rules
        paths with no rule file at all are refused (nothing would page), each said."""
        empty = tmp_path / "empty"
        empty.mkdir()
        assert len(load_rules([RULES, empty])) == len(load_rules([RULES]))
        other = tmp_path / "other"
        other.mkdir()
        assert [p.split(":", 1)[0] for p in problems_of(empty, other)] == [str(empty), str(other)]

    def test_cli_exit_codes(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`rules check` exits 0 on the shipped rules and 1 on a broken copy."""
        assert main(["rules", "check", str(RULES)]) == 0
        broken = tmp_path / "rules"
        shutil.copytree(RULES, broken)
        path = broken / "crisis.yaml"
        path.write_text(path.read_text().replace("keep_firing_for", "keep_firing"), "utf-8")
        capsys.readouterr()
        assert main(["rules", "check", str(broken)]) == 1
        err = capsys.readouterr().err
        assert f"{path}:" in err and "unknown key 'keep_firing'" in err
        assert "Traceback" not in err

    def test_a_for_no_longer_than_a_bucket_is_warned_of(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With 5-minute buckets, `for: 5m` alerts on the first bucket that matches, as no `for`
        does: `rules check --config` (with the config's own rules) says so and how to need
        two buckets, and still passes; `for: 10m` is not warned of."""
        rules = tmp_path / "rules"
        rules.mkdir()
        write(rules, "rules:\n  - id: a\n    when: {min_count: 3}\n    for: 5m\n", "a.yaml")
        write(rules, "rules:\n  - id: b\n    when: {min_count: 3}\n    for: 10m\n", "b.yaml")
        config = tmp_path / "config.yaml"
        config.write_text("rules: [rules]\nbrands:\n  - id: acme\n    keywords: [acme]\n")
        assert main(["rules", "check", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines() == [
            "2 rules OK",
            "WARN rule 'a': for: 5m is no longer than a bucket (5m), so it changes nothing; "
            "use 10m to need two buckets in a row, or leave it out",
        ]


class TestEngine:
    def rule(self, when: dict[str, object], **extra: object) -> Rule:
        return Rule.model_validate({"id": "r", "when": when, **extra})

    def test_all_needs_every_condition_and_collects_reasons(self) -> None:
        """`all` holds only when each part holds, and says why for each."""
        rule = self.rule({"all": [{"volume_spike": "balanced"}, {"min_count": 20}]})
        (alert,) = RuleEngine([rule]).evaluate(signal())
        assert (
            len(alert.reasons) == 2
            and "volume 50 vs 8.0 expected (alert level 15)" in alert.reasons[0]
        )
        assert RuleEngine([rule]).evaluate(signal(count=10, negative=5)) == []

    def test_volume_reason_says_how_rare_in_words(self) -> None:
        """A volume alert says how often the series sees such a surge, not a bare score: the
        calibration makes 0.5 once a week, so a lower score is more often and a higher rarer,
        and anything past a year (extrapolated) is said as such."""
        rule = self.rule({"volume_spike": {"min_score": 0.3}})
        reasons = {
            score: RuleEngine([rule]).evaluate(signal(volume_score=score))[0].reasons[0]
            for score in (0.45, 0.5, 0.55, 0.6, 0.99)
        }
        assert reasons[0.5] == (
            "volume 50 vs 8.0 expected (alert level 15), in a surge this series sees about "
            "once a week"
        )
        assert reasons[0.45].endswith("in a surge this series sees about once in 2 days")
        assert reasons[0.55].endswith("in a surge this series sees about once a month")
        assert reasons[0.6].endswith("in a surge this series sees about once in 10 months")
        assert reasons[0.99].endswith("in a surge this series sees less than once a year")
        hourly = timedelta(hours=1)  # a week is fewer buckets: the same score is more often
        assert how_often(recurrence(0.6, hourly)) == "about once in 3 months"
        assert how_often(recurrence(0.0, hourly)) == "about once an hour"
        assert how_often(timedelta(minutes=5)) == "more than once an hour"

    def test_any_holds_when_one_part_holds(self) -> None:
        """`any` holds on the first part that holds."""
        rule = self.rule({"any": [{"min_count": 100}, {"negative_share": {"above": 0.5}}]})
        (alert,) = RuleEngine([rule]).evaluate(signal(count=50, negative=30))
        assert alert.reasons == ("negative share 60% (at least 50%) of 50 mentions",)
        rule = self.rule({"min_count": 40})
        (alert,) = RuleEngine([rule]).evaluate(signal(count=50))
        assert alert.reasons == ("50 mentions (at least 40)",)

    def test_sensitivity_presets_are_ordered(self) -> None:
        """`high` fires on scores that `low` ignores."""
        low, high = self.rule({"volume_spike": "low"}), self.rule({"volume_spike": "high"})
        scores = [i / 100 for i in range(101)]
        fired_low = sum(bool(RuleEngine([low]).evaluate(signal(volume_score=s))) for s in scores)
        fired_high = sum(bool(RuleEngine([high]).evaluate(signal(volume_score=s))) for s in scores)
        assert fired_high > fired_low

    def test_an_explicit_min_score_pages_less_the_higher_it_is(self) -> None:
        """`min_score` is the score a spike needs, so a higher one pages less; the presets are
        points on it, `high` paging most, and `balanced` is `min_score: 0.5`."""
        scores = [i / 100 for i in range(101)]

        def fired(spike: object) -> int:
            engine = RuleEngine([self.rule({"volume_spike": spike})])
            return sum(bool(engine.evaluate(signal(volume_score=s))) for s in scores)

        counts = [fired({"min_score": 0.8}), fired("low"), fired("balanced"), fired("high")]
        assert counts == sorted(counts) and len(set(counts)) == 4, counts
        assert fired({"min_score": 0.2}) > fired("high")
        assert fired({"min_score": 0.5}) == fired("balanced") == fired({})

    def test_a_numeric_sensitivity_is_refused_with_what_to_write(self, tmp_path: Path) -> None:
        """A number as `sensitivity` used to be a score threshold (a higher number paged less,
        against the word's meaning): now an error at its place naming `min_score`."""
        path = write(
            tmp_path,
            "rules:\n  - id: a\n    when: {volume_spike: {sensitivity: 0.8}}\n"
            "  - id: b\n    when: {negative_spike: 0.99}\n"
            "  - id: c\n    when: {volume_spike: {sensitivity: high, min_score: 0.7}}\n",
        )
        found = problems_of(path)
        assert len(found) == 3, found
        assert found[0].startswith(f"{path}:3:") and "write {min_score: 0.8}" in found[0]
        assert found[1].startswith(f"{path}:5:") and "write {min_score: 0.99}" in found[1]
        assert found[2].startswith(f"{path}:7:") and "`sensitivity` or `min_score`, not" in found[2]

    def test_for_waits_until_the_condition_has_held_long_enough(self) -> None:
        """With `for: 10m` on 5-minute buckets, the second holding bucket alerts."""
        engine = RuleEngine([self.rule({"min_count": 1}, **{"for": "10m"})])
        step = timedelta(minutes=5)
        assert engine.evaluate(signal(start=T0)) == []
        assert len(engine.evaluate(signal(start=T0 + step))) == 1
        assert engine.evaluate(signal(count=0, negative=0, start=T0 + 2 * step)) == []
        assert engine.evaluate(signal(start=T0 + 3 * step)) == []  # the clock restarted

    def test_a_condition_never_holds_below_its_floor(self) -> None:
        """The engine skips a rule on buckets that counted fewer mentions than its conditions
        need; only a volume spike (the last two hours' total) may hold on an empty bucket."""
        floors = [
            ({"min_count": 3}, 3),
            ({"negative_share": {"above": 0.0, "min_count": 3}}, 3),
            ({"negative_spike": {"min_score": 0.01, "min_count": 3}}, 3),
            ({"high_reach_negative": {"min_followers": 1, "min_negative": 0.5}}, 1),
            ({"keyword_burst": {"terms": ["down"], "min_count": 3}}, 3),
            ({"reply_pile_on": {"min_replies": 3, "min_negative_share": 0.0}}, 3),
            ({"emerging_term": {"min_count": 3}}, 3),
            ({"cross_platform": {"min_count": 3}}, 6),
            ({"any": [{"min_count": 3}, {"emerging_term": {"min_count": 2}}]}, 2),
            ({"all": [{"volume_spike": "high"}, {"min_count": 3}]}, 3),
            ({"any": [{"min_count": 5}, {"volume_spike": "high"}]}, 0),
        ]
        empty = signal(count=0, negative=0, negative_score=1.0)
        for when, floor in floors:
            condition = Condition.model_validate(when)
            assert condition.floor == floor, when
            if floor:
                assert condition.holds(empty, Context()) is None, when
        spike = self.rule({"any": [{"min_count": 5}, {"volume_spike": "high"}]})
        assert len(RuleEngine([spike]).evaluate(empty)) == 1

    def test_every_floor_is_tight(self, make_mention: MentionFactory) -> None:
        """On a bucket as favourable to a condition as can be, it holds at exactly its floor and
        not one mention below: a floor set too high would silently skip alerts."""
        cases = [
            {"min_count": 3},
            {"negative_share": {"above": 0.0, "min_count": 4}},
            {"negative_spike": {"min_score": 0.01, "min_count": 5}},
            {"high_reach_negative": {"min_followers": 1, "min_negative": 0.5}},
            {"keyword_burst": {"terms": ["down"], "min_count": 3}},
            {"reply_pile_on": {"min_replies": 3, "min_negative_share": 0.0}},
            {"emerging_term": {"min_count": 3}},
            {"cross_platform": {"min_count": 3}},
            {"any": [{"min_count": 7}, {"emerging_term": {"min_count": 2}}]},
            {"all": [{"min_count": 3}, {"reply_pile_on": {"min_replies": 4}}]},
        ]
        for when in cases:
            condition = Condition.model_validate(when)
            floor = condition.floor
            assert floor > 0, when
            at_floor = favourable(floor, make_mention)
            assert condition.holds(at_floor, Context()) is not None, when
            assert condition.holds(favourable(floor - 1, make_mention), Context()) is None, when

    def test_scope_limits_brands_and_topics(self) -> None:
        """A rule scoped to another brand or topic does not fire."""
        other = self.rule({"min_count": 1}, scope={"brands": ["other"]})
        topic = self.rule({"min_count": 1}, scope={"topics": ["cards"]})
        assert RuleEngine([other, topic]).evaluate(signal()) == []

    def test_summary_template(self) -> None:
        """The summary fills in the signal's numbers."""
        rule = self.rule(
            {"min_count": 1}, summary="{brand} {count} in {window}, {negative_pct} ({rise})"
        )
        (alert,) = RuleEngine([rule]).evaluate(signal())
        assert alert.summary == "acme 50 in 5m, 60% (×5.0)"
