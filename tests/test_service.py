"""Running as a systemd service: sd_notify, the watchdog, stopping in time, checkpoints."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_process import reap, start, wait_for

from crisiswatch.ops.systemd import heartbeat

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "crisiswatch.service"


def deployment(tmp_path: Path, mentions: str = "") -> Path:
    (tmp_path / "mentions.jsonl").write_text(mentions)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"rules: [{ROOT / 'rules'}]\nstate_dir: state\n"
        "brands:\n  - id: acme\n    keywords: [acme]\n"
        "sources: {replay: {path: mentions.jsonl}}\n"
    )
    return config


class TestSdNotify:
    def test_ready_watchdog_status_and_stopping(self, tmp_path: Path) -> None:
        """READY once up, WATCHDOG from the loop's heartbeat, STOPPING on SIGTERM, exit 0 fast."""
        address = str(tmp_path / "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(address)
            sock.settimeout(20)
            process = start(deployment(tmp_path), NOTIFY_SOCKET=address, WATCHDOG_USEC="200000")
            try:
                messages = [sock.recv(4096).decode()]
                assert "READY=1" in messages[0] and "STATUS=" in messages[0]
                while sum("WATCHDOG=1" in m for m in messages) < 3:
                    messages.append(sock.recv(4096).decode())
                process.send_signal(signal.SIGTERM)
                stopped_at = time.monotonic()
                while not any("STOPPING=1" in m for m in messages):
                    messages.append(sock.recv(4096).decode())
                process.communicate(timeout=30)
            finally:
                reap(process)
        assert process.returncode == 0
        assert time.monotonic() - stopped_at < 30  # well inside TimeoutStopSec=45s
        assert any(re.search(r"STATUS=\d+ mentions, \d+ incidents open", m) for m in messages)

    def test_without_systemd_nothing_is_sent(self) -> None:
        """No NOTIFY_SOCKET: the notifier is a quiet no-op."""
        from crisiswatch.ops.systemd import SdNotify

        assert SdNotify("").send("READY=1") is False


class TestCheckpointAcrossRestarts:
    def test_stop_saves_and_start_restores(self, tmp_path: Path) -> None:
        """SIGTERM checkpoints the learned state; the next start restores it."""
        lines = "".join(
            f'{{"id": "m{n}", "created_at": "2026-03-02T{n // 60:02d}:{n % 60:02d}:00Z", '
            f'"text": "acme is fine"}}\n'
            for n in range(600)
        )
        config = deployment(tmp_path, lines)
        first = start(config)
        try:
            wait_for(first, b"source.ended")
            first.send_signal(signal.SIGTERM)
            first.communicate(timeout=30)
        finally:
            reap(first)
        assert first.returncode == 0
        assert (tmp_path / "state" / "checkpoint.bin").exists()
        second = start(config)
        try:
            restored = wait_for(second, b"checkpoint.restored")
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
        finally:
            reap(second)
        assert b"saved_at" in restored


class TestUnusableStateDirectory:
    def test_run_and_doctor_say_so_plainly(self, tmp_path: Path) -> None:
        """A state directory that cannot be created or written (here: under a regular file,
        which defeats even root) stops `run` with one clear line and exit 1, before anything is
        read; `doctor` names the problem too."""
        config = deployment(
            tmp_path, '{"id": "m1", "created_at": "2026-03-02T00:00:00Z", "text": "acme"}\n'
        )
        (tmp_path / "blocker").write_text("")
        config.write_text(config.read_text().replace("state_dir: state", "state_dir: blocker/s"))
        command = [sys.executable, "-m", "crisiswatch"]
        run = subprocess.run([*command, "run", "--config", str(config)], capture_output=True)
        doctor = subprocess.run([*command, "doctor", "--config", str(config)], capture_output=True)
        assert run.returncode == 1 and doctor.returncode == 1
        assert b"Traceback" not in run.stderr + doctor.stderr
        assert b"cannot open the state store" in run.stderr and b"Not a directory" in run.stderr
        assert b"blocker/s is not writable" in doctor.stdout + doctor.stderr


class TestWatchdog:
    async def test_a_blocked_event_loop_sends_no_pings(self) -> None:
        """The pings come from the event loop itself: while a blocking call holds the loop,
        none are sent, so systemd's watchdog sees the hang."""
        sent: list[float] = []

        class Recorder:
            def send(self, *fields: str) -> bool:
                sent.append(time.monotonic())
                return True

        task = asyncio.create_task(heartbeat(Recorder(), 0.01, lambda: True))  # type: ignore[arg-type]
        await asyncio.sleep(0.1)
        blocked_from = time.monotonic()
        time.sleep(0.3)  # noqa: ASYNC251 -- the point: a blocking call wedges the loop
        blocked_until = time.monotonic()
        await asyncio.sleep(0.3)
        task.cancel()
        assert not [t for t in sent if blocked_from < t < blocked_until]
        assert [t for t in sent if t > blocked_until]  # and resume after it


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
class TestUnit:
    def test_exposure_is_at_most_2(self) -> None:
        """`systemd-analyze security --offline=true` rates the unit 2.0 or lower."""
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(UNIT)],
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert found, result.stdout + result.stderr
        assert float(found.group(1)) <= 2.0

    def test_verify_is_clean(self, tmp_path: Path) -> None:
        """`systemd-analyze verify` finds nothing wrong (with an executable that exists here)."""
        unit = tmp_path / "crisiswatch.service"
        unit.write_text(UNIT.read_text().replace("/opt/crisiswatch/bin/crisiswatch", "/bin/true"))
        result = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


class TestOpsEndpoint:
    def test_metrics_health_and_readiness(self, tmp_path: Path) -> None:
        """/metrics speaks Prometheus, /healthz and /readyz answer with JSON."""
        import json
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = deployment(
            tmp_path, '{"id": "m1", "created_at": "2026-03-02T00:00:00Z", "text": "acme"}\n'
        )
        config.write_text(config.read_text() + f"ops: {{http_listen: '127.0.0.1:{port}'}}\n")
        process = start(config)
        try:
            wait_for(process, b"source.ended")
            base = f"http://127.0.0.1:{port}"
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
            health = json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=10).read())
            ready = json.loads(urllib.request.urlopen(f"{base}/readyz", timeout=10).read())
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
        finally:
            reap(process)
        assert 'crisiswatch_mentions_total{outcome="counted"} 1.0' in metrics
        assert 'crisiswatch_source_mentions_total{source="replay"} 1.0' in metrics
        assert "crisiswatch_queue_depth" in metrics and "crisiswatch_pages_queued" in metrics
        assert "crisiswatch_pages_in_memory 0.0" in metrics
        assert 'crisiswatch_pipeline_seconds_bucket{le="+Inf"} 1.0' in metrics  # the mention
        assert "crisiswatch_pipeline_seconds_count 1.0" in metrics
        assert 'crisiswatch_http_connections_refused_total{server="ops"} 0.0' in metrics
        assert health == {"status": "ok"}
        assert ready == {"ready": True, "problems": []}


class TestLatency:
    def test_buckets_are_cumulative_with_a_sum(self) -> None:
        """Each observation lands in the first bucket whose bound it does not exceed."""
        from crisiswatch.ops.latency import Latency

        latency = Latency()
        for seconds in (0.00005, 0.0001, 0.002, 0.002, 5.0):
            latency.observe(seconds)
        buckets = dict(latency.cumulative())
        assert buckets["0.0001"] == 2 and buckets["0.001"] == 2 and buckets["0.003"] == 4
        assert buckets["3.0"] == 4 and buckets["+Inf"] == 5
        assert abs(latency.total - 5.00415) < 1e-9
