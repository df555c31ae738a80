"""Secrets never reach a log line: known secret values and token shapes are masked everywhere.

`config.secret()` registers every secret it hands out; the log pipeline (ours and the
libraries') masks those values wherever they appear, plus anything shaped like a Slack token or
a bearer credential, plus the values of keys named like secrets.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

MASK = "[redacted]"
_KNOWN: set[str] = set()
_SHAPES = re.compile(
    r"xox[abeprs]-[A-Za-z0-9-]{8,}"  # Slack bot/user/app tokens
    r"|xapp-[A-Za-z0-9-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/%=-]{8,}"  # an Authorization header's credential
)
_SECRET_KEY = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key)")


def remember(value: str) -> None:
    """Mask this value in every log line from now on (short values would mask too much)."""
    if len(value) >= 8:
        _KNOWN.add(value)


def redact_text(text: str) -> str:
    for value in _KNOWN:
        if value in text:
            text = text.replace(value, MASK)
    return _SHAPES.sub(MASK, text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: MASK if _SECRET_KEY.search(str(k)) else _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clean(v) for v in value)
    return value


def redact_event(
    logger: object, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: mask secrets in every field of the event."""
    for key in list(event):
        event[key] = MASK if _SECRET_KEY.search(key) else _clean(event[key])
    return event
