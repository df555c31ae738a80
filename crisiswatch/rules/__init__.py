"""Alert rules: the YAML language, its checks, and evaluation of signals into alerts."""
