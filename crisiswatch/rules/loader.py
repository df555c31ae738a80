"""Loading rule files: every problem in every file, each as `file:line:column: message`.

The same check runs for `crisiswatch rules check` and at daemon start-up, so an editor sees
exactly the messages the daemon would refuse the rules with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from crisiswatch.config import Settings
from crisiswatch.rules.schema import Rule, RuleFile
from crisiswatch.yamlfile import (
    Problem,
    ProblemsError,
    YamlDocument,
    did_you_mean,
    load_yaml,
    validate,
)

RULE_SUFFIXES = (".yaml", ".yml")


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """The rule files under `paths`: files as given; folders searched for *.yaml, sorted,
    leaving out rule tests (`tests/` folders and `*_test.yaml`) and what they load."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            inside = candidate.relative_to(path).parts
            if candidate.suffix not in RULE_SUFFIXES or "tests" in inside[:-1]:
                continue
            if not candidate.stem.endswith("_test"):
                found.append(candidate)
    return found


def load_rules(paths: Sequence[Path], settings: Settings | None = None) -> list[Rule]:
    """Every rule in `paths`, checked whole; raise `ProblemsError` listing every problem.

    With `settings`, rules are also checked against the deployment: their brands and routes
    must exist.
    """
    problems: list[Problem] = []
    rules: list[tuple[Rule, YamlDocument, int]] = []
    files = rule_files(paths)
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 1, 1, "no such file or folder"))
    for path in files:
        try:
            doc = load_yaml(path)
            if not isinstance(doc.data, dict):
                raise ProblemsError([doc.problem((), "a rule file is a mapping with `rules:`")])
            parsed = validate(RuleFile, doc)
        except ProblemsError as exc:
            problems.extend(exc.problems)
            continue
        rules.extend((rule, doc, index) for index, rule in enumerate(parsed.rules))
    problems.extend(_cross_check(rules, settings))
    if problems:
        raise ProblemsError(problems)
    return [rule for rule, _, _ in rules]


def _cross_check(
    rules: list[tuple[Rule, YamlDocument, int]], settings: Settings | None
) -> list[Problem]:
    problems = []
    first_seen: dict[str, str] = {}
    for rule, doc, index in rules:
        where = ("rules", index)
        line, _ = doc.where((*where, "id"))
        if rule.id in first_seen:
            problems.append(
                doc.problem(
                    (*where, "id"), f"duplicate rule id {rule.id!r} ({first_seen[rule.id]})"
                )
            )
        else:
            first_seen[rule.id] = f"first at {doc.file}:{line}"
        if settings is None:
            continue
        if rule.route not in settings.routes:
            hint = did_you_mean(rule.route, list(settings.routes))
            problems.append(doc.problem((*where, "route"), f"unknown route {rule.route!r}{hint}"))
        if rule.scope.brands != "all":
            known = [b.id for b in settings.brands]
            for position, brand in enumerate(rule.scope.brands):
                if brand not in known:
                    path = (*where, "scope", "brands", position)
                    problems.append(
                        doc.problem(path, f"unknown brand {brand!r}{did_you_mean(brand, known)}")
                    )
    return problems
