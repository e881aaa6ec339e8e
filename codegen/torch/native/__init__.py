"""Native CPU kernels of the torch backend: C sources shipped as package data, compiled once per
machine with the system C compiler and loaded with ctypes (build.py).
"""
