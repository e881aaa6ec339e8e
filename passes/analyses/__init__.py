"""Analyses: registered under the `fxc.analyses` entry-point group, computed on demand and cached
by the AnalysisManager. One analysis per module.
"""
