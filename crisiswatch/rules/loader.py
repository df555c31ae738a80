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
            if candidate.suffix not in RULE_SUFFIXES or "tests" in inside[:-1] or hidden(inside):
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
    documents: list[YamlDocument] = []
    for path in paths:
        if not path.exists():
            problems.append(Problem(str(path), 1, 1, "no such file or folder"))
    for path in rule_files(paths):
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


def _deployment_check(
    rules: list[tuple[Rule, YamlDocument, int]], settings: Settings
) -> list[Problem]:
    """Routes and brands the rules name must exist in the deployment's config."""
    problems = []
    known = [b.id for b in settings.brands]
    for rule, doc, index in rules:
        where = ("rules", index)
        if rule.route not in settings.routes:
            hint = did_you_mean(rule.route, list(settings.routes))
            problems.append(doc.problem((*where, "route"), f"unknown route {rule.route!r}{hint}"))
        for position, brand in enumerate([] if rule.scope.brands == "all" else rule.scope.brands):
            if brand not in known:
                path = (*where, "scope", "brands", position)
                problems.append(
                    doc.problem(path, f"unknown brand {brand!r}{did_you_mean(brand, known)}")
                )
    return problems
