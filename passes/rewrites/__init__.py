"""Rewrite (and planning) passes: registered under the `fxc.passes` entry-point group, one
registered pass per module. Each module docstring says what the pass reads, writes and preserves.
"""
