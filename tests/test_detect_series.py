"""detect-series: output shape and clear errors on bad input."""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crisiswatch.cli import main
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
            ("timestamp,value\n9999-12-31 23:50:00,1\n9999-12-31 23:55:00,1\n", "years"),
            ("timestamp,value\n1899-12-31 23:50:00,1\n", "line 2"),
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

    def test_an_absurd_value_is_a_counted_skip(self) -> None:
        """A value no bucket of mentions could hold (over 10^12: 1e160 would overflow the
        detector's arithmetic) is skipped and counted like a bad value."""
        text = series_csv([5, 5, 5, 5]).replace(",5\n", ",1e160\n", 1)
        code, out, err = run(text.replace(",5\n", ",1000000000001\n", 1))
        assert code == 0 and "Traceback" not in err
        assert "skipped 2 row(s)" in err and "line 2" in err
        assert len(out.splitlines()) == 3


class TestCommand:
    """`crisiswatch detect-series FILE` and `-` (stdin): bytes as a spreadsheet exports them."""

    def test_a_byte_order_mark_is_read_past(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A CSV saved by Excel starts with a UTF-8 byte-order mark: the header still counts."""
        path = tmp_path / "excel.csv"
        path.write_bytes(b"\xef\xbb\xbf" + series_csv([3, 4]).encode())
        assert main(["detect-series", str(path)]) == 0
        assert capsys.readouterr().out.startswith("timestamp,value,anomaly_score,alert\n")

    @pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
    def test_stdin_is_read_as_utf8_whatever_the_locale(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bom: bytes
    ) -> None:
        """stdin is decoded as UTF-8 (a byte-order mark read past), whatever the locale says,
        and bytes that are not UTF-8 are a one-line error (exit 2), not a traceback."""
        good = bom + series_csv([3, 4]).encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(good), encoding="ascii"))
        assert main(["detect-series", "-"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3
        bad = good + b"2015-03-03 00:00:00,\xff\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(bad), encoding="utf-8"))
        assert main(["detect-series", "-"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == "detect-series: stdin is not UTF-8 text\n"
