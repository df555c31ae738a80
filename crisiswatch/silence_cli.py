"""`crisiswatch silence`: mute pages for a while (maintenance, a known issue being handled).

Silences live in the deployment's state store, so the running daemon sees them at its next page.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crisiswatch.config import Settings, load_settings, state_dir
from crisiswatch.domain import Silence
from crisiswatch.durations import format_duration, parse_duration
from crisiswatch.rules.loader import load_rules
from crisiswatch.store import STORE_FILE, with_store
from crisiswatch.yamlfile import ProblemsError, did_you_mean


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    silence = commands.add_parser("silence", help="mute pages for a while")
    actions = silence.add_subparsers(dest="silence_command", required=True, metavar="COMMAND")
    add = actions.add_parser("add", help="mute the pages of matching incidents")
    add.add_argument("--config", type=Path, help="the deployment (default: ./var state)")
    add.add_argument("--brand", help="a brand id")
    add.add_argument("--rule", help="a rule id (incidents that rule fired in)")
    add.add_argument(
        "--incident",
        type=_incident,
        help="an incident's id as its page shows it (brand=kestrel@20260303T0215Z), or a group"
        " key (brand=kestrel: every incident of the group)",
    )
    add.add_argument("--for", dest="duration", required=True, help="how long, e.g. 2h")
    add.add_argument("--comment", required=True, help="why, for the next person on call")
    add.add_argument("--by", default=None, help="who (default: your user name)")
    add.set_defaults(handler=_add)
    listing = actions.add_parser("list", help="silences in force (or --all)")
    listing.add_argument("--config", type=Path)
    listing.add_argument("--all", action="store_true", help="include ended silences")
    listing.set_defaults(handler=_list)
    expire = actions.add_parser("expire", help="end a silence now")
    expire.add_argument("id")
    expire.add_argument("--config", type=Path)
    expire.set_defaults(handler=_expire)


MAX_SILENCE = timedelta(days=366)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))  # pages break ids with these


def _incident(text: str) -> str:
    """An incident id or key as typed or pasted from a page (which puts a zero-width space
    after the `@` so that Slack does not read it as a mention)."""
    value = text.translate(_INVISIBLE).strip()
    if "=" not in value.split("@", 1)[0]:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an incident id or key (e.g. brand=kestrel@20260303T0215Z)"
        )
    return value


def _settings(config: Path | None) -> Settings | None:
    return load_settings(config) if config is not None else None


def _store_path(settings: Settings | None) -> Path:
    return state_dir(settings) / STORE_FILE


def _check(args: argparse.Namespace, settings: Settings | None) -> list[str]:
    problems = []
    if not (args.brand or args.rule or args.incident):
        problems.append("say what to silence: --brand, --rule or --incident (or several)")
    if settings is None:
        return problems
    brands = [b.id for b in settings.brands]
    if args.brand and args.brand not in brands:
        problems.append(f"unknown brand {args.brand!r}{did_you_mean(args.brand, brands)}")
    if args.rule:
        try:
            rules = [r.id for r in load_rules(settings.rules, settings)]
        except ProblemsError as exc:  # an editor's bad save must not stop on-call silencing
            print(
                f"crisiswatch silence: warning: --rule {args.rule!r} was not checked: the rule "
                f"files have {len(exc.problems)} problem(s) (`crisiswatch rules check` lists "
                "them; the running daemon keeps its last good rules)",
                file=sys.stderr,
            )
            return problems
        if args.rule not in rules:
            problems.append(f"unknown rule {args.rule!r}{did_you_mean(args.rule, rules)}")
    return problems


def _add(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        print(f"crisiswatch silence: {exc}", file=sys.stderr)
        return 2
    problems = _check(args, settings)
    if not timedelta(0) < duration <= MAX_SILENCE:
        problems.append(f"--for must be longer than 0 and at most {format_duration(MAX_SILENCE)}")
    if problems:
        for problem in problems:
            print(f"crisiswatch silence: {problem}", file=sys.stderr)
        return 2
    now = datetime.now(UTC)
    silence = Silence(
        id=Silence.new_id(),
        starts_at=now,
        ends_at=now + duration,
        created_by=args.by or getpass.getuser(),
        comment=args.comment,
        brand=args.brand,
        rule=args.rule,
        incident=args.incident,
    )
    store = _store_path(settings)
    if settings is None:  # on-call would believe a page muted that the daemon never sees
        print(
            f"crisiswatch silence: warning: without --config nothing was checked, and the "
            f"silence is kept in {store}: the running daemon sees it only if that is its state "
            "store (give --config with the daemon's config)",
            file=sys.stderr,
        )
    asyncio.run(with_store(store, lambda opened: opened.add_silence(silence)))
    print(f"{silence.id}: silenced {silence.describe()} for {format_duration(duration)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    path = _store_path(_settings(args.config))
    found = asyncio.run(with_store(path, lambda store: store.silences(None if args.all else now)))
    if not found:
        print("no silences" + ("" if args.all else " in force"))
    for silence in found:
        state = "in force" if silence.active(now) else "ended"
        print(
            f"{silence.id}  {silence.describe():<32} until {silence.ends_at:%Y-%m-%d %H:%M} UTC"
            f"  ({state})  by {silence.created_by}: {silence.comment}"
        )
    return 0


def _expire(args: argparse.Namespace) -> int:
    path = _store_path(_settings(args.config))
    now = datetime.now(UTC)
    ended = asyncio.run(with_store(path, lambda store: store.expire_silence(args.id, now)))
    if not ended:
        print(f"crisiswatch silence: no silence {args.id} in force", file=sys.stderr)
        return 1
    print(f"{args.id}: ended")
    return 0
