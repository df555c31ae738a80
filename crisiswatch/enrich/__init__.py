"""Enrichment of single mentions: sentiment scoring, attribution."""
