"""How long to wait before trying again: one set of rules for every caller (live sources and
their restarts, the outbox's senders, slack-sdk's rate-limit retries).

- When the service said how long (`Retry-After` as seconds or an HTTP date, else a rate-limit
  reset header), that long, to the second: no jitter, at most `MOST_TOLD` (a date far off is a
  wrong clock, not a reason to stop for days). It still counts as a failure, and the wait is
  never below the back-off's ceiling for the failures in a row, min(cap, base·2ⁿ⁻¹): a reset
  already past by our clock (clock skew) or `Retry-After: 0` waits `base`, then longer at every
  refusal in a row, instead of asking again at once.
- Otherwise exponential back-off with full jitter: after the n-th failure in a row, a wait
  uniform in [0, min(cap, base·2ⁿ⁻¹)], never below `floor`.
- A header that cannot be read counts as not said: back-off applies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

MOST_TOLD = 3600.0  # seconds: the longest wait a service's headers can ask for


def retry_after(headers: Mapping[str, str | list[str]], now: float) -> float | None:
    """Seconds a service asked us to wait, or None when it did not say (or said nonsense).

    `Retry-After` is seconds or an HTTP date; else `x-rate-limit-reset` (X: an epoch time) or
    `x-ratelimit-reset` (Reddit: seconds from now). `now` is the epoch time; header names are
    matched in any case, and a list of values (as slack-sdk gives them) counts by its first.
    """
    lowered = {key.lower(): value for key, value in headers.items()}

    def value(name: str) -> str | None:
        found = lowered.get(name)
        if isinstance(found, list):
            found = found[0] if found else None
        return None if found is None else str(found).strip()

    told = _seconds(value("retry-after"))
    if told is None and (date := value("retry-after")):
        try:
            told = parsedate_to_datetime(date).timestamp() - now
        except (ValueError, TypeError, OverflowError):
            told = None
    if told is None and (reset_at := _seconds(value("x-rate-limit-reset"))) is not None:
        told = reset_at - now
    if told is None:
        told = _seconds(value("x-ratelimit-reset"))
    return None if told is None else min(max(0.0, told), MOST_TOLD)


def _seconds(text: str | None) -> float | None:
    """A non-negative finite number of seconds, else None."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Backoff:
    """Waits between the attempts of one caller: counts the failures in a row, `reset()` on a
    success."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 300.0,
        floor: float = 0.5,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.cap = cap
        self.floor = floor
        self.rand = rand
        self.failures = 0

    def next(self, told: float | None = None) -> float:
        """The wait before the next attempt after a failure. `told` is the service's wait (as
        `retry_after` read it): kept to the second when it is longer than the back-off's
        ceiling, else the ceiling, so a wait of 0 never makes a tight loop of refusals."""
        self.failures += 1
        return self.wait(self.failures, told)

    def wait(self, failures: int, told: float | None = None) -> float:
        """The wait after `failures` failures in a row, by the rules of `next`."""
        if told is not None:
            return max(told, self._ceiling(failures))
        return max(self.floor, self._ceiling(failures) * self.rand())

    def _ceiling(self, failures: int) -> float:
        # the exponent stops growing once the cap is passed (2.0 ** 1024 overflows)
        return min(self.cap, self.base * 2.0 ** min(max(0, failures - 1), 64))

    def reset(self) -> None:
        self.failures = 0
