"""Helpers of the `low-rank` pass (passes/rewrites/low_rank.py): the graph surgery of a split.
"""
