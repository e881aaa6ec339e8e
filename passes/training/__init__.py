"""Compression-aware training: a pipeline's plan simulated in a trainable copy of a model
(qat.py, qat_plan.py) and gradual pruning on a schedule (gradual_prune.py). Not passes: they run
inside the user's training loop.
"""
