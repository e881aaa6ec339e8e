"""The `fxc` command line: `fxc compress`, `fxc report`, `fxc demo` (main.py), how it finds a model
and its calibration data (model_source.py), and the demo (demo.py).
"""
