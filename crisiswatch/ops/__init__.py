"""Operations: logging and redaction, the health and metrics endpoint, latency tracking, and
systemd's notify protocol (readiness, status, watchdog)."""
