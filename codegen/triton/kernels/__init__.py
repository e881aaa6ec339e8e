"""Triton kernels, one file each: the kernel text (TEMPLATE, with its hooks and autotune table; TEMPLATES
where one text serves several, as dequant_gemm.py's for int8 and int4 weights) and its launch wrapper
(`launch`: checks the inputs, allocates the output, launches the grid). The module docstring of each
states the layout of the tensors it reads and what it writes. tiles.py holds what they share: the
@triton.jit tile helpers their text imports, and the wrappers' checks, grids and template tables.
"""
