"""Frontends: capture a model into the canonical IR. `trace.py` (torch.export, the default, and
`symbolic`), `dynamo.py` (the graph a torch.compile backend receives) and `export.py` (the
torch.export and canonicalization step every path ends with). They sit below the public API:
fxc as a torch.compile backend, which compiles each captured graph with fxc.compile, is
fxc/api/torch_compile.py.
"""
