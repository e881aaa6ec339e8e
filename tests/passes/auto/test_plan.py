"""The auto pass's planning helpers (passes/auto/plan.py): what each option really costs."""

from fxc.passes.auto.plan import stored_bytes
from fxc.passes.specs.candidates import parse_candidate


def test_stored_bytes_agree_with_the_candidate_formats():
    for text in ("w8", "w4", "w4g64", "w8a8", "2:4", "4:8", "2:4+w8", "r0.5", "r0.25+w8", "r0.5+w4"):
        candidate = parse_candidate(text)
        assert stored_bytes(candidate, 128, 256, 4) == candidate.storage_bytes((128, 256)), text
    assert stored_bytes(parse_candidate("s0.5+w4"), 128, 256, 4) == stored_bytes(parse_candidate("w4"), 128, 256, 4)
