"""numpy kernels, one module per ATen op family plus fxc's op set (fxc_ops.py). Each registers its
ops in its `TABLE` with the decorators of codegen/numpy/context.py.
"""
