"""Per-series online detectors in river's shape: score_one(), then learn_one()."""
