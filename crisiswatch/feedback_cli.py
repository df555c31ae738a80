"""`crisiswatch feedback`: teach the running daemon's sentiment model from labelled texts.

Labels go into the deployment's state store; the daemon learns them within seconds (or at its
next start) and keeps what it learned in its checkpoints. Use it for complaints the model
missed ("this is a complaint") and for posts it wrongly called negative.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

import orjson

from crisiswatch.config import load_settings, state_dir
from crisiswatch.enrich.sentiment import LABELS
from crisiswatch.mentions import MAX_TEXT, TOO_LONG, numbered_lines
from crisiswatch.store import STORE_FILE, with_store


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    feedback = commands.add_parser("feedback", help="teach the sentiment model from labels")
    feedback.add_argument("--config", type=Path, help="the deployment (default: ./var state)")
    feedback.add_argument("--text", help="one post's text")
    feedback.add_argument("--label", choices=LABELS, help="what it really is")
    feedback.add_argument(
        "--file", type=Path, help='JSON lines {"text": ..., "label": ...} (- for stdin)'
    )
    feedback.set_defaults(handler=_feedback)


def _feedback(args: argparse.Namespace) -> int:
    items: list[tuple[str, str]] = []
    problems: list[str] = []
    if args.text is not None or args.label is not None:
        if args.text is None or args.label is None:
            problems.append("--text and --label go together")
        else:
            _add(items, problems, "--text", (args.text, args.label))
    if args.file is not None:
        try:
            handle = sys.stdin.buffer if str(args.file) == "-" else args.file.open("rb")
        except OSError as exc:
            print(f"crisiswatch feedback: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        with handle:
            for number, line in numbered_lines(handle):
                if line is None:
                    problems.append(f"line {number}: {TOO_LONG}")
                elif line.strip():
                    item = _item(line)
                    if isinstance(item, str):
                        problems.append(f"line {number}: {item}")
                    else:
                        _add(items, problems, f"line {number}", item)
    if not items and not problems:
        problems.append("give --text and --label, or --file")
    for problem in problems:
        print(f"crisiswatch feedback: {problem}", file=sys.stderr)
    if problems:
        return 1
    settings = load_settings(args.config) if args.config else None
    user = getpass.getuser()
    count = asyncio.run(
        with_store(state_dir(settings) / STORE_FILE, lambda store: store.add_feedback(items, user))
    )
    print(f"queued {count} labelled text(s) for the sentiment model")
    return 0


def _add(
    items: list[tuple[str, str]], problems: list[str], where: str, item: tuple[str, str]
) -> None:
    """Queue a labelled text, or say why it cannot be learned: empty, or not Unicode (a lone
    surrogate is what Python makes of arguments that are not UTF-8 under another locale). A
    text over a post's cap is cut to it, as the daemon cuts posts, with a note."""
    text, label = item
    if not text.strip():
        problems.append(f"{where}: the text is empty")
    elif not _encodable(text):
        problems.append(f"{where}: the text is not valid UTF-8 (is the terminal's encoding UTF-8?)")
    else:
        if len(text) > MAX_TEXT:
            print(
                f"crisiswatch feedback: {where}: the text is cut to its first {MAX_TEXT:,} "
                "characters, as the daemon cuts posts",
                file=sys.stderr,
            )
        items.append((text[:MAX_TEXT], label))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _item(line: bytes) -> tuple[str, str] | str:
    """A (text, label) pair, or why the line is not one."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "not valid JSON"
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return "expected an object with a string 'text'"
    if obj.get("label") not in LABELS:
        return f"'label' must be one of {', '.join(LABELS)}"
    return obj["text"], obj["label"]
