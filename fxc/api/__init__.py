"""The public API: `fxc.compile` (compiler.py), the backend interface and the module it returns
(backend.py), budgets (budget.py), the per-layer report (report.py), layer drift (drift.py),
`fxc.save` / `fxc.load` (serialize.py), and fxc as a torch.compile backend,
`torch.compile(model, backend="fxc")` (torch_compile.py, registered under the entry-point group
`torch_dynamo_backends`; torch_compile_cache.py reuses compiled graphs across recompiles), and token generation
for causal LMs compiled with their KV cache, `cm.generate` (generate/). Users
import these names from `fxc`; it sits above the frontends (fxc/frontend/) and the pass manager.
"""
