"""llama.cpp's side of benchmarks/decode_speed.py, run in the venv that has llama-cpp-python (not fxc's).

    /work/peers/llamacpp/bin/python benchmarks/decode_speed_llamacpp.py quantize IN.gguf OUT.gguf q8_0
    /work/peers/llamacpp/bin/python benchmarks/decode_speed_llamacpp.py serve --prompt-ids 1,2,3 --new 128
        stdin:  {"model": "a.gguf", "threads": 1}       one request a line
        stdout: {"model": ..., "threads": 1, "prefill_ms": ..., "decode_tokens_per_s": ..., "tokens": [...]}

`quantize` makes OUT from IN with llama.cpp's own quantizer (llama_model_quantize with allow_requantize: the
package's file is already Q4_1; llama.cpp's default per-tensor rules apply, as `llama-quantize` without --pure).
`serve` answers timing requests one at a time, so decode_speed.py interleaves llama.cpp's runs with fxc's and
transformers' in the same rounds. Each model is loaded once (a context of prompt + new tokens, n_batch >= the
prompt) and its thread count set per request (llama_set_n_threads: n_threads = n_threads_batch). A run is greedy
decoding by hand: the prompt in one llama_decode call, then one token at a time, the next token the argmax of the
last logits (no sampler chain, no end-of-sequence stop, so every run makes exactly --new tokens). Prefill ms is the
time to the first new token; decode tokens/s is (new - 1) over the time from the first new token to the last, as
decode_speed.py measures fxc and transformers. The first line out is llama.cpp's system info (the SIMD it was
built with); the first request of a model runs a short warm-up first. Imports only llama_cpp and numpy. Reads the
model files; writes OUT (quantize) and stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1"}


def quantize(source: str, out: str, kind: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[kind])
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(source.encode(), out.encode(), params)
    if status != 0:
        raise SystemExit(f"llama_model_quantize({source} -> {out}, {kind}) failed with status {status}")


def greedy_run(llm, prompt: list[int], new: int) -> tuple[float, float, list[int]]:
    """(prefill ms, decode tokens/s, new tokens) of one greedy run from an empty cache."""
    import llama_cpp

    vocab = llm.n_vocab()

    def next_token() -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        return int(np.argmax(logits))

    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    tokens = [next_token()]
    first = time.perf_counter()
    for _ in range(new - 1):
        llm.eval([tokens[-1]])
        tokens.append(next_token())
    last = time.perf_counter()
    return (first - start) * 1e3, (new - 1) / (last - first) if new > 1 else float("nan"), tokens


def serve(args) -> None:
    import llama_cpp

    print(json.dumps({"system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
                      "llama_cpp_python": llama_cpp.__version__}), flush=True)
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    models = {}
    for line in sys.stdin:
        request = json.loads(line)
        path, threads = request["model"], int(request["threads"])
        if path not in models:
            models[path] = llama_cpp.Llama(path, n_ctx=len(prompt) + args.new + 8, n_batch=max(512, len(prompt)),
                                           n_threads=threads, n_threads_batch=threads, verbose=False)
        llm = models[path]
        llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
        if request.get("warmup"):
            greedy_run(llm, prompt, 4)
        prefill_ms, tokens_per_s, tokens = greedy_run(llm, prompt, args.new)
        print(json.dumps({"model": path, "threads": threads, "prefill_ms": prefill_ms,
                          "decode_tokens_per_s": tokens_per_s, "tokens": tokens}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("quantize")
    make.add_argument("source")
    make.add_argument("out")
    make.add_argument("kind", choices=sorted(FTYPES))
    server = commands.add_parser("serve")
    server.add_argument("--prompt-ids", required=True, help="the prompt's token ids, comma-separated")
    server.add_argument("--new", type=int, default=128)
    args = parser.parse_args()
    if args.command == "quantize":
        quantize(args.source, args.out, args.kind)
    else:
        serve(args)


if __name__ == "__main__":
    main()
