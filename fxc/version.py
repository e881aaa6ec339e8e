"""The fxc version (fxc.__version__, and the `fxc_version` that fxc.save writes into a manifest).
Reads and writes nothing."""

__version__ = "0.1.0"
