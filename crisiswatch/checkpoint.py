"""Checkpoints: the daemon's learned state, saved atomically and restored at start.

What is saved: every series' detectors (the learned baselines), the open buckets, the open
incidents and how long rules have held, the recent history behind the charts, and what the
sentiment model learned from feedback. The file is written whole to a temporary name, flushed to
disk and renamed over the old one, so a crash leaves the old checkpoint or the new one, never a
torn file. A checkpoint that cannot be read (corrupt, or from an incompatible version) is moved
aside with a loud warning and the daemon starts fresh: it never refuses to start over it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

FORMAT = 4  # bump when what is saved changes shape
MAGIC = b"crisiswatch-checkpoint\n"
FILE_NAME = "checkpoint.bin"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (a full disk, an unwritable directory)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    saved_at: datetime
    pipeline: dict[str, Any]  # `Pipeline.snapshot()`
    sentiment: bytes | None  # `SentimentModel.state()`


def save(directory: Path, checkpoint: Checkpoint) -> int:
    """Encode and write a checkpoint; the size written."""
    return write(directory, encode(checkpoint))


def encode(checkpoint: Checkpoint) -> bytes:
    """The file's bytes (do this where the state cannot change meanwhile)."""
    return MAGIC + pickle.dumps((FORMAT, checkpoint), protocol=pickle.HIGHEST_PROTOCOL)


def write(directory: Path, payload: bytes) -> int:
    """Write atomically (temp file, fsync, rename, fsync the folder); the size written."""
    target = directory / FILE_NAME
    temporary = directory / f".{FILE_NAME}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write the checkpoint {target}: {exc.strerror}") from exc
    return len(payload)


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
        if version != FORMAT or not isinstance(checkpoint, Checkpoint):
            raise ValueError(f"format {version}, this version reads {FORMAT}")
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
