"""Typed node annotations: the Frontier a budgeted planner leaves on the output node describes itself
labelled by the pass that wrote it (the core names no pass), and survives the manifest's JSON round trip."""

from fxc.ir import meta

FRONTIER = dict(objective="bytes", scope="layers", budget=1000.0, chosen=(990.0, 0.0123), points=((500.0, 0.5),
                (990.0, 0.0123)), measure="output", mix=(("w8", 2), ("w4g32", 1)))


def test_frontier_lines_are_labelled_by_the_pass_that_wrote_it():
    lines = meta.Frontier(**FRONTIER, source="auto").describe()
    assert lines == [
        "auto: budget 1,000 bytes (layers); chosen 990 bytes, predicted damage 0.0123 (output)",
        "auto: mix w8 x2, w4g32 x1",
        "auto: frontier (cost -> least predicted damage): 500 -> 0.5; 990 -> 0.0123",
    ]
    assert meta.Frontier(**FRONTIER, source="planner").describe()[1] == "planner: mix w8 x2, w4g32 x1"
    assert meta.Frontier(**FRONTIER).describe()[1] == "mix w8 x2, w4g32 x1"  # no source recorded: no label


def test_frontier_keeps_its_source_through_json():
    frontier = meta.Frontier(**FRONTIER, source="auto")
    data = {meta.Frontier.KEY: {**vars(frontier)}}
    assert meta.from_json(data)[meta.Frontier.KEY] == frontier
    del data[meta.Frontier.KEY]["source"]  # a manifest saved before the field existed
    assert meta.from_json(data)[meta.Frontier.KEY].source == ""
