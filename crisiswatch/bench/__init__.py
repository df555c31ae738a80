"""Benchmarks that print numbers: detection scores on labeled public data."""
