"""Durations as editors write them: `30s`, `10m`, `2h`, `1d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_PART = re.compile(r"(\d{1,6})([smhdw])")
_WHOLE = re.compile(r"(?:\d{1,6}[smhdw]){1,5}")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Read `10m`, `2h`, `1h30m` or `0`; raise ValueError with a readable message otherwise."""
    value = text.strip().lower()
    if value == "0":
        return timedelta(0)
    if len(value) > 40 or not _WHOLE.fullmatch(value):
        raise ValueError(f"{text!r} is not a duration; write it like 30s, 10m, 2h, 1d or 1h30m")
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    return timedelta(seconds=seconds)


@lru_cache(maxsize=64)  # a few widths, spelled in every alert's summary at each close
def format_duration(delta: timedelta) -> str:
    """The shortest editor-style spelling of a duration: `1h30m`, `5m`, `0s`."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
