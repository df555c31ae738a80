"""Checkpoints: the daemon's learned state, saved atomically and restored at start.

What is saved: every series' detectors (the learned baselines), the open buckets, the open
incidents and how long rules have held, the recent history behind the charts, and what the
sentiment model learned from feedback. The file is written whole to a temporary name, flushed to
disk and renamed over the old one, so a crash leaves the old checkpoint or the new one, never a
torn file. The daemon pickles on its event loop only what the loop goes on changing (`Snapshot`);
the rest, the chart history (44 MB of 49 at 200 brands), is pickled straight to the file by a
worker thread. A checkpoint that cannot be read (corrupt, or from an incompatible version) is moved
aside with a loud warning and the daemon starts fresh: it never refuses to start over it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from crisiswatch.config import make_state_dir

log = structlog.get_logger(__name__)

FORMAT = 5  # bump when what is saved changes shape (5: the chart history's compact columns)
READS = (4, 5)  # the formats this version restores (a 4's history loads through __setstate__)
MAGIC = b"crisiswatch-checkpoint\n"
FILE_NAME = "checkpoint.bin"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a full disk, an unwritable directory)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    saved_at: datetime
    pipeline: dict[str, Any]  # `Pipeline.snapshot()`
    sentiment: bytes | None  # `SentimentModel.state()`


class Snapshot(dict[str, Any]):
    """A pipeline snapshot that a worker thread can pickle while the event loop goes on: the
    parts the loop changes are pickled here and now, those in `still` (copies nothing changes
    meanwhile) by the thread. It unpickles as the plain dict of every part, through builtins
    only (`dict`, `pickle.loads`), so the file reads as before."""

    def __init__(self, parts: dict[str, Any], still: dict[str, Any]) -> None:
        super().__init__(still)
        moving = {name: part for name, part in parts.items() if name not in still}
        self.moving = _Pickled(moving)  # one pickle: the parts' shared objects stay shared

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self.moving,), None, None, iter(self.items()))


class _Pickled:
    """A value pickled now, which unpickles as the value."""

    __slots__ = ("data",)

    def __init__(self, value: object) -> None:
        self.data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Callable[[bytes], Any], tuple[bytes]]:
        return (pickle.loads, (self.data,))


def save(directory: Path, checkpoint: Checkpoint) -> int:
    """Write atomically (temp file, fsync, rename, fsync the folder); the size written. The
    pickle goes straight to the file, never whole in memory; nothing in `checkpoint` may change
    meanwhile (see `Snapshot`)."""
    target = directory / FILE_NAME
    temporary = directory / f".{FILE_NAME}.tmp"
    try:
        make_state_dir(directory)
        # owner only, as the folder (a checkpoint others could write would run their code),
        # also when a crash left a temporary file of other permissions behind
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(MAGIC)
            pickle.dump((FORMAT, checkpoint), handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(temporary, target)
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as exc:  # no half-written temporary file left behind
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CheckpointError(f"cannot write the checkpoint {target}: {exc.strerror}") from exc
        raise
    return size


def load(directory: Path) -> Checkpoint | None:
    """The saved checkpoint, or None when there is none or it had to be moved aside."""
    target = directory / FILE_NAME
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("checkpoint.unreadable", file=str(target), error=exc.strerror)
        return None
    try:
        if not data.startswith(MAGIC):
            raise ValueError("not a crisiswatch checkpoint")
        version, checkpoint = pickle.loads(data[len(MAGIC) :])  # our own file, never user input
        if version not in READS or not isinstance(checkpoint, Checkpoint):
            raise ValueError(
                f"format {version}, this version reads {' and '.join(map(str, READS))}"
            )
    except Exception as exc:  # corrupt or incompatible: keep it for a post-mortem, start fresh
        aside = target.with_name(f"{FILE_NAME}.bad-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        target.replace(aside)
        log.error(
            "checkpoint.moved_aside",
            file=str(aside),
            reason=str(exc) or type(exc).__name__,
            effect="starting without learned baselines",
        )
        return None
    return checkpoint
