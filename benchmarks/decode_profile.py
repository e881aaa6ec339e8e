"""Where one decode step of fxc's generate spends its time: benchmarks/decode_speed.py --profile.

    text = profile_variants({"fxc w8": cm_w8, "fxc w4g64": cm_w4}, ids)   # one block of lines per compiled model

For each compiled model (torch backend, eager) cm.generate runs the prompt plus TOKENS new tokens; a forward pre-hook on
the step graph (cm.runner) keeps the inputs of one decode step (the token, the mask, the positions, the cache views
at the prompt + TOKENS // 2 positions). Then:
    step      the median time between two new tokens inside cm.generate: everything one token costs
    graph     the median time of the step graph alone, called on the kept inputs
    outside   step - graph: the cache write, the next-token choice and the loop (fxc/api/generate/loop.py)
    by node   the step graph run node by node (torch.fx.Interpreter, each node timed), summed per kind: quantized
              linears (the backend's kernels, e.g. the native AVX2 GEMV), dense linears (the fp32 LM head unless
              skip=[]), attention, the concatenation of the past keys / values with the new ones (how the step
              graph extends the cache), and every other op (norms, rotary, elementwise, views: per-op dispatch);
              the sum exceeds `graph` by what the interpreter adds per node
    profiler  torch.profiler (CPU, no stacks) over REPEATS calls of the step graph: ATen op calls per step, their
              self time, the heaviest; the rest of `graph` is Python and the kernels called through ctypes, which
              the profiler does not see
Reads the compiled models; writes nothing; prints nothing (returns the text).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

import torch
import torch.fx

TOKENS, REPEATS = 16, 9


def profile_variants(modules: dict, ids: torch.Tensor) -> str:
    """One block of lines per compiled module (title -> cm.generate-able CompiledModule on the eager torch backend)."""
    return "\n\n".join(profile_one(cm, ids, title) for title, cm in modules.items())


def profile_one(cm, ids: torch.Tensor, title: str) -> str:
    from fxc.cli.stream import TokenClock

    kept, calls = [], [0]

    def keep(module, args):
        calls[0] += 1
        if calls[0] == 1 + TOKENS // 2:  # call 1 is the prefill
            kept.append(args)

    handle = cm.runner.register_forward_pre_hook(keep)
    try:
        clock = TokenClock()
        clock.start()
        cm.generate(ids, max_new_tokens=1 + TOKENS, eos_token_id=[], streamer=clock)
    finally:
        handle.remove()
    step_ms = statistics.median(b - a for a, b in zip(clock.times[1:], clock.times[2:])) * 1e3
    args = kept[0]
    with torch.no_grad():
        graph_ms = _median_ms(lambda: cm.runner(*args))
        by_kind, counts = _by_node(cm.runner, args)
        ops = _profiler(cm.runner, args)
    width = max(len(kind) for kind in by_kind) + 8
    lines = [f"{title}: one decode step at {ids.shape[1] + TOKENS // 2} positions, {torch.get_num_threads()} thread(s)",
             f"  step {step_ms:.1f} ms = step graph {graph_ms:.1f} ms + outside the graph {step_ms - graph_ms:.1f} ms "
             "(cache write, next-token choice, loop)",
             f"  step graph node by node ({sum(counts.values()):,} calls, {sum(by_kind.values()):.1f} ms with the "
             "interpreter's per-node cost):"]
    for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1]):
        label = f"{kind} ({counts[kind]:,})"
        lines.append(f"    {label:<{width}}{ms:>7.1f} ms  {ms / counts[kind] * 1e3:>6.1f} us a call")
    lines.append(f"  torch.profiler: {ops['calls']:,.0f} ATen op calls a step, {ops['self_ms']:.1f} ms self time; "
                 "heaviest: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in ops["top"]))
    return "\n".join(lines)


def _median_ms(fn, repeats: int = REPEATS) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def node_kind(node: torch.fx.Node) -> str | None:
    """The kind a call of the step graph counts under (None: not a call)."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return None
    target = node.target
    name = f"{getattr(target, '__module__', '') or ''}.{getattr(target, '__name__', str(target))}"
    if name.startswith("fxc.codegen") or "fxc." in str(target):
        return "quantized linears (fxc kernels)"
    if "linear" in name or name.endswith((".mm", ".addmm", ".matmul")):
        return "dense linears (LM head, unquantized layers)"
    if "scaled_dot_product_attention" in name:
        return "attention (sdpa)"
    if name.endswith(".cat") and any(a.op == "placeholder" for a in node.all_input_nodes):
        return "past + new keys/values (cat)"
    return "other ops (norms, rotary, elementwise, views)"


class _NodeTimer(torch.fx.Interpreter):
    def __init__(self, module):
        super().__init__(module)
        self.spent: dict[str, float] = defaultdict(float)

    def run_node(self, node):
        kind = node_kind(node)
        if kind is None:
            return super().run_node(node)
        start = time.perf_counter()
        out = super().run_node(node)
        self.spent[kind] += time.perf_counter() - start
        return out


def _by_node(runner, args) -> tuple[dict[str, float], dict[str, int]]:
    counts: dict[str, int] = defaultdict(int)
    for node in runner.graph.nodes:
        if (kind := node_kind(node)) is not None:
            counts[kind] += 1
    codegen = runner.graph._codegen  # a graph with pytree inputs takes them flattened, one per placeholder
    flat = codegen.process_inputs(*args) if hasattr(codegen, "pytree_info") else args
    runs = []
    for _ in range(REPEATS):
        timer = _NodeTimer(runner)
        timer.run(*flat)
        runs.append(timer.spent)
    return {kind: statistics.median(run[kind] for run in runs) * 1e3 for kind in counts}, dict(counts)


def _profiler(runner, args) -> dict:
    runner(*args)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(REPEATS):
            runner(*args)
    events = prof.key_averages()
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:4]
    return {"calls": sum(e.count for e in events) / REPEATS,
            "self_ms": sum(e.self_cpu_time_total for e in events) / REPEATS / 1e3,
            "top": [(e.key, e.self_cpu_time_total / REPEATS / 1e3) for e in top]}
