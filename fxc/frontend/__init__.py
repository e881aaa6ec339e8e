"""Frontends: capture a model into the canonical IR. `trace.py` (torch.export, the default, and
`symbolic`), `dynamo.py` (the graph a torch.compile backend receives), `torch_compile.py` (fxc as
a torch.compile backend) and `torch_compile_cache.py` (reuse of compiled graphs).
"""
