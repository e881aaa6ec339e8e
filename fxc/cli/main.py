"""The `fxc` command line (console script, pyproject `[project.scripts]`).

    fxc compress MODEL --passes "quantize{bits=8}" --calib-text calib.txt --out compressed/
    fxc compress my_models:build --passes "prune{sparsity=0.5}" --calib-file calib.safetensors --out out/
    fxc compress MODEL --backend torch --backend-option native=false --out out/   # no native AMX kernel
    fxc report compressed/          # per-layer table (plan, bytes, FLOPs, drift) with totals
    fxc demo                        # compress MiniLM, measure it, draw the size/quality Pareto plot

MODEL is a Hugging Face folder or a `module:factory` import path (fxc/cli/model_source.py says what a
factory returns and the calibration file format). `compress` shows rich progress bars on stderr while
it tokenizes the calibration text and while each pass and analysis runs (fxc.Progress: per segment /
layer / batch inside long passes such as sparse-gpt or gptq, with the current layer and elapsed time),
then writes the model with fxc.save plus report.txt into the output folder and prints the report.
`--backend-option KEY=VALUE` (repeatable, for compress and report) sets one of the backend's options,
the backend_options of fxc.compile / fxc.load; VALUE reads as true/false, a number, else text.
Errors fxc raises on purpose (bad pipeline text, unusable calibration, ...) print as one message and
exit with status 2. Reads the model and calibration; writes the output folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fxc.api.backend import make_backend
from fxc.api.report import Report
from fxc.errors import FxcError, OptionError
from fxc.passmgr.instruments import Progress
from fxc.passmgr.options import to_field_name

DEFAULT_PIPELINE = "quantize{bits=8}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except FxcError as error:
        print(f"fxc {args.command}: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxc", description="fxc: a compression compiler for PyTorch models")
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser("compress", help="compress a model and save it")
    compress.add_argument("model", help="a Hugging Face model folder or a module:factory import path")
    compress.add_argument("--passes", "-p", default=DEFAULT_PIPELINE, help=f"pipeline (default {DEFAULT_PIPELINE})")
    compress.add_argument("--out", "-o", required=True, help="output folder (fxc.save format plus report.txt)")
    calib = compress.add_mutually_exclusive_group()
    calib.add_argument("--calib-text", help="calibration text or a text file, tokenized with the model's tokenizer")
    calib.add_argument("--calib-file", help="safetensors file of calibration batches, tensors named <batch>.<input>")
    compress.add_argument("--seq-len", type=int, default=128, help="tokens per calibration window (default 128)")
    compress.add_argument("--n-calib", type=int, default=8, help="calibration windows (default 8)")
    compress.add_argument("--input-shape", help="without calibration: shape of a random float input, e.g. 4,16")
    compress.add_argument("--backend", default="auto", help="fxc backend: auto, torch, numpy, triton")
    _backend_option_argument(compress)
    compress.set_defaults(run=_compress)

    report = commands.add_parser("report", help="print the per-layer table of a saved model")
    report.add_argument("path", help="a folder written by fxc compress / fxc.save")
    _backend_option_argument(report, " (the report lowers the model with the torch backend; default: its saved ones)")
    report.set_defaults(run=_report)

    demo = commands.add_parser("demo", help="compress all-MiniLM-L6-v2 on the CPU and plot size against quality")
    demo.add_argument("--out", "-o", default="fxc-demo", help="folder for the plot and the saved model")
    demo.set_defaults(run=_demo)
    return parser


def _backend_option_argument(command: argparse.ArgumentParser, note: str = "") -> None:
    command.add_argument(
        "--backend-option", action="append", default=[], metavar="KEY=VALUE",
        help="a backend option, repeatable, e.g. native=false (the torch backend without its native AMX kernel); "
             f"VALUE reads as true/false, a number, else text{note}",
    )


def parse_backend_options(items: Sequence[str]) -> dict[str, Any]:
    """The --backend-option KEY=VALUE items as a backend_options dict (kebab-case keys read as snake_case)."""
    options = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise OptionError(f"--backend-option {item!r} is not KEY=VALUE (e.g. --backend-option native=false)")
        options[to_field_name(key.strip())] = _scalar(value.strip())
    return options


def _scalar(text: str) -> bool | int | float | str:
    """true / false (any case) as a bool, an integer or finite decimal number as a number, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _compress(args: argparse.Namespace) -> int:
    import fxc
    from fxc.cli.model_source import file_batches, load_model, text_batches

    started = time.perf_counter()
    pipeline = fxc.Pipeline.of(args.passes)  # a typo fails before the model loads
    options = parse_backend_options(args.backend_option)
    if options and args.backend != "auto":
        make_backend(args.backend, options)  # an option the backend does not take fails before the model loads
    print(f"loading {args.model}")
    source = load_model(args.model)
    batches = None
    if args.calib_text is not None:
        batches = text_batches(source.tokenizer, args.calib_text, args.seq_len, args.n_calib, _windows_progress)
    elif args.calib_file is not None:
        batches = file_batches(args.calib_file)
    example = _example(source, batches, args.input_shape, from_text=args.calib_text is not None)
    compiled = fxc.compile(
        source.model, pipeline, example_inputs=example, calibration=batches, backend=args.backend,
        instruments=[Progress()], backend_options=options,
    )
    folder = fxc.save(compiled, args.out)
    report = compiled.report(show=False)
    (folder / "report.txt").write_text(str(report) + "\n")
    print_report(report, f"{source.name}: {args.passes}")
    print(f"saved to {folder}/ in {time.perf_counter() - started:.1f} s; inspect it with: fxc report {folder}")
    return 0


def _example(source, batches, input_shape: str | None, from_text: bool = False):
    if batches and from_text:  # [1, seq] token windows: trace with two rows, or export fixes the batch size at 1
        args, kwargs = batches[0]
        return args, {name: torch.cat([value, value]) for name, value in kwargs.items()}
    if batches:
        return batches[0]
    if source.example is not None:
        return source.example
    if input_shape:
        try:
            shape = [int(d) for d in input_shape.split(",")]
        except ValueError:
            raise FxcError(f"--input-shape {input_shape!r} is not comma-separated integers, e.g. 4,16") from None
        return (torch.randn(shape),)
    if source.tokenizer is not None:
        sentences = ["fxc compresses this sentence.", "and this one."]  # two rows keep the batch size dynamic
        return ((), dict(source.tokenizer(sentences, padding=True, return_tensors="pt")))
    raise FxcError("fxc compress needs inputs to trace the model: give --calib-text, --calib-file or --input-shape "
                   "(or a factory that returns (model, example_inputs))")


def _report(args: argparse.Namespace) -> int:
    import fxc

    options = parse_backend_options(args.backend_option) or None  # none given: the saved ones (when saved for torch)
    compiled = fxc.load(args.path, backend="torch", backend_options=options)  # the graph, not the saved backend
    print_report(compiled.report(show=False), str(args.path))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from fxc.cli.demo import run_demo

    run_demo(Path(args.out))
    return 0


def print_report(report: Report, title: str = "") -> None:
    """The report as a rich table, totals in the footer, notes below."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, show_footer=True, header_style="bold", footer_style="bold")
    ratio = report.dense_bytes / report.model_bytes if report.model_bytes else float("nan")
    footers = ["total", "", "", "", f"{report.total_params:,}", f"{report.total_bytes:,}",
               f"{report.total_flops / 1e6:,.2f}", "", ""]
    headers = ["node", "layer", "op", "weight", "params", "bytes", "MFLOPs", "plan", "drift"]
    for header, footer in zip(headers, footers):
        numeric = header in ("params", "bytes", "MFLOPs", "drift")
        table.add_column(header, footer, justify="right" if numeric else "left")
    for row in report.rows:
        table.add_row(
            row.node, row.layer, row.op, "x".join(map(str, row.weight_shape)), f"{row.params:,}", f"{row.bytes:,}",
            f"{row.flops / 1e6:,.2f}", row.plan, "" if row.drift is None else f"{row.drift:.2e}",
        )
    console = Console()
    width = Console(width=10_000).measure(table).maximum
    if not console.is_terminal and console.width < width:  # a pipe or file: keep every column whole
        console = Console(width=width)
    console.print(table)
    console.print(f"model: {report.model_bytes:,} bytes (dense fp32 {report.dense_bytes:,}, {ratio:.2f}x smaller)")
    for note in report.notes:
        console.print(note, highlight=False)


def _windows_progress(windows):
    """A rich bar on stderr over the calibration windows being tokenized."""
    from rich.console import Console
    from rich.progress import track

    return track(windows, description="calibration windows", console=Console(stderr=True))


if __name__ == "__main__":
    sys.exit(main())
