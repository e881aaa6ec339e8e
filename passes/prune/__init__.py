"""Helpers of the `prune` pass (passes/rewrites/prune.py): structured channel pruning (channels.py) and
attention-head pruning (heads_region.py, heads_trace.py, heads.py: regions, head tracing, the rewrite).
The scores and masks of unstructured and N:M pruning are passes/algorithms/prune_scores.py.
"""
