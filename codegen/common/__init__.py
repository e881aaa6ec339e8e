"""Pieces more than one backend uses (the CPU choice between sparse and dense N:M kernels, the
user's cache folder for built kernels).
"""
