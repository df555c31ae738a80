"""Recent history per series: a bounded ring buffer of the last days' signals, for charts.

Each series keeps four compact arrays (count, negative count, expected, alert level)
with one slot per bucket over `days` days; a slot is overwritten when its bucket comes round
again, so memory stays fixed however long the daemon runs. At 200 brands that is 44 MB, most of
a checkpoint: it pickles as four contiguous buffers, and a checkpoint writes it from a worker
thread while the event loop goes on recording (`frozen`: copy on write).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crisiswatch.domain import SeriesKey, Signal, Totals

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = ("count", "negative", "expected", "upper")  # a ring's arrays, in pickling order
# pickled: bucket seconds, ring size, the series, each one's newest index, then the columns
_State = tuple[int, int, tuple[SeriesKey, ...], tuple[int, ...], bytes, bytes, bytes, bytes]


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of one series' history, one value per bucket, oldest first (NaN: unknown)."""

    start: datetime
    bucket: timedelta
    count: tuple[float, ...]
    negative: tuple[float, ...]
    expected: tuple[float, ...]
    upper: tuple[float, ...]

    @property
    def known(self) -> int:
        return sum(not math.isnan(c) for c in self.count)


class _Ring:
    __slots__ = ("count", "expected", "negative", "newest", "upper")

    def __init__(self, size: int) -> None:
        unknown = array("f", [math.nan])
        self.count = unknown * size  # repeating an array is a block copy, not a loop
        self.negative = unknown * size
        self.expected = unknown * size
        self.upper = unknown * size
        self.newest = -1  # bucket index of the newest slot written (-1: none yet)

    def copy(self) -> _Ring:
        twin = _Ring.__new__(_Ring)
        for column in _COLUMNS:
            setattr(twin, column, getattr(self, column)[:])  # a block copy
        twin.newest = self.newest
        return twin


class SeriesHistory:
    """The last `days` of every series' signals, written by the pipeline, read by notifiers."""

    def __init__(self, bucket_seconds: int, days: int = 8) -> None:
        self.bucket_seconds = bucket_seconds
        self.size = days * 86_400 // bucket_seconds
        self._rings: dict[SeriesKey, _Ring] = {}
        self._shared: set[SeriesKey] = set()  # rings a frozen copy holds: copied before a write

    def __getstate__(self) -> _State:
        """Compact: each column of every ring in one buffer, four block copies that a worker
        thread writes straight to the file. Pickled one by one, the 4,800 arrays of 200 brands
        kept the event loop waiting for the thread (a checkpoint blocked it 110 ms, not 67)."""
        rings = self._rings.values()
        count, negative, expected, upper = (
            b"".join(getattr(ring, column) for ring in rings) for column in _COLUMNS
        )
        newest = tuple(ring.newest for ring in rings)
        series = tuple(self._rings)
        return (self.bucket_seconds, self.size, series, newest, count, negative, expected, upper)

    def __setstate__(self, state: _State | dict[str, object]) -> None:
        """From `__getstate__`, or from a checkpoint saved before it (its attributes, the rings
        pickled one by one)."""
        self._shared = set()
        if isinstance(state, dict):
            self.__dict__.update(state)
            return
        self.bucket_seconds, self.size, keys, newest, *columns = state
        self._rings = {}
        width = self.size * array("f").itemsize
        views = [memoryview(column) for column in columns]
        for n, (key, last) in enumerate(zip(keys, newest, strict=True)):
            ring = self._rings[key] = _Ring.__new__(_Ring)
            for column, view in zip(_COLUMNS, views, strict=True):
                values = array("f")
                values.frombytes(view[n * width : (n + 1) * width])
                setattr(ring, column, values)
            ring.newest = last

    @contextmanager
    def frozen(self) -> Iterator[SeriesHistory]:
        """A copy as of now that nothing changes while the block runs, for a worker thread to
        pickle: it shares the rings, and `record` copies a shared ring before writing to it (a
        checkpoint's copy is then no block of the event loop, which records meanwhile)."""
        copy = SeriesHistory.__new__(SeriesHistory)
        copy.bucket_seconds, copy.size = self.bucket_seconds, self.size
        copy._rings, copy._shared = dict(self._rings), set()
        self._shared = set(self._rings)
        try:
            yield copy
        finally:
            self._shared = set()

    def prepare(self, series: Iterable[SeriesKey]) -> None:
        """Hold the rings of exactly these series: new ones allocated now (at start or a reload,
        not at their first bucket's close, so memory does not step up mid-stream), those no
        longer configured let go."""
        wanted = set(series)
        for gone in self._rings.keys() - wanted:
            del self._rings[gone]
        for key in wanted:
            if key not in self._rings:
                self._rings[key] = _Ring(self.size)

    def _index(self, moment: datetime) -> int:
        return int((moment - _EPOCH).total_seconds()) // self.bucket_seconds

    def record(self, signal: Signal) -> None:
        """Keep one closed bucket's numbers; older buckets of the series must come first."""
        index = self._index(signal.bucket.start)
        ring = self._rings.get(signal.series)
        if ring is None:
            ring = self._rings[signal.series] = _Ring(self.size)
        elif signal.series in self._shared:
            self._shared.discard(signal.series)
            ring = self._rings[signal.series] = ring.copy()
        if ring.newest < 0:
            ring.newest = index - 1  # a new ring is all unknown: no gap to write
        if index <= ring.newest - self.size:
            return  # older than the ring holds
        for gap in range(max(ring.newest + 1, index - self.size + 1), index):
            self._write(ring, gap, math.nan, math.nan, math.nan, math.nan)
        bucket = signal.bucket
        self._write(
            ring,
            index,
            bucket.count,
            bucket.negative_count,
            signal.volume_expected,
            signal.volume_upper,
        )
        ring.newest = max(ring.newest, index)

    def _write(
        self, ring: _Ring, index: int, count: float, neg: float, exp: float, up: float
    ) -> None:
        slot = index % self.size
        ring.count[slot], ring.negative[slot] = count, neg
        ring.expected[slot], ring.upper[slot] = exp, up

    def totals(self, series: SeriesKey, start: datetime, end: datetime) -> Totals | None:
        """The mentions and negative mentions of `series` in its known buckets that start in
        [start, end), from the first of them (the ring may no longer hold the oldest); None if
        none is known."""
        window = self.window(series, end, end - start)
        known = [n for n, count in enumerate(window.count) if not math.isnan(count)]
        if not known:
            return None
        return Totals(
            since=window.start + known[0] * window.bucket,
            count=round(sum(window.count[n] for n in known)),
            negative=round(sum(window.negative[n] for n in known)),
        )

    def window(self, series: SeriesKey, end: datetime, span: timedelta) -> Window:
        """The buckets of `series` that start in [end - span, end); NaN where not known."""
        first = self._index(end - span)
        last = self._index(end)  # exclusive
        ring = self._rings.get(series)
        columns: list[list[float]] = [[], [], [], []]
        if ring is not None:
            arrays = (ring.count, ring.negative, ring.expected, ring.upper)
            for index in range(first, last):
                held = ring.newest - self.size < index <= ring.newest
                for column, values in zip(columns, arrays, strict=True):
                    column.append(float(values[index % self.size]) if held else math.nan)
        else:
            columns = [[math.nan] * (last - first) for _ in range(4)]
        step = timedelta(seconds=self.bucket_seconds)
        return Window(
            _EPOCH + first * step,
            step,
            tuple(columns[0]),
            tuple(columns[1]),
            tuple(columns[2]),
            tuple(columns[3]),
        )
