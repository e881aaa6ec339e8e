"""Native CPU kernels of the torch backend: C sources shipped as package data, compiled once per
machine with the system C compiler and loaded with ctypes (build.py); the instruction-set family that
decides which of them run (isa.py); the calls into the AVX2 kernels on torch tensors (avx2.py).
"""
