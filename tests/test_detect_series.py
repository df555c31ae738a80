"""detect-series: output shape and clear errors on bad input."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from crisiswatch.detect.series import bucket_seconds, detect_series


def run(text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = detect_series(io.StringIO(text), out, err)
    return code, out.getvalue(), err.getvalue()


def series_csv(values: list[int]) -> str:
    start = datetime(2015, 3, 2, 0, 0, 53)
    lines = ["timestamp,value"]
    lines += [
        f"{start + i * timedelta(minutes=5):%Y-%m-%d %H:%M:%S},{v}" for i, v in enumerate(values)
    ]
    return "\n".join(lines) + "\n"


class TestOutput:
    def test_one_row_per_input_row(self) -> None:
        """Every input row comes back with a score in [0, 1] and a 0/1 alert."""
        values = [10] * 300 + [400] * 12 + [10] * 100
        code, out, err = run(series_csv(values))
        assert code == 0 and err == ""
        lines = out.splitlines()
        assert lines[0] == "timestamp,value,anomaly_score,alert"
        assert len(lines) == len(values) + 1
        fields = [line.split(",") for line in lines[1:]]
        assert all(0.0 <= float(f[2]) <= 1.0 and f[3] in {"0", "1"} for f in fields)
        assert [i for i, f in enumerate(fields) if f[3] == "1"] == [301]  # its second bucket

    def test_bucket_size_is_median_step(self) -> None:
        """A missing bucket does not change the inferred step."""
        t = datetime(2015, 3, 2, tzinfo=UTC)
        stamps = [t, t + timedelta(minutes=5), t + timedelta(minutes=15), t + timedelta(minutes=20)]
        assert bucket_seconds(stamps) == 300


class TestBadInput:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", "header"),
            ("timestamp,value\n", "no rows"),
            ("time,count\n2015-03-02 00:00:00,1\n", "header"),
            ("timestamp,value\nyesterday,3\n", "line 2"),
            ("timestamp,value\n2015-03-02 00:05:00,1\n2015-03-02 00:00:00,2\n", "line 3"),
            ("timestamp,value\n2015-03-02 00:05:00,1\n2015-03-02 00:05:00,2\n", "not after"),
        ],
    )
    def test_clear_error(self, text: str, message: str) -> None:
        """Structural problems stop with exit code 2 and a one-line reason."""
        code, out, err = run(text)
        assert code == 2 and out == ""
        assert message in err and "Traceback" not in err

    def test_bad_values_are_counted_skips(self) -> None:
        """Missing, non-numeric and negative values are skipped and counted."""
        text = series_csv([3, 4, 5, 6]).replace(",4\n", ",\n").replace(",5\n", ",abc\n")
        text = text.replace(",6\n", ",-2\n")
        code, out, err = run(text)
        assert code == 0
        assert "skipped 3 row(s)" in err and "line 3" in err
        assert len(out.splitlines()) == 2
