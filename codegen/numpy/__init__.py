"""The `numpy` backend: the reference semantics, every op in numpy. backend.py (entry point),
lowering.py (graph -> one numpy program), context.py (the lowering context and op tables), quant.py
(quantized storage formats and exact integer GEMMs) and ops/ (one module per op family).
"""
