"""fxc.codegen: backends that lower the compressed IR (torch, numpy, triton). Each registers
itself under the `fxc.backends` entry-point group in pyproject.toml."""
