"""Triton kernels, one per file: the kernel text and its launch wrapper. tiles.py holds the tile
helpers and autotune pieces the GEMM kernels share.
"""
