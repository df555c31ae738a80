"""The bundled demo: two days of mentions of a fictional bank, and their generator."""
