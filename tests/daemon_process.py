"""The real daemon in a subprocess, for tests of signals, reloads and systemd notification."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start(config: Path, log: Path | None = None, **env: str) -> subprocess.Popen[bytes]:
    """`crisiswatch run --config CONFIG` with info logs on stderr (a pipe to read, or the file
    `log` for a test that does not read them: a full pipe would block the daemon)."""
    command = [sys.executable, "-m", "crisiswatch", "--log-level", "info", "run", "--config"]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    if log is None:
        return subprocess.Popen(
            [*command, str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
    with log.open("ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*command, str(config)], stdout=subprocess.DEVNULL, stderr=handle, env=environment
        )


def wait_for(process: subprocess.Popen[bytes], event: bytes) -> bytes:
    """Read the log until a line with `event`; that line."""
    assert process.stderr is not None
    for line in process.stderr:
        if event in line:
            return line
    raise AssertionError(f"{event!r} never logged")


def reap(process: subprocess.Popen[bytes]) -> None:
    """Kill the daemon if it still runs and wait for it, its pipes closed: a test that fails
    midway must not leave it running (its `Popen` would warn in a later test)."""
    process.kill()
    process.communicate(timeout=30)
