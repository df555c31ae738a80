"""Loading rule files: every problem in every file, each as `file:line:column: message`.

The same check runs for `crisiswatch rules check` and at daemon start-up, so an editor sees
exactly the messages the daemon would refuse the rules with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

from crisiswatch.config import Settings
from crisiswatch.domain import ALL_TOPICS
from crisiswatch.durations import format_duration
from crisiswatch.rules.schema import Rule, RuleFile, Scope
from crisiswatch.yamlfile import (
    Path_,
    Problem,
    ProblemsError,
    YamlDocument,
    did_you_mean,
    load_yaml,
    validate,
)

RULE_SUFFIXES = (".yaml", ".yml")
_NO_RULE_FILES = (
    "no rule files (*.yaml or *.yml) here, nor in any other rules path: with no rules nothing "
    "would page"
)
SOURCE_KINDS = ("x", "reddit", "http", "replay")
"""What the X and Reddit sources put in a mention's `source`, and what HTTP ingest and replay
files give a line that names none (crisiswatch/sources/). A scope may name other sources too:
an ingest or replay line may carry its own feed's name ("trustpilot")."""
_SOURCE_ALIASES = {"twitter": "x", "tweets": "x", "tweet": "x"}  # X's mentions say "x"


def hidden(inside: Sequence[str]) -> bool:
    """Whether a path inside a folder (its parts) is a dotfile or in a dot-folder: an editor's
    lock or swap file (Emacs' `.#crisis.yaml`), version control, never a rule."""
    return any(part.startswith(".") for part in inside)


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files under `paths`: files as given; folders searched for *.yaml, sorted,
    leaving out dotfiles, rule tests (`tests/` folders and `*_test.yaml`) and what they load."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            inside = candidate.relative_to(path).parts
            if not has_rule_suffix(candidate) or "tests" in inside[:-1] or hidden(inside):
                continue
            if not candidate.stem.endswith("_test"):
                found.append(candidate)
    return found


def has_rule_suffix(path: Path) -> bool:
    return path.suffix.lower() in RULE_SUFFIXES  # `CRISIS.YAML` is a rule file too


def load_rules(paths: Sequence[Path], settings: Settings | None = None) -> list[Rule]:
    """Every rule in `paths`, checked whole; raise `ProblemsError` listing every problem.

    With `settings`, rules are also checked against the deployment: their brands and routes
    must exist.
    """
    problems: list[Problem] = []
    rules: list[tuple[Rule, YamlDocument, int]] = []
    documents: list[YamlDocument] = []
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 1, 1, "no such file or folder"))
    found = rule_files([path for path in paths if path.exists()])
    if not found and not problems:
        # refused rather than run with no rules, which would page nothing and say nothing
        # (the middle of a deploy that empties the folder before copying the new files); one
        # empty folder beside others that hold rules is no problem
        problems.extend(Problem(str(path), 1, 1, _NO_RULE_FILES) for path in paths)
    for path in found:
        try:
            doc = load_yaml(path)
            documents.append(doc)
            if not isinstance(doc.data, dict):
                raise ProblemsError([doc.problem((), "a rule file is a mapping with `rules:`")])
            parsed = validate(RuleFile, doc)
        except ProblemsError as exc:
            problems.extend(exc.problems)
            continue
        rules.extend((rule, doc, index) for index, rule in enumerate(parsed.rules))
    problems.extend(_duplicate_ids(documents))
    if settings is not None:
        problems.extend(_deployment_check(rules, settings))
    if problems:
        raise ProblemsError(problems)
    return [rule for rule, _, _ in rules]


def _duplicate_ids(documents: list[YamlDocument]) -> list[Problem]:
    """Ids used twice, across every file that parsed (even one with other problems)."""
    problems = []
    first_seen: dict[str, str] = {}
    for doc in documents:
        listed = doc.data.get("rules") if isinstance(doc.data, dict) else None
        for index, item in enumerate(listed if isinstance(listed, list) else []):
            rule_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(rule_id, str):
                continue
            path = ("rules", index, "id")
            if rule_id in first_seen:
                message = f"duplicate rule id {rule_id!r} ({first_seen[rule_id]})"
                problems.append(doc.problem(path, message))
            else:
                first_seen[rule_id] = f"first at {doc.file}:{doc.where(path)[0]}"
    return problems


def rule_warnings(rules: Sequence[Rule], settings: Settings) -> list[str]:
    """What in valid rules does nothing in this deployment (said by `rules check --config` and
    `doctor`, not refused: an upgrade must not stop a daemon over a setting that is merely
    idle). A `for` no longer than a bucket: a bucket that matches has held for the whole
    bucket, so the rule alerts on the first one, as without `for`."""
    bucket = settings.pipeline.bucket
    return [
        f"rule {rule.id!r}: for: {format_duration(rule.for_)} is no longer than a bucket "
        f"({format_duration(bucket)}), so it changes nothing; use "
        f"{format_duration(2 * bucket)} to need two buckets in a row, or leave it out"
        for rule in rules
        if timedelta(0) < rule.for_ <= bucket
    ]


def _deployment_check(
    rules: list[tuple[Rule, YamlDocument, int]], settings: Settings
) -> list[Problem]:
    """Routes, brands and topics the rules name must exist in the deployment's config, and
    the sources they filter on must be ones mentions come from."""
    problems = []
    for rule, doc, index in rules:
        where = ("rules", index)
        if rule.route not in settings.routes:
            hint = did_you_mean(rule.route, list(settings.routes))
            problems.append(doc.problem((*where, "route"), f"unknown route {rule.route!r}{hint}"))
        problems.extend(_scope_check(rule.scope, settings, doc, (*where, "scope")))
    return problems


def _scope_check(
    scope: Scope, settings: Settings, doc: YamlDocument, where: Path_
) -> list[Problem]:
    """Each brand, topic and source a scope names, against the deployment."""
    problems = []
    brands = {brand.id: brand for brand in settings.brands}
    listed = [] if scope.brands == "all" else scope.brands
    for position, brand_id in enumerate(listed):
        if brand_id not in brands:
            hint = did_you_mean(brand_id, list(brands))
            problems.append(
                doc.problem((*where, "brands", position), f"unknown brand {brand_id!r}{hint}")
            )
    covered = [brands[b] for b in listed if b in brands] if listed else list(brands.values())
    topics = sorted({topic for brand in covered for topic in brand.topics})
    whose = "any brand" if scope.brands == "all" else ", ".join(b.id for b in covered)
    for position, topic in enumerate([] if scope.topics == "all" else scope.topics):
        if covered and topic != ALL_TOPICS and topic not in topics:
            message = (
                f"unknown topic {topic!r}: not a topic of {whose}{did_you_mean(topic, topics)}"
            )
            problems.append(doc.problem((*where, "topics", position), message))
    for position, source in enumerate(scope.sources or ()):
        if wrong := _source_problem(source):
            problems.append(doc.problem((*where, "sources", position), wrong))
    return problems


def _source_problem(source: str) -> str | None:
    """A source name that is a typo of a built-in source's (a feed of its own is fine)."""
    if source in SOURCE_KINDS:
        return None
    if source.lower() in SOURCE_KINDS:
        return f"unknown source {source!r}: sources are lowercase, as in {source.lower()!r}"
    if source.lower() in _SOURCE_ALIASES:
        alias = _SOURCE_ALIASES[source.lower()]
        return f"unknown source {source!r}; X's mentions have source {alias!r}"
    hint = did_you_mean(source, SOURCE_KINDS)
    return f"unknown source {source!r}{hint}" if hint.startswith("; did you mean") else None
