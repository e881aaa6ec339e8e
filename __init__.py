"""Makes `import fxc` work from the folder above a clone named `fxc`.

Python would otherwise take this repository folder for an empty namespace package called `fxc`
(it has no code of its own) and `fxc.compile` would not exist. This file loads the real package,
fxc/ inside it, under the name `fxc` instead. It is not part of the installed package, reads and
writes nothing, and does nothing when the folder has another name.
"""

import importlib.util as _util
import os as _os
import sys as _sys

if __name__ == "fxc":
    _root = _os.path.dirname(_os.path.abspath(__file__))
    _inner = _os.path.join(_root, "fxc")
    _spec = _util.spec_from_file_location(  # fxc.passes and fxc.codegen are passes/ and codegen/ here
        "fxc", _os.path.join(_inner, "__init__.py"), submodule_search_locations=[_inner, _root]
    )
    _module = _util.module_from_spec(_spec)
    _sys.modules["fxc"] = _module
    _spec.loader.exec_module(_module)
