"""Helpers of the `prune` pass (passes/rewrites/prune.py): scores and masks, structured channel
pruning, and attention-head pruning (regions, head tracing, the rewrite).
"""
