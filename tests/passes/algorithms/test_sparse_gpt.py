"""SparseGPT's gradual stages (passes/algorithms/sparse_gpt.py): the schedule of sparsities the stages prune to."""

import pytest

from fxc.passes.algorithms.sparse_gpt import stage_sparsities


def test_stage_schedule_starts_at_forty_percent_of_the_target_and_ends_on_it():
    assert stage_sparsities(0.5, 1) == [0.5]
    assert stage_sparsities(0.5, 3) == pytest.approx([0.2, 0.35, 0.5])
    five = stage_sparsities(0.6, 5)
    assert five[0] == pytest.approx(0.24) and five[-1] == 0.6 and five == sorted(five)
