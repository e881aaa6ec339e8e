"""`fxc generate`: continue a prompt with a saved language model, printing the new text as it comes.

    fxc generate out/ --prompt "The capital of France is"                 # greedy, 64 new tokens
    fxc generate out/ --prompt "Once" --max-new-tokens 200 --do-sample --temperature 0.8 --top-p 0.95 --seed 0
    fxc generate out/ --prompt-ids "1 15043 3186" --threads 1              # token ids in, token ids out; 1 thread
    fxc generate out/ --prompt "Hi" --backend torch --backend-option torch-compile=true

The folder is one `fxc compress` (or fxc.save) wrote from a causal language model; it is loaded as fxc.load loads
it (checked, nothing executed, no pass runs), with its saved backend unless --backend / --backend-option say
otherwise (fxc/cli/options.py). The prompt is tokenized with the tokenizer kept in the folder
(fxc/cli/tokenizer_files.py: tokenizer.json only, read as data). `cm.generate` (fxc/api/generate/) runs prefill
and then one token at a time on the model's KV cache, stopping at the model's end-of-sequence token or after
--max-new-tokens; greedy unless --do-sample (then --temperature, --top-k, --top-p, and --seed for a repeatable
draw).

stdout gets the new text only (not the prompt), decoded incrementally and flushed piece by piece
(fxc/cli/stream.py), or with --prompt-ids the new token ids separated by spaces; then a newline. stderr gets the
loading step and one final line: prompt tokens, new tokens, prefill ms and decode tokens/s. Errors are one line with
the fix and exit status 2 (fxc/cli/main.py): a folder fxc did not write, --prompt on a folder without a tokenizer
(names --prompt-ids and compressing again), a flag out of range, sampling flags without --do-sample, a token id
outside the vocabulary, a model saved without its KV cache, a prompt plus --max-new-tokens beyond its positions.
Reads the saved folder; writes stdout and stderr; preserves the folder.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from fxc.cli.console import Steps, say
from fxc.cli.options import add_backend_option_argument, parse_backend_options
from fxc.cli.stream import IdPrinter, TextPrinter, TokenClock
from fxc.cli.tokenizer_files import has_tokenizer, load_tokenizer
from fxc.errors import FxcError

DEFAULT_NEW_TOKENS = 64
SAMPLING_FLAGS = ("temperature", "top_k", "top_p", "seed")


def add_generate_command(commands, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser("generate", parents=[common],
                                  help="continue a prompt with a saved language model, streaming the new text")
    command.add_argument("path", help="a folder written by fxc compress / fxc.save from a causal language model")
    prompt = command.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt text (tokenized with the tokenizer kept in the folder)")
    prompt.add_argument("--prompt-ids", help='the prompt as token ids, e.g. "1 2 3"; prints token ids')
    command.add_argument("--max-new-tokens", "-n", type=int, default=DEFAULT_NEW_TOKENS,
                         help=f"at most this many new tokens (default {DEFAULT_NEW_TOKENS})")
    command.add_argument("--do-sample", action="store_true", help="sample the next token (default: greedy)")
    command.add_argument("--temperature", type=float, help="with --do-sample: divide the logits by T > 0 (default 1)")
    command.add_argument("--top-k", type=int, help="with --do-sample: draw from the K most likely tokens")
    command.add_argument("--top-p", type=float, help="with --do-sample: draw from the smallest set of tokens whose "
                         "probability reaches P, 0 < P <= 1")
    command.add_argument("--seed", type=int, help="with --do-sample: seed of the draw (repeatable output)")
    command.add_argument("--threads", "-t", type=int, help="CPU threads torch uses (default: torch's, one per core)")
    command.add_argument("--backend", help="fxc backend to run it (default: the one it was saved with)")
    add_backend_option_argument(command)
    command.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace, steps: Steps) -> int:
    from fxc.api.serialize import load, read_manifest

    check_flags(args)
    options = parse_backend_options(args.backend_option) or None  # none given: the saved ones
    folder = Path(args.path)
    manifest = read_manifest(folder)  # a folder fxc did not write fails here, before anything is loaded
    if args.prompt is not None and not has_tokenizer(folder):
        raise FxcError(
            f"{folder} keeps no tokenizer (tokenizer.json), so --prompt cannot be tokenized: give token ids with "
            '--prompt-ids "1 2 3", or compress the Hugging Face model folder again with this fxc (fxc compress '
            "keeps its tokenizer)")
    tokenizer = load_tokenizer(folder) if args.prompt is not None else None
    prompt_ids = tokenize(tokenizer, args.prompt) if tokenizer is not None else parse_ids(args.prompt_ids)
    check_vocabulary(prompt_ids, (manifest.get("hf_config") or {}).get("vocab_size"))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with steps.step(f"loading {folder}"):
        compiled = load(folder, backend=args.backend, backend_options=options)
    check_generates(compiled, folder, len(prompt_ids), args.max_new_tokens)
    clock = TokenClock(TextPrinter(tokenizer, prompt_ids) if tokenizer is not None else IdPrinter())
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    clock.start()
    with torch.no_grad():
        compiled.generate(
            torch.tensor([prompt_ids], dtype=torch.long), max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
            temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k, top_p=args.top_p,
            generator=generator, streamer=clock,
        )
    clock.finish()
    print(flush=True)
    say(summary_line(len(prompt_ids), clock, args.max_new_tokens))
    return 0


def check_flags(args: argparse.Namespace) -> None:
    """Flags out of range, and sampling flags without --do-sample, as one-line errors before anything loads."""
    if args.max_new_tokens < 1:
        raise FxcError(f"--max-new-tokens is {args.max_new_tokens}; give 1 or more")
    if args.threads is not None and args.threads < 1:
        raise FxcError(f"--threads is {args.threads}; give 1 or more")
    given = [name for name in SAMPLING_FLAGS if getattr(args, name) is not None]
    if given and not args.do_sample:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise FxcError(f"{flags} only act{'s' if len(given) == 1 else ''} when sampling: add --do-sample "
                       "(without it, decoding is greedy)")
    if args.temperature is not None and not (math.isfinite(args.temperature) and args.temperature > 0):
        raise FxcError(f"--temperature is {args.temperature}; give a number above 0 (1 keeps the model's "
                       "probabilities, lower is more greedy)")
    if args.top_k is not None and args.top_k < 1:
        raise FxcError(f"--top-k is {args.top_k}; give 1 or more (1 is greedy)")
    if args.top_p is not None and not (0 < args.top_p <= 1):
        raise FxcError(f"--top-p is {args.top_p}; give a probability above 0 and at most 1 (1 keeps every token)")


def tokenize(tokenizer, text: str) -> list[int]:
    ids = list(tokenizer(text)["input_ids"])
    if not ids:
        raise FxcError("the prompt gives no tokens; give a non-empty --prompt")
    return ids


def parse_ids(text: str) -> list[int]:
    """--prompt-ids: integers separated by spaces or commas."""
    words = [word for word in re.split(r"[\s,]+", text.strip()) if word]
    bad = next((word for word in words if not word.isdigit()), None)
    if bad is not None or not words:
        what = f"{bad!r} is not a token id" if bad is not None else "it holds no token id"
        raise FxcError(f'--prompt-ids {text!r}: {what}; give non-negative integers separated by spaces, e.g. "1 2 3"')
    return [int(word) for word in words]


def check_vocabulary(ids: list[int], vocab_size) -> None:
    if type(vocab_size) is int and vocab_size > 0:
        outside = [i for i in ids if i >= vocab_size]
        if outside:
            raise FxcError(f"token id {outside[0]} is outside the model's vocabulary of {vocab_size:,} tokens; give "
                           f"ids from 0 to {vocab_size - 1:,}")


def check_generates(compiled, folder: Path, prompt_tokens: int, max_new_tokens: int) -> None:
    """The loaded model has a KV-cache step graph, and the prompt plus the new tokens fit its positions."""
    signature = getattr(compiled, "kv_cache", None)
    if signature is None or not hasattr(compiled, "generate"):
        raise FxcError(f"{folder} holds no KV-cache step graph, so it cannot generate: fxc generate runs causal "
                       "language models (Llama, Mistral, Qwen2, GPT-2, OPT families) saved with their KV cache; "
                       "compress the model's Hugging Face folder again with this fxc")
    limit = signature.max_positions
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        fix = (f"give --max-new-tokens {limit - prompt_tokens} or less" if prompt_tokens < limit
               else f"shorten the prompt below {limit} tokens")
        raise FxcError(f"the prompt ({prompt_tokens} tokens) plus --max-new-tokens {max_new_tokens} exceed the model's "
                       f"{limit} positions; {fix}")


def summary_line(prompt_tokens: int, clock: TokenClock, max_new_tokens: int) -> str:
    stop = "" if clock.new_tokens >= max_new_tokens else " (stopped at the end-of-sequence token)"
    decode = f"{clock.decode_tokens_per_s:.1f} tokens/s" if clock.new_tokens > 1 else "n/a (one new token)"
    threads = torch.get_num_threads()
    return (f"prompt {prompt_tokens} tokens, {clock.new_tokens} new tokens{stop}; prefill {clock.prefill_ms:.1f} ms, "
            f"decode {decode} ({threads} thread{'s' if threads != 1 else ''})")
