"""Pages as JSON and back, so that the outbox can keep them across a restart.

Decoding follows the dataclasses' type hints, so a field added to the domain needs no change
here; a field missing from an older row takes its default.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson

from crisiswatch.domain import Page


def dump_page(page: Page) -> bytes:
    return orjson.dumps(page, default=_plain)


def _plain(value: object) -> list[object]:
    """What orjson does not know: a sequence of the domain's own (a bucket's `Ranked` counts)
    is written as the list it holds."""
    if isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def load_page(raw: bytes | str) -> Page:
    page: Page = _decode(Page, orjson.loads(raw))
    return page


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else _decode(options[0], value)
    if origin is Sequence:  # read back as a tuple
        return tuple(_decode(typing.get_args(kind)[0], item) for item in value)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        return tuple(_decode(a, item) for a, item in zip(args, value, strict=True))
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = _hints(kind)
        return kind(
            **{
                f.name: _decode(hints[f.name], value[f.name])
                for f in dataclasses.fields(kind)
                if f.name in value
            }
        )
    if kind is datetime:
        return datetime.fromisoformat(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if kind is float:
        return float(value)
    return value
