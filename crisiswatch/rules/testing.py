"""Rule tests (`crisiswatch rules test`): input series in, the pages the rules must send out.

A test file names rule files, an optional deployment config, a start time and a list of tests.
Each test gives either per-bucket series in a compact notation (`"10x36 80x6"`: 36 buckets of
10 mentions, then 6 of 80), which become mentions, or a mention JSON-lines file; the mentions
go through the daemon's own `Pipeline` (attribution, buckets, detectors, rules, incidents), and
the pages it makes are compared with the expected ones. The format is described in
`rules/README.md` ("Rule tests").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from crisiswatch.config import Brand, Duration, PipelineSettings, Settings, Strict, load_settings
from crisiswatch.domain import Mention, Page, Silence
from crisiswatch.durations import format_duration, parse_duration
from crisiswatch.mentions import (
    CutShort,
    MentionError,
    mention_from_dict,
    open_lines,
    read_mentions,
)
from crisiswatch.notify.render import render_line
from crisiswatch.notify.stages import QuietQueue, silenced_by
from crisiswatch.pipeline import Pipeline
from crisiswatch.rules.loader import has_rule_suffix, hidden, load_rules
from crisiswatch.rules.schema import Rule
from crisiswatch.yamlfile import (
    Path_,
    Problem,
    ProblemsError,
    YamlDocument,
    did_you_mean,
    load_yaml,
    validate,
)

TEST_STEM = "_test"  # a rule test file is named *_test.yaml (or .yml)
DEFAULT_BRAND = "acme"
NEGATIVE = 0.9  # P(negative) of a generated negative mention; the others get 1 - NEGATIVE
_POST_KEYS = frozenset(
    {f.name for f in dataclasses.fields(Mention)} - {"id", "created_at", "brand"}
) | {"at", "negative", "followers"}


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _at(value: object) -> object:
    """`at`: an offset from the start (`3h5m`, `0`) or an absolute time."""
    if value == 0:
        return timedelta(0)
    return parse_duration(value) if isinstance(value, str) else value


def _moment(value: object, start: datetime) -> datetime:
    at = _at(value)
    if isinstance(at, timedelta):
        return start + at
    if isinstance(at, datetime):
        return _utc(at)
    raise ValueError("`at` is an offset from the start (like 3h5m) or a time")


def _terms(text: object) -> list[tuple[str, int]]:
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text.split():
        raise ValueError("expected values like '10x36 80x6 10' (VALUE or VALUExREPEAT)")
    terms = []
    for term in text.split():
        value, times, repeat = term.partition("x")
        if times and not (repeat.isdigit() and 0 < int(repeat) <= 100_000):
            raise ValueError(f"{term!r}: the repeat after 'x' must be a whole number ≥ 1")
        terms.append((value, int(repeat or 1)))
    return terms


def _counts(text: object) -> tuple[int, ...]:
    """`"10x3 80"` → (10, 10, 10, 80)."""
    counts: list[int] = []
    for value, repeat in _terms(text):
        if not value.isdigit() or int(value) > 1_000_000:
            raise ValueError(f"{value!r} is not a count (a whole number ≥ 0)")
        counts.extend([int(value)] * repeat)
    return tuple(counts)


def _shares(value: object) -> object:
    """A number is one share for every bucket; a string is a per-bucket notation."""
    if not isinstance(value, str):
        return value
    shares: list[float] = []
    for text, repeat in _terms(value):
        try:
            share = float(text)
        except ValueError:
            share = -1.0
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{text!r} is not a share between 0 and 1")
        shares.extend([share] * repeat)
    return tuple(shares)


At = Annotated[timedelta | datetime, BeforeValidator(_at)]
Counts = Annotated[tuple[int, ...], BeforeValidator(_counts)]
Shares = Annotated[float | tuple[float, ...], BeforeValidator(_shares)]
Start = Annotated[datetime, AfterValidator(_utc)]


class SeriesInput(Strict):
    """One series of a test: its count per bucket, negative share, sources and sample posts."""

    series: str  # "brand" (its roll-up) or "brand/topic"
    count: Counts
    negative: Shares = Field(0.1)
    sources: dict[str, float] = {"x": 1.0}  # weights of a split of each bucket's count
    text: str | None = None  # the generated mentions' text; default: the brand and the topic
    posts: list[dict[str, Any]] = []  # mentions in the JSON-lines format, with `at`, `negative`

    @field_validator("negative")
    @classmethod
    def _share(cls, value: float | tuple[float, ...]) -> float | tuple[float, ...]:
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise ValueError("a share is between 0 and 1")
        return value

    @field_validator("sources")
    @classmethod
    def _weights(cls, sources: dict[str, float]) -> dict[str, float]:
        if not sources or any(weight <= 0 for weight in sources.values()):
            raise ValueError("give at least one source, each with a weight above 0")
        return sources


class ExpectedPage(Strict):
    at: At
    kind: Literal["opened", "escalated", "updated", "reminder", "resolved"]
    rules: list[str] | None = None  # the incident's rules so far, in any order
    severity: Literal["info", "warning", "critical"] | None = None
    stage: Literal["spark", "flame", "fire"] | None = None


class SilenceInput(Strict):
    """A silence in force during a test (as `crisiswatch silence add` would make)."""

    brand: str | None = None
    rule: str | None = None
    incident: str | None = None
    from_: At = Field(alias="from")
    until: At


class RuleTest(Strict):
    name: str
    start: Start | None = None  # default: the file's
    series: list[SeriesInput] = []
    mentions: Path | None = None  # mention JSON lines (optionally gzipped), relative to the file
    silences: list[SilenceInput] = []
    expect: list[ExpectedPage]  # every page as delivered, in order; [] means no page at all

    @model_validator(mode="after")
    def _one_input(self) -> RuleTest:
        if bool(self.series) == (self.mentions is not None):
            raise ValueError("a test needs either `series` or `mentions` (not both)")
        return self


class RuleTestFile(Strict):
    rules: list[Path] = Field(min_length=1)  # rule files or folders, relative to this file
    config: Path | None = None  # relative to this file; default: the brands the series name
    start: Start
    bucket: Duration | None = None  # default: the config's bucket
    tests: list[RuleTest] = Field(min_length=1)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: timedelta | None) -> timedelta | None:
        if bucket is None:
            return None
        try:
            return PipelineSettings(bucket=bucket).bucket
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None


@dataclass(frozen=True, slots=True)
class Scripted:
    """A mention to feed, with the P(negative) the test gives it."""

    mention: Mention
    negative: float


class _ScriptedScorer:
    """Sentiment as the test wrote it: the value set just before each mention is fed."""

    def __init__(self) -> None:
        self.next = 0.0

    def negative_one(self, text: str) -> float:
        return self.next


@dataclass(frozen=True, slots=True)
class Case:
    """One test, checked and ready to run."""

    name: str
    start: datetime
    expect: list[ExpectedPage]
    buckets: list[list[Scripted]]  # the generated mentions, bucket by bucket
    mentions: Path | None
    silences: list[Silence]

    def pages(self, settings: Settings, rules: Sequence[Rule]) -> list[Page]:
        """Every page the daemon would deliver for the test's input, in delivery order: the
        pipeline's pages, less the silenced ones, those in quiet hours at the hours' end unless
        a newer page of their incident went out first (superseded)."""
        queue = QuietQueue(settings.routes)
        delivered: list[Page] = []
        announced: set[str] = set()  # incidents a page of which was queued
        for page in self._made(settings, rules):
            told = page.incident.id in announced
            if silenced_by(page, self.silences, page.at, announced=told) is not None:
                continue
            announced.add(page.incident.id)
            delivered.extend(sent for sent, _ in queue.offer(page))
        return delivered + [sent for sent, _ in queue.finish()]

    def _made(self, settings: Settings, rules: Sequence[Rule]) -> list[Page]:
        """Run the daemon's pipeline over the test's input; every page it made, in order."""
        if self.mentions is not None:
            from crisiswatch.enrich.sentiment import SentimentModel

            pipeline = Pipeline(settings, rules, SentimentModel.load_default())
            pages: list[Page] = []
            with open_lines(self.mentions) as handle:
                for item in read_mentions(handle, default_source="replay"):
                    if isinstance(item, Mention):
                        pages.extend(pipeline.feed(item))
                    elif isinstance(item, CutShort):  # a test of part of its input passes wrongly
                        problem = Problem(str(self.mentions), item.line_number, 1, item.reason)
                        raise ProblemsError([problem])
            return pages + pipeline.finish()
        scorer = _ScriptedScorer()
        pipeline = Pipeline(settings, rules, scorer)
        width, lateness = settings.pipeline.bucket, settings.pipeline.allowed_lateness
        pages = []
        for index, bucket in enumerate(self.buckets):
            for scripted in bucket:
                scorer.next = scripted.negative
                pages.extend(pipeline.feed(scripted.mention))
            pages.extend(pipeline.advance(self.start + (index + 1) * width + lateness))
        return pages + pipeline.finish()

    def resolve(self, at: timedelta | datetime) -> datetime:
        return self.start + at if isinstance(at, timedelta) else _utc(at)


@dataclass(frozen=True, slots=True)
class Suite:
    """A test file, checked: the deployment, its rules and its tests."""

    file: Path
    settings: Settings
    rules: list[Rule]
    cases: list[Case]


def test_files(paths: Iterable[Path]) -> list[Path]:
    """The test files under `paths` (files as given, folders searched for *_test.yaml and
    *_test.yml, leaving out dotfiles)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        found.extend(
            test
            for test in sorted(path.rglob(f"*{TEST_STEM}.*"))
            if has_rule_suffix(test) and not hidden(test.relative_to(path).parts)
        )
    return found


def load_suite(path: Path) -> Suite:
    """Read and check a test file; raise `ProblemsError` with every problem found."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ProblemsError([doc.problem((), "a rule test file is a mapping with `tests:`")])
    if "tests" not in doc.data and _rule_list(doc.data.get("rules")):
        raise ProblemsError([doc.problem(("rules",), _A_RULE_FILE, key=True)])
    spec = validate(RuleTestFile, doc)
    base = path.parent
    missing = [
        doc.problem(("rules", n), f"no such rule file or folder: {base / p}")
        for n, p in enumerate(spec.rules)
        if not (base / p).exists()
    ]
    if missing:
        raise ProblemsError(missing)
    settings = load_settings(base / spec.config) if spec.config else _default_settings(spec.tests)
    if spec.bucket is not None:
        pipeline = settings.pipeline.model_copy(update={"bucket": spec.bucket})
        settings = settings.model_copy(update={"pipeline": pipeline})
    rules = load_rules([base / p for p in spec.rules], settings)
    problems: list[Problem] = []
    cases = [
        _case(doc, ("tests", number), test, spec.start, settings, rules, problems)
        for number, test in enumerate(spec.tests)
    ]
    if problems:
        raise ProblemsError(problems)
    return Suite(path, settings, rules, cases)


_A_RULE_FILE = (
    "this is a rule file, not a rule test: `crisiswatch rules check` checks it; a rule test "
    "(NAME_test.yaml, with `tests:`) names the rule files it runs in its `rules:`"
)


def _rule_list(value: object) -> bool:
    """Whether `rules:` lists rules themselves (mappings), as a rule file's does, rather than
    the paths of rule files, as a test's does."""
    return isinstance(value, list) and any(isinstance(item, dict) for item in value)


def _default_settings(tests: Sequence[RuleTest]) -> Settings:
    """One brand per brand the series name (`acme` if none), with the topics they name and
    its id as its own account's handle (so a text that starts `@acme` replies to the brand)."""
    topics: dict[str, set[str]] = {}
    for test in tests:
        for series in test.series:
            brand, _, topic = series.series.partition("/")
            topics.setdefault(brand, set()).update([topic] if topic else [])
    brands = [
        Brand(id=brand, keywords=[brand], handles=[brand], topics={t: [t] for t in sorted(names)})
        for brand, names in sorted((topics or {DEFAULT_BRAND: set()}).items())
    ]
    return Settings(brands=brands)


def _case(
    doc: YamlDocument,
    where: Path_,
    test: RuleTest,
    file_start: datetime,
    settings: Settings,
    rules: Sequence[Rule],
    problems: list[Problem],
) -> Case:
    start = test.start or file_start
    width = settings.pipeline.bucket
    known_rules = [rule.id for rule in rules]
    for number, page in enumerate(test.expect):
        for position, rule_id in enumerate(page.rules or ()):
            if rule_id not in known_rules:
                path = (*where, "expect", number, "rules", position)
                hint = did_you_mean(rule_id, known_rules)
                problems.append(doc.problem(path, f"no rule {rule_id!r} is loaded{hint}"))
    mentions = None
    if test.mentions is not None:
        mentions = _relative(doc, test.mentions)
        if not mentions.is_file():
            problems.append(doc.problem((*where, "mentions"), f"no such file: {mentions}"))
    buckets: list[list[Scripted]] = []
    if test.series:
        if int(start.timestamp()) % int(width.total_seconds()):
            key = (*where, "start") if test.start else ("start",)
            message = f"start {start:%H:%M:%S} is not on a {format_duration(width)} bucket boundary"
            problems.append(doc.problem(key, message))
        lengths = {len(s.count) for s in test.series}
        if len(lengths) > 1:
            problems.append(
                doc.problem(
                    (*where, "series"),
                    "every series of a test needs the same number of buckets "
                    f"(found {', '.join(str(n) for n in sorted(lengths))})",
                )
            )
        buckets = [[] for _ in range(max(lengths))]
        for number, series in enumerate(test.series):
            spot = (*where, "series", number)
            for index, scripted in _generate(doc, spot, series, start, settings, problems):
                buckets[index].append(scripted)
        for bucket in buckets:
            bucket.sort(key=lambda s: s.mention.created_at)
    silences = [
        Silence(
            id=f"test-{number}",
            starts_at=_moment(spec.from_, start),
            ends_at=_moment(spec.until, start),
            created_by="rule test",
            comment=test.name,
            brand=spec.brand,
            rule=spec.rule,
            incident=spec.incident,
        )
        for number, spec in enumerate(test.silences)
    ]
    return Case(test.name, start, test.expect, buckets, mentions, silences)


def _relative(doc: YamlDocument, path: Path) -> Path:
    return path if path.is_absolute() else Path(doc.file).parent / path


def _generate(
    doc: YamlDocument,
    where: Path_,
    spec: SeriesInput,
    start: datetime,
    settings: Settings,
    problems: list[Problem],
) -> list[tuple[int, Scripted]]:
    """The mentions of one series: its posts, then generated ones up to each bucket's count."""
    brand_id, _, topic = spec.series.partition("/")
    brand = settings.brand(brand_id)
    if brand is None or (topic and topic not in brand.topics):
        known = [n for b in settings.brands for n in (b.id, *(f"{b.id}/{t}" for t in b.topics))]
        message = f"unknown series {spec.series!r}{did_you_mean(spec.series, known)}"
        problems.append(doc.problem((*where, "series"), message))
        return []
    text = spec.text or f"{brand.display_name} {brand.topics[topic][0] if topic else ''}".strip()
    width = settings.pipeline.bucket
    tag = f"{spec.series.replace('/', '-')}#{where[-1]}"  # unique per series entry: no dedupe
    posts: dict[int, list[Scripted]] = {}
    for number, post in enumerate(spec.posts):
        scripted = _post(doc, (*where, "posts", number), post, start, brand_id, spec, problems)
        if scripted is not None:
            index = (scripted.mention.created_at - start) // width
            if not 0 <= index < len(spec.count):
                message = "the post is outside the series' buckets"
                problems.append(doc.problem((*where, "posts", number, "at"), message))
                continue
            posts.setdefault(index, []).append(scripted)
    shares = spec.negative
    if isinstance(shares, tuple) and len(shares) != len(spec.count):
        problems.append(
            doc.problem(
                (*where, "negative"),
                f"{len(shares)} shares for {len(spec.count)} counts; give one per bucket "
                "or a single number",
            )
        )
        return []
    out: list[tuple[int, Scripted]] = []
    for index, count in enumerate(spec.count):
        share = shares[index] if isinstance(shares, tuple) else shares
        given = posts.get(index, [])
        out.extend((index, post) for post in given)
        fill = max(count - len(given), 0)
        negative = round(count * share) - sum(p.negative >= 0.5 for p in given)
        bucket_start = start + index * width
        sources = _split(fill, spec.sources)
        for number in range(fill):
            mention = Mention(
                id=f"test:{tag}:{index}:{number}",
                source=sources[number],
                created_at=bucket_start + (number + 0.5) * width / fill,
                text=text,
                brand=brand_id,
                author=f"{tag}-{index}-{number}",
            )
            out.append((index, Scripted(mention, NEGATIVE if number < negative else 1 - NEGATIVE)))
    return out


def _split(count: int, weights: dict[str, float]) -> list[str]:
    """`count` sources, shared by weight (largest remainders), interleaved over the bucket."""
    total = sum(weights.values())
    exact = {name: count * weight / total for name, weight in weights.items()}
    shares = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: shares[name] - exact[name])
    for name in by_remainder[: count - sum(shares.values())]:
        shares[name] += 1
    order = sorted(
        ((position + 0.5) / n, name) for name, n in shares.items() for position in range(n)
    )
    return [name for _, name in order]


def _post(
    doc: YamlDocument,
    where: Path_,
    post: dict[str, Any],
    start: datetime,
    brand: str,
    spec: SeriesInput,
    problems: list[Problem],
) -> Scripted | None:
    """A sample post: a mention in the JSON-lines format, placed at `at`, with its negative."""
    bad = False
    for key in post:
        if key not in _POST_KEYS:
            hint = did_you_mean(str(key), sorted(_POST_KEYS))
            problems.append(doc.problem((*where, key), f"unknown key {key!r}{hint}", key=True))
            bad = True
    fields = dict(post)
    try:
        at = _moment(fields.pop("at"), start)
        negative = float(fields.pop("negative", NEGATIVE))
        if not 0.0 <= negative <= 1.0:
            raise ValueError("negative: a share is between 0 and 1")
        if "followers" in fields:
            fields["author_followers"] = fields.pop("followers")
        fields.setdefault("text", spec.text or "a sample post")
        fields.setdefault("source", next(iter(spec.sources)))
        mention = mention_from_dict(
            {
                **fields,
                "id": f"post:{spec.series}#{where[-3]}:{where[-1]}",
                "created_at": at.isoformat(),
                "brand": brand,
            }
        )
    except KeyError:
        problems.append(doc.problem(where, "a post needs `at` (an offset like 3h, or a time)"))
        return None
    except (ValueError, TypeError, MentionError) as exc:
        problems.append(doc.problem(where, f"invalid post: {exc}"))
        return None
    return None if bad else Scripted(mention, negative)


def _matches(case: Case, page: Page, want: ExpectedPage) -> bool:
    incident = page.incident
    return (
        page.at == case.resolve(want.at)
        and page.kind.value == want.kind
        and (want.rules is None or set(want.rules) == set(incident.rules))
        and (want.severity is None or want.severity == incident.severity.label)
        and (want.stage is None or want.stage == incident.stage.label)
    )


def _offset(case: Case, at: datetime) -> str:
    delta = at - case.start
    return f"-{format_duration(-delta)}" if delta < timedelta(0) else f"+{format_duration(delta)}"


def _expected_line(case: Case, want: ExpectedPage) -> str:
    at = case.resolve(want.at)
    return (
        f"{_offset(case, at):>8}  {at:%Y-%m-%d %H:%M} UTC  {want.kind:<9} "
        f"{want.severity or '*':<8} {want.stage or '*':<5} "
        f"{','.join(sorted(want.rules)) if want.rules is not None else '*'}"
    )


def _report(case: Case, got: list[Page], out: TextIO) -> None:
    first = next(
        (
            n
            for n in range(max(len(got), len(case.expect)))
            if n >= len(got) or n >= len(case.expect) or not _matches(case, got[n], case.expect[n])
        ),
    )
    if first >= len(got):
        print(
            f"  page {first + 1}: expected {case.expect[first].kind}, got no more pages", file=out
        )
    elif first >= len(case.expect):
        print(f"  page {first + 1}: expected no more pages, got {got[first].kind.value}", file=out)
    else:
        print(f"  page {first + 1} differs", file=out)
    print(f"  expected ({len(case.expect)}):", file=out)
    for number, want in enumerate(case.expect):
        mark = ">" if number == first else " "
        print(f"  {mark} {_expected_line(case, want)}", file=out)
    print(f"  got ({len(got)}):", file=out)
    for number, page in enumerate(got):
        mark = ">" if number == first else " "
        print(f"  {mark} {_offset(case, page.at):>8}  {render_line(page)}", file=out)


def run_tests(paths: Sequence[Path], out: TextIO) -> int:
    """Check every test file, run every test, report failures; exit code 0 or 1."""
    files = test_files(paths)
    problems: list[Problem] = []
    suites: list[Suite] = []
    for path in files:
        if not path.is_file():
            problems.append(Problem(str(path), 1, 1, "no such file"))
            continue
        try:
            suites.append(load_suite(path))
        except ProblemsError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ProblemsError(problems)
    if not suites:
        raise ProblemsError([Problem(str(p), 1, 1, f"no *{TEST_STEM}.yaml files") for p in paths])
    passed = failed = 0
    for suite in suites:
        for case in suite.cases:
            got = case.pages(suite.settings, suite.rules)
            if len(got) == len(case.expect) and all(
                _matches(case, page, want) for page, want in zip(got, case.expect, strict=True)
            ):
                passed += 1
                continue
            failed += 1
            print(f"FAIL {suite.file}: {case.name}", file=out)
            _report(case, got, out)
            print(file=out)
    counted = f"{len(suites)} test file{'' if len(suites) == 1 else 's'}"
    print(f"{'FAILED' if failed else 'OK'}: {passed} passed, {failed} failed ({counted})", file=out)
    return 1 if failed else 0
