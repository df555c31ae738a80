"""sd_notify without a dependency: datagrams to `$NOTIFY_SOCKET` telling systemd how we are.

`READY=1` once config, rules, state and sources are up; `WATCHDOG=1` from the event loop's own
heartbeat (a wedged loop stops sending it and systemd restarts the service); `STATUS=` a one-line
summary; `RELOADING=1` / `STOPPING=1` around reloads and stops. Outside systemd (no socket) every
call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class SdNotify:
    """Sends sd_notify messages; silent when not started by systemd with `Type=notify`."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False when it could not be sent."""
        if not self.address:
            return False
        target = self.address
        if target.startswith("@"):  # an abstract socket
            target = "\0" + target[1:]
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(target)
                sock.sendall(message)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        # systemd ≥ 253 wants the monotonic time with RELOADING=1 (Type=notify-reload)
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")


def watchdog_interval() -> float | None:
    """How often to ping the watchdog: half of `$WATCHDOG_USEC`, if it is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


async def heartbeat(notifier: SdNotify, every: float, healthy: Callable[[], bool]) -> None:
    """Ping the watchdog from the event loop itself while `healthy()`: if the loop is wedged
    (a blocking call, a busy loop), the pings stop and systemd restarts the service."""
    while True:
        if healthy():
            notifier.send("WATCHDOG=1")
        await asyncio.sleep(every)
