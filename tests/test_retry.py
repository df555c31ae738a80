"""The one set of retry rules: reading a service's wait from its headers, and back-off."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from crisiswatch.retry import MOST_TOLD, Backoff, retry_after

NOW = 1_700_000_000.0


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("headers", "wait"),
        [
            ({"Retry-After": "7"}, 7.0),
            ({"retry-after": "1.5"}, 1.5),
            ({"RETRY-AFTER": ["5"]}, 5.0),  # slack-sdk's retry handler: lists of values
            ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
            ({"Retry-After": formatdate(NOW - 30, usegmt=True)}, 0.0),  # a date gone by
            ({"Retry-After": "86400"}, MOST_TOLD),  # a day: capped
            ({"x-rate-limit-reset": str(int(NOW) + 42)}, 42.0),  # X: an epoch time
            ({"x-ratelimit-reset": "42"}, 42.0),  # Reddit: seconds from now
            ({"Retry-After": "soon", "x-ratelimit-reset": "9"}, 9.0),  # garbage: next header
        ],
    )
    def test_what_the_service_said(self, headers: dict[str, str], wait: float) -> None:
        """Seconds or an HTTP date, in any header case; rate-limit resets when it said no
        Retry-After; never below 0 nor above MOST_TOLD."""
        assert retry_after(headers, NOW) == pytest.approx(wait)

    @pytest.mark.parametrize(
        "value", ["soon", "", "-3", "nan", "inf", "Mon, 99 Foo 2026 00:00:00 GMT", []]
    )
    def test_garbage_is_not_a_wait(self, value: str | list[str]) -> None:
        """A value that cannot be read is as if nothing were said: the caller backs off."""
        assert retry_after({"Retry-After": value}, NOW) is None
        assert retry_after({}, NOW) is None


class TestBackoff:
    def test_doubles_up_to_the_cap_with_full_jitter_and_a_floor(self) -> None:
        """The n-th failure in a row waits up to base·2ⁿ⁻¹, capped; the jitter scales it from
        0 and the floor keeps a tight loop from hammering the service."""
        top = Backoff(base=1.0, cap=10.0, rand=lambda: 1.0)
        assert [top.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
        half = Backoff(base=1.0, cap=10.0, rand=lambda: 0.5)
        assert [half.next() for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
        assert Backoff(floor=0.5, rand=lambda: 0.0).next() == 0.5

    def test_failing_for_ever_stays_at_the_cap(self) -> None:
        """Thousands of failures in a row (a store full for days) wait the cap, no more: the
        doubling had overflowed a float at the 1,025th and killed its caller."""
        backoff = Backoff(base=1.0, cap=300.0, rand=lambda: 1.0)
        assert [backoff.next() for _ in range(5_000)][-3:] == [300.0] * 3

    def test_a_wait_the_service_asked_for_is_kept_and_counts(self) -> None:
        """Retry-After is waited to the second, without jitter, and counts as a failure in a
        row; a success starts it over."""
        backoff = Backoff(rand=lambda: 1.0)
        assert backoff.next() == 1.0
        assert backoff.next(told=30.0) == 30.0
        assert backoff.next() == 4.0
        backoff.reset()
        assert backoff.next() == 1.0

    def test_a_wait_of_nothing_is_floored_and_grows(self) -> None:
        """A reset already past by our clock, or `Retry-After: 0`, waits the back-off's
        ceiling, doubling at each refusal in a row: never a tight loop of requests."""
        backoff = Backoff(base=1.0, cap=10.0, rand=lambda: 0.0)
        assert [backoff.next(told=0.0) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
        assert backoff.next(told=30.0) == 30.0  # a longer wait than the back-off is kept
