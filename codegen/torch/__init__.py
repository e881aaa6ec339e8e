"""The `torch` backend: runs the compressed graph with torch, fxc ops swapped for fast kernels.
backend.py (entry point and kernel choice), fast_ops.py, weight_only.py and native/ (C kernels
built once per machine).
"""
