"""Compression algorithms the passes call: GPTQ, SparseGPT, the dense-model fit target, kept-weight
re-solve, low-rank math, the budget solver, Gram accumulation. Tensors and calibration runners in,
tensors out: no pass classes, no graph rewriting.
"""
