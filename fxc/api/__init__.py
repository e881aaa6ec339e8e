"""The public API: `fxc.compile` (compiler.py), the backend interface and the module it returns
(backend.py), budgets (budget.py), the per-layer report (report.py), layer drift (drift.py) and
`fxc.save` / `fxc.load` (serialize.py). Users import these names from `fxc`.
"""
