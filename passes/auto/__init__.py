"""Helpers of the `auto` pass (passes/rewrites/auto.py): candidate specs, planning, carrying a plan
out with the other passes, and the joint check of a plan.
"""
