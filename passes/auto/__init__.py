"""Helpers of the `auto` pass (passes/rewrites/auto.py): each layer's options and the exact solve
(plan.py), their predicted damage (damage.py), the joint check of a plan (verify.py), carrying a plan out
with the other passes (execute.py), and what the pass prints and records (report.py). The candidate specs
they plan with are passes/specs/candidates.py.
"""
