"""Frontends: capture a model into the canonical IR. `trace.py` (torch.export, the default, and
`symbolic`), `dynamo.py` (the graph a torch.compile backend receives) and `export.py` (the
torch.export and canonicalization step every path ends with); `kv_cache.py` captures a transformers causal LM as
one step with its KV cache as graph inputs and outputs (what fxc.compile does by default for such a model), and
`kv_inputs.py` turns what users give such a model into the step's inputs. They sit below the public API:
fxc as a torch.compile backend, which compiles each captured graph with fxc.compile, is
fxc/api/torch_compile.py.
"""
