"""The `fxc` command line (console script, pyproject `[project.scripts]`).

    fxc compress MODEL -o compressed/                # quantize{bits=8}; a tokenizer's model calibrates on built-in text
    fxc compress MODEL --passes "quantize{bits=4,method=gptq}" --calib-text calib.txt --out compressed/
    fxc compress my_models:build --passes "prune{sparsity=0.5}" --calib-file calib.safetensors --out out/
    fxc compress MODEL --backend torch --backend-option native=false --out out/   # no native AMX kernel
    fxc report compressed/          # per-layer table (plan, bytes, FLOPs, drift) with totals and kernel notes
    fxc export compressed/ --format compressed-tensors -o w4/     # or gguf (llama.cpp), hf (dense): fxc/cli/export.py
    fxc generate compressed/ --prompt "Once upon a time"         # stream the continuation: fxc/cli/generate.py
    fxc demo                        # compress MiniLM, measure it, draw the size/quality Pareto plot
    fxc --version; fxc --debug compress ...   # --debug: tracebacks and other libraries' warnings and logs

MODEL is a Hugging Face folder or a `module:factory` import path (fxc/cli/model_source.py says what a
factory returns and the calibration file format; fxc/cli/calibration.py which calibration is used when).
`compress` is fxc/cli/compress.py. `report` prints the table of a saved folder as fxc.save kept it in
the manifest (no graph is built: fast); with --verbose or a --backend-option it loads the folder and
lowers it with the torch backend here, to show the kernel each layer gets on this machine.
`--backend-option KEY=VALUE` (repeatable: compress, report, generate) sets one of the backend's options
(fxc/cli/options.py).

Output: progress and status on stderr (fxc/cli/console.py: whole lines when stderr is not a terminal),
the report on stdout. Errors: every error prints as `fxc COMMAND: error: ...` on one line with the fix
(a pipeline syntax error adds its two pointer lines) and exits with status 2, an interrupt with 130.
Errors fxc raises on purpose print their message; any other (a torch error while tracing, an unreadable
file, ...) prints its type and first line and "rerun with --debug for the traceback"; `--debug` prints
the traceback too. Other libraries' routine warnings and logs are silenced unless --debug (fxc's own
warnings always show). Reads the model, calibration and saved folders; writes the output folder;
preserves everything it reads.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from fxc.cli.console import Steps, quiet_third_party
from fxc.cli.display import print_report
from fxc.cli.options import add_backend_option_argument, parse_backend_options
from fxc.errors import FxcError, PipelineSyntaxError
from fxc.version import __version__

DEFAULT_PIPELINE = "quantize{bits=8}"
__all__ = ["DEFAULT_PIPELINE", "main", "parse_backend_options", "print_report"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)  # given before or after the command, or not at all
    steps = Steps()
    hugging_face = args.command in ("export", "generate") or (args.command == "compress" and Path(args.model).is_dir())
    try:
        with quiet_third_party(args.debug, transformers=hugging_face):
            return args.run(args, steps)
    except KeyboardInterrupt:
        steps.abort()
        print(f"fxc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        steps.abort()
        if args.debug:
            traceback.print_exc()
        print(f"fxc {args.command}: error: {error_line(error, args.debug)}", file=sys.stderr)
        return 2


def error_line(error: BaseException, debug: bool = False) -> str:
    """An error as one line: fxc's message (its context lines joined with "; "), or for any other error its
    type and first line and how to see the traceback."""
    if isinstance(error, PipelineSyntaxError):
        return str(error)  # the message, then the text and a caret under the bad token
    text = str(error).strip()
    if isinstance(error, FxcError):
        return "; ".join(line.strip() for line in text.splitlines() if line.strip())
    first = text.splitlines()[0] if text else ""
    hint = "" if debug else "; rerun with --debug for the traceback"
    return f"{type(error).__name__}: {first}".rstrip(": ") + hint


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # global flags, accepted before or after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error print the traceback; show other libraries' warnings and logs")
    parser = argparse.ArgumentParser(prog="fxc", parents=[common],
                                     description="fxc: a compression compiler for PyTorch models")
    parser.add_argument("--version", action="version", version=f"fxc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser("compress", parents=[common], help="compress a model and save it")
    compress.add_argument("model", help="a Hugging Face model folder or a module:factory import path")
    compress.add_argument("--passes", "-p", default=DEFAULT_PIPELINE, help=f"pipeline (default {DEFAULT_PIPELINE})")
    compress.add_argument("--out", "-o", required=True, help="output folder (fxc.save format)")
    calib = compress.add_mutually_exclusive_group()
    calib.add_argument("--calib-text", help="calibration text file (or the text itself), tokenized with the model's "
                       "tokenizer; default for a model with a tokenizer: fxc's built-in English text")
    calib.add_argument("--calib-file", help="safetensors file of calibration batches, tensors named <batch>.<input>")
    compress.add_argument("--seq-len", type=int, default=128, help="tokens per calibration window (default 128)")
    compress.add_argument("--n-calib", type=int, default=16, help="calibration windows (default 16)")
    compress.add_argument("--input-shape", help="shape of random inputs that only trace the model, e.g. 4,16 "
                          "(token ids for a model that starts with an embedding); passes that calibrate need data")
    compress.add_argument("--frontend", default="export", choices=("export", "symbolic", "dynamo"),
                          help="how the model is captured (default export: torch.export)")
    compress.add_argument("--backend", default="auto", help="fxc backend: auto, torch, numpy, triton")
    compress.add_argument("--verbose", "-v", action="store_true", help="print the kernel the backend chose per layer")
    add_backend_option_argument(compress)
    compress.set_defaults(run=_compress)

    report = commands.add_parser("report", parents=[common], help="print the per-layer table of a saved model")
    report.add_argument("path", help="a folder written by fxc compress / fxc.save")
    report.add_argument("--verbose", "-v", action="store_true",
                        help="lower the model here with the torch backend and print the kernel each layer gets")
    add_backend_option_argument(report, " (the report then lowers the model with the torch backend here)")
    report.set_defaults(run=_report)

    from fxc.cli.export import add_export_command

    add_export_command(commands, common)
    from fxc.cli.generate import add_generate_command

    add_generate_command(commands, common)

    demo = commands.add_parser("demo", parents=[common],
                               help="compress all-MiniLM-L6-v2 on the CPU and plot size against quality")
    demo.add_argument("--out", "-o", default="fxc-demo", help="folder for the plot and the saved model")
    demo.set_defaults(run=_demo)
    return parser


def _compress(args: argparse.Namespace, steps: Steps) -> int:
    from fxc.cli.compress import run_compress

    return run_compress(args, steps)


def _report(args: argparse.Namespace, steps: Steps) -> int:
    from fxc.api.serialize import load, read_report

    options = parse_backend_options(args.backend_option) or None  # none given: the saved ones (when saved for torch)
    report = None if options or args.verbose else read_report(args.path)  # as saved: no graph is built
    if report is None:  # kernel choices on this machine, or a folder saved before reports were kept
        with steps.step(f"loading {args.path} and lowering it with the torch backend"):
            report = load(args.path, backend="torch", backend_options=options).report(show=False)
    print_report(report, str(args.path), verbose=args.verbose)
    return 0


def _demo(args: argparse.Namespace, steps: Steps) -> int:
    from fxc.cli.demo import run_demo

    run_demo(Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
