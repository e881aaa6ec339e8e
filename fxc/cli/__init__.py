"""The `fxc` command line: `fxc compress`, `fxc report`, `fxc demo` (main.py: flags, errors, report), the
compress command (compress.py), how it finds a model (model_source.py) and its calibration
(calibration.py, with the built-in text in data/), progress and quiet output (console.py), the printed
report (display.py), --backend-option (options.py) and the demo (demo.py).
"""
