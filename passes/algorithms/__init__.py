"""Compression algorithms the passes call: GPTQ, SparseGPT, the dense-model fit target, the kept-weight
re-solve, pruning scores and masks (prune_scores.py), Gram matrices and damped Hessians (gram.py), layer
inputs as rows and their Hessians over calibration (layer_inputs.py), low-rank math, the budget solver.
Tensors and calibration runners in, tensors out: no pass classes, no graph rewriting. The bottom layer of
passes/ after select.py and aten_groups.py: nothing here imports specs/, analyses/ or a pass's helpers.
"""
