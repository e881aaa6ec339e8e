"""What a failed pass must leave alone: a graph's text and every weight, captured and compared.

    before = snapshot(gm); ...; assert untouched(gm, before)

Reads the GraphModule it is given; writes nothing."""

import torch


def snapshot(gm: torch.fx.GraphModule) -> tuple[dict[str, torch.Tensor], str]:
    return {k: v.clone() for k, v in gm.state_dict().items()}, str(gm.graph)


def untouched(gm: torch.fx.GraphModule, before: tuple[dict[str, torch.Tensor], str]) -> bool:
    weights, graph = before
    state = gm.state_dict()
    return (
        str(gm.graph) == graph
        and state.keys() == weights.keys()
        and all(torch.equal(state[k], weights[k]) for k in state)
    )
