"""The `triton` backend: backend.py (entry point), partition.py (graph -> fused groups), picker.py
(which kernel serves a fused linear), epilogue.py (fused elementwise work), template.py (kernel
text with named hooks), cache.py (rendered source -> loaded kernels) and kernels/ (one kernel a file).
"""
