"""Helpers of the `quantize` and `mixed-precision` passes: quantization schemes (scheme.py).
"""
