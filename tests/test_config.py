"""The settings document: loading, file:line problems, durations and the state directory."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import crisiswatch
from crisiswatch.config import Settings, load_settings, state_dir
from crisiswatch.durations import format_duration, parse_duration
from crisiswatch.yamlfile import Problem, ProblemsError

DEMO = Path(crisiswatch.__file__).parent / "demo" / "config.yaml"

MINIMAL = """\
brands:
  - id: kestrel
    keywords: [kestrel bank]
"""


def write(tmp_path: Path, text: str, name: str = "crisiswatch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ProblemsError) as caught:
        load_settings(path)
    return caught.value.problems


class TestLoadSettings:
    def test_demo_config_loads(self) -> None:
        """The embedded demo config is valid, with its paths made relative to its folder."""
        settings = load_settings(DEMO)
        assert [b.id for b in settings.brands] == ["kestrel"]
        assert settings.pipeline.bucket == timedelta(minutes=5)
        assert settings.pipeline.allowed_lateness == timedelta(minutes=2)
        (rules,) = settings.rules
        assert rules.is_absolute()
        assert rules == DEMO.parent / ".." / "default_rules"
        assert sorted(rules.glob("*.yaml")), "the demo's rules folder holds the shipped rules"
        replay = settings.sources.replay
        assert replay is not None
        assert replay.path == DEMO.parent / "demo_mentions.jsonl.gz"

    def test_paths_relative_to_the_file_not_the_cwd(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Relative paths resolve against the config's folder wherever the daemon starts."""
        folder = tmp_path / "etc"
        folder.mkdir()
        write(
            folder,
            MINIMAL + "state_dir: state\nrules: [rules, /abs/rules]\n"
            "sources:\n  replay:\n    path: data/m.jsonl\n",
        )
        monkeypatch.chdir(tmp_path)
        settings = load_settings(Path("etc/crisiswatch.yaml"))
        base = folder.resolve()
        assert settings.state_dir == base / "state"
        assert settings.rules == [base / "rules", Path("/abs/rules")]
        assert settings.sources.replay is not None
        assert settings.sources.replay.path == base / "data" / "m.jsonl"

    def test_defaults(self, tmp_path: Path) -> None:
        """A config naming only a brand gets the documented defaults."""
        settings = load_settings(write(tmp_path, MINIMAL))
        assert settings.pipeline.bucket == timedelta(minutes=5)
        assert settings.pipeline.per_author_cap == 3
        assert settings.sources.replay is None
        assert settings.rules == [tmp_path.resolve() / "rules"]
        assert list(settings.routes) == ["default"]

    def test_hashtags_and_handles_get_their_prefix(self, tmp_path: Path) -> None:
        """A hashtag or handle written without # or @ gets it."""
        settings = load_settings(
            write(tmp_path, MINIMAL + "    hashtags: [KestrelBank]\n    handles: [KestrelHelp]\n")
        )
        assert settings.brands[0].hashtags == ["#KestrelBank"]
        assert settings.brands[0].handles == ["@KestrelHelp"]

    def test_misspelled_key(self, tmp_path: Path) -> None:
        """A misspelled key names the file, the key's line and column, and the likely key."""
        path = write(
            tmp_path,
            """\
            brands:
              - id: kestrel
                keywrods: [kestrel bank]
            """,
        )
        (problem,) = problems_of(path)
        assert problem.file == str(path)
        assert (problem.line, problem.column) == (3, 5)
        assert "'keywrods'" in problem.message
        assert "did you mean 'keywords'" in problem.message
        assert str(problem).startswith(f"{path}:3:5: ")

    @pytest.mark.parametrize(
        ("text", "line", "typo", "meant"),
        [
            (MINIMAL + "brand: x\n", 4, "brand", "brands"),
            (MINIMAL + "pipeline:\n  buckets: 5m\n", 5, "buckets", "bucket"),
            (MINIMAL + "routes:\n  default:\n    chanel: '#x'\n", 6, "chanel", "channel"),
            (MINIMAL + "sources:\n  replay:\n    pth: m.jsonl\n", 6, "pth", "path"),
        ],
    )
    def test_misspelled_key_at_any_depth(
        self, tmp_path: Path, text: str, line: int, typo: str, meant: str
    ) -> None:
        """Typos are caught at the top level, in nested sections, in maps and in optionals."""
        problems = problems_of(write(tmp_path, text))
        unknown = [p for p in problems if f"unknown key {typo!r}" in p.message]
        assert len(unknown) == 1
        assert unknown[0].line == line
        assert f"did you mean {meant!r}" in unknown[0].message

    def test_unknown_key_without_a_close_match_lists_the_keys(self, tmp_path: Path) -> None:
        """An unknown key like nothing allowed lists what is allowed instead."""
        (problem,) = problems_of(write(tmp_path, MINIMAL + "pipeline:\n  zzz: 1\n"))
        assert "unknown key 'zzz'" in problem.message
        assert "expected one of:" in problem.message
        assert "per_author_cap" in problem.message

    def test_wrong_type_names_the_key(self, tmp_path: Path) -> None:
        """A value of the wrong type names its key and points at its line."""
        (problem,) = problems_of(write(tmp_path, MINIMAL + "pipeline:\n  per_author_cap: lots\n"))
        assert problem.line == 5
        assert "pipeline.per_author_cap" in problem.message
        assert "integer" in problem.message

    def test_bad_duration_in_config(self, tmp_path: Path) -> None:
        """A duration spelled in words is reported with an example of the right spelling."""
        (problem,) = problems_of(
            write(tmp_path, MINIMAL + "pipeline:\n  allowed_lateness: 10 minutes\n")
        )
        assert problem.line == 5
        assert "pipeline.allowed_lateness" in problem.message
        assert "'10 minutes' is not a duration" in problem.message
        assert "Value error" not in problem.message

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        """Several problems come back together, in file order."""
        problems = problems_of(
            write(
                tmp_path,
                MINIMAL + "    keywrods: [x]\npipeline:\n  bucket: 7m\n  per_author_cap: 0\n",
            )
        )
        assert [p.line for p in problems] == [4, 6, 7]

    def test_invalid_yaml_gives_a_line(self, tmp_path: Path) -> None:
        """A YAML syntax error names the line it was found on."""
        path = write(tmp_path, "brands:\n  - id: k\n    keywords: [a\n  bad: : x\n")
        (problem,) = problems_of(path)
        assert problem.message.startswith("invalid YAML")
        assert problem.line == 4
        assert problem.file == str(path)

    def test_tab_indentation_is_invalid_yaml(self, tmp_path: Path) -> None:
        """A tab used for indentation is reported as invalid YAML on its line."""
        (problem,) = problems_of(write(tmp_path, "brands:\n\t- id: k\n"))
        assert problem.message.startswith("invalid YAML")
        assert problem.line == 2

    def test_duplicate_keys(self, tmp_path: Path) -> None:
        """A key written twice in one mapping is reported where it is repeated."""
        path = write(tmp_path, MINIMAL + "pipeline:\n  bucket: 5m\n  bucket: 10m\n")
        (problem,) = problems_of(path)
        assert problem.message == "duplicate key 'bucket'"
        assert (problem.line, problem.column) == (6, 3)

    def test_duplicate_brand_ids(self, tmp_path: Path) -> None:
        """Two brands with the same id are rejected, naming the id."""
        (problem,) = problems_of(write(tmp_path, MINIMAL + MINIMAL.removeprefix("brands:\n")))
        assert "brand ids must be unique" in problem.message
        assert "kestrel" in problem.message

    def test_brand_without_a_query(self, tmp_path: Path) -> None:
        """A brand with no keyword, hashtag or handle is rejected."""
        (problem,) = problems_of(write(tmp_path, "brands:\n  - id: kestrel\n    name: K\n"))
        assert "needs at least one keyword, hashtag or handle" in problem.message
        assert problem.line == 2

    @pytest.mark.parametrize("brand_id", ["Kestrel", "1kestrel", "kes trel", ""])
    def test_bad_brand_id(self, tmp_path: Path, brand_id: str) -> None:
        """A brand id must be a lowercase identifier."""
        (problem,) = problems_of(
            write(tmp_path, f"brands:\n  - id: '{brand_id}'\n    keywords: [k]\n")
        )
        assert "is not a valid id" in problem.message
        assert problem.line == 2

    def test_missing_brands(self, tmp_path: Path) -> None:
        """A config without brands says that key is required."""
        (problem,) = problems_of(write(tmp_path, "pipeline:\n  bucket: 5m\n"))
        assert problem.message == "missing required key 'brands'"

    @pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
    def test_not_a_mapping(self, tmp_path: Path, text: str) -> None:
        """An empty file or a document that is not a mapping is rejected."""
        (problem,) = problems_of(write(tmp_path, text))
        assert "must be a mapping" in problem.message

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing file is a problem naming the file, not a traceback."""
        (problem,) = problems_of(tmp_path / "absent.yaml")
        assert problem.file == str(tmp_path / "absent.yaml")
        assert "cannot read the file" in problem.message


class TestBucketSize:
    @pytest.mark.parametrize("size", ["1m", "5m", "15m", "1h", "1d"])
    def test_sizes_that_divide_a_day(self, tmp_path: Path, size: str) -> None:
        """Bucket sizes that divide a day evenly are accepted."""
        settings = load_settings(write(tmp_path, MINIMAL + f"pipeline:\n  bucket: {size}\n"))
        assert settings.pipeline.bucket == parse_duration(size)

    @pytest.mark.parametrize("size", ["7m", "11m", "30s", "2d", "0"])
    def test_sizes_that_do_not(self, tmp_path: Path, size: str) -> None:
        """Bucket sizes under a minute or that do not divide a day are rejected."""
        (problem,) = problems_of(write(tmp_path, MINIMAL + f"pipeline:\n  bucket: '{size}'\n"))
        assert "pipeline.bucket" in problem.message
        assert "divide a day" in problem.message


@pytest.mark.parametrize("capacity", ["100000000000000", "300000000"])
def test_a_dedupe_window_that_would_not_fit_is_refused(tmp_path: Path, capacity: str) -> None:
    """The dedupe table is allocated at start: a capacity of billions of ids passed `doctor`
    and then crashed the daemon with a MemoryError (a restart loop under systemd)."""
    (problem,) = problems_of(
        write(tmp_path, MINIMAL + f"pipeline:\n  dedupe_capacity: {capacity}\n")
    )
    assert "pipeline.dedupe_capacity" in problem.message and "50000000" in problem.message


class TestOps:
    @pytest.mark.parametrize("every", ["0", "'0'", "0s"])
    def test_a_checkpoint_interval_under_a_second_is_refused(
        self, tmp_path: Path, every: str
    ) -> None:
        """`checkpoint_every: 0` would never checkpoint while running: refused, saying why."""
        found = problems_of(write(tmp_path, MINIMAL + f"ops:\n  checkpoint_every: {every}\n"))
        assert len(found) == 1 and "ops.checkpoint_every" in found[0].message
        assert "at least 1s" in found[0].message

    def test_retention_is_at_least_two_days(self, tmp_path: Path) -> None:
        """State is kept 30 days by default; less than two would take from the daily digest."""
        assert load_settings(write(tmp_path, MINIMAL)).ops.retention == timedelta(days=30)
        (problem,) = problems_of(write(tmp_path, MINIMAL + "ops:\n  retention: 1d\n"))
        assert "ops.retention" in problem.message and "at least 2d" in problem.message

    def test_a_second_is_the_shortest(self, tmp_path: Path) -> None:
        """1s is allowed (the kill-and-restart tests checkpoint that often)."""
        settings = load_settings(write(tmp_path, MINIMAL + "ops:\n  checkpoint_every: 1s\n"))
        assert settings.ops.checkpoint_every == timedelta(seconds=1)


class TestSources:
    @pytest.mark.parametrize("tick", ["0", "'0'", "0s"])
    def test_a_clock_tick_under_a_second_is_refused(self, tmp_path: Path, tick: str) -> None:
        """`tick: 0s` would never close a quiet hour's buckets with live sources: refused,
        saying why."""
        found = problems_of(write(tmp_path, MINIMAL + f"sources:\n  tick: {tick}\n"))
        assert len(found) == 1 and "sources.tick" in found[0].message
        assert "at least 1s" in found[0].message and "quiet hour" in found[0].message

    def test_a_second_is_the_shortest_tick(self, tmp_path: Path) -> None:
        settings = load_settings(write(tmp_path, MINIMAL + "sources:\n  tick: 1s\n"))
        assert settings.sources.tick == timedelta(seconds=1)


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("30s", timedelta(seconds=30)),
            ("10m", timedelta(minutes=10)),
            ("2h", timedelta(hours=2)),
            ("1d", timedelta(days=1)),
            ("1w", timedelta(weeks=1)),
            ("1h30m", timedelta(hours=1, minutes=30)),
            ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
            ("0", timedelta(0)),
            (" 5M ", timedelta(minutes=5)),
        ],
    )
    def test_valid(self, text: str, expected: timedelta) -> None:
        """Editor-style durations parse to the right length."""
        assert parse_duration(text) == expected

    @pytest.mark.parametrize(
        "text", ["10 minutes", "-5m", "", "5", "m", "1.5h", "5x", "1h 30m", "1" * 7 + "s"]
    )
    def test_invalid(self, text: str) -> None:
        """Anything else raises ValueError quoting the input and showing the right spelling."""
        with pytest.raises(ValueError) as caught:
            parse_duration(text)
        message = str(caught.value)
        assert repr(text) in message
        assert "30s, 10m, 2h" in message

    @pytest.mark.parametrize("text", ["0s", "45s", "5m", "1h30m", "1d1s", "2w"])
    def test_format_round_trips(self, text: str) -> None:
        """format_duration writes a spelling that parses back to the same length."""
        delta = parse_duration(text)
        assert parse_duration(format_duration(delta)) == delta

    def test_format_is_shortest(self) -> None:
        """format_duration uses the largest units."""
        assert format_duration(timedelta(minutes=90)) == "1h30m"
        assert format_duration(timedelta(0)) == "0s"


class TestStateDir:
    def test_defaults_to_var(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a config value or systemd, state lives in ./var."""
        monkeypatch.delenv("STATE_DIRECTORY", raising=False)
        settings = Settings.model_validate({"brands": [{"id": "k", "keywords": ["k"]}]})
        assert state_dir(settings) == Path("var")

    def test_honours_systemd(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Under systemd, the first of StateDirectory's folders is used."""
        monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/crisiswatch:/var/lib/other")
        settings = Settings.model_validate({"brands": [{"id": "k", "keywords": ["k"]}]})
        assert state_dir(settings) == Path("/var/lib/crisiswatch")

    def test_config_value_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A state_dir in the config wins over systemd's, relative to the config file."""
        monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/crisiswatch")
        settings = load_settings(write(tmp_path, MINIMAL + "state_dir: mystate\n"))
        assert state_dir(settings) == tmp_path.resolve() / "mystate"


def test_the_readme_config_snippets_are_valid() -> None:
    """Every YAML block README shows (the sources' keys, in order) loads as a config."""
    import re

    import yaml

    readme = (Path(crisiswatch.__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```ya?ml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 4
    doc = yaml.safe_load("".join(blocks) + "brands:\n  - id: acme\n    keywords: [acme]\n")
    sources = Settings.model_validate(doc).sources
    assert sources.reddit is not None and sources.reddit.karma_per_minute == 30
    assert sources.x is not None and sources.http_ingest is not None
