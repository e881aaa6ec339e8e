"""Compression algorithms the passes call: GPTQ, SparseGPT, the dense-model fit target, the kept-weight
re-solve, Gram matrices and damped Hessians, low-rank math, the budget solver. Tensors and calibration
runners in, tensors out: no pass classes, no graph rewriting.
"""
