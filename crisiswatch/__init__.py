"""crisiswatch: streams brand mentions, detects crises early, pages the comms team."""

__version__ = "0.1.0"
