"""The vocabulary the analyses, planners and rewrites share: candidate compression specs and whether the
passes can carry one out on a weight (candidates.py), quantization schemes and their stored bytes
(scheme.py), pruning patterns (prune_patterns.py). Built on passes/algorithms/ (a candidate's `apply`
runs GPTQ and the pruning masks); no pass classes, no graph.
"""
