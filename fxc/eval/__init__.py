"""Evaluation data and metrics for benchmarks and the demo: the real text and word-similarity sets
that installed packages ship (realdata.py) and quality measures (quality.py). Nothing in the
compiler imports this package; it needs the optional `real` packages only when called.
"""
