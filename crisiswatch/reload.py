"""A deployment (config + rules) loaded and checked whole, and how to tell that it changed.

The daemon reloads on SIGHUP and when a watched file changes; a deployment that fails its check
never replaces the running one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crisiswatch.config import Settings, load_settings
from crisiswatch.rules.loader import load_rules, rule_files
from crisiswatch.rules.schema import Rule
from crisiswatch.yamlfile import ProblemsError

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class Deployment:
    settings: Settings
    rules: list[Rule]


def load_deployment(config: Path) -> Deployment:
    """The config and its rules, checked together; raises `ProblemsError` with every problem."""
    settings = load_settings(config)
    return Deployment(settings, load_rules(settings.rules, settings))


RESTART_ONLY = (
    "state_dir",
    "sources",
    "pipeline.bucket",
    "pipeline.allowed_lateness",
    "pipeline.queue_size",
    "pipeline.dedupe_capacity",
    "pipeline.per_author_cap",
    "pipeline.samples_per_bucket",
    "incidents.group_by",
    "notify.console",
    "notify.slack.enabled",
    "notify.slack.interactivity",
    "notify.slack.http_listen",
    "notify.slack.base_url",
    "ops",
)
"""Settings read once at start-up (listeners, state, the shape of the pipeline); README's
"Reloading" lists them. Everything else applies at the next reload."""


def needs_restart(running: Settings, loaded: Settings) -> list[str]:
    """The settings `loaded` changes that only a restart applies."""
    changed = [path for path in RESTART_ONLY if _at(running, path) != _at(loaded, path)]
    if running.brands != loaded.brands and (running.sources.reddit or running.sources.x):
        changed.append("brands (the searches of live sources)")
    return changed


def _at(settings: Settings, path: str) -> object:
    value: object = settings
    for name in path.split("."):
        value = getattr(value, name)
    return value


class Watcher:
    """Notices changes to a config file and the rule files it names (new, edited or removed)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self._read: tuple[int, int] | None = None  # the config's (mtime, size) when last read
        self._folders: list[Path] = []  # the rule folders it named then

    def _rule_folders(self) -> list[Path]:
        """The config's rule folders, read again only when the config file changed."""
        try:
            stat = self.config.stat()
            mark: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            mark = None
        if mark is None or mark != self._read:
            try:
                self._folders = load_settings(self.config).rules
            except ProblemsError:  # a broken config still has a fingerprint: its own stat
                self._folders = []
            self._read = mark
        return self._folders

    def fingerprint(self) -> Fingerprint:
        paths = [self.config, *rule_files(self._rule_folders())]
        marks = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            marks.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(sorted(marks))
