"""`fxc compress`: load a model, choose its calibration, trace and compress it, save it, print the report.

    fxc compress path/to/hf_folder -o out/                      # built-in calibration text, quantize{bits=8}
    fxc compress my_models:build -p "prune{sparsity=0.5}" --calib-file calib.safetensors -o out/

Steps, each announced on stderr (fxc/cli/console.py): load the model (fxc/cli/model_source.py), choose
the calibration (fxc/cli/calibration.py; one line says which, one more warns below the minimum), trace,
run the passes (live bars, or whole lines in a pipe), lower for the backend, save (fxc.save, which keeps
the report in the manifest for `fxc report` and as report.txt for people; beside it, in the same atomic
write, the model's tokenizer for `fxc generate`: fxc/cli/tokenizer_files.py). stdout gets the per-layer
table, the report's notes, one line summing up the backend's kernel choices (each layer's with
--verbose) and where the model went.

Failures are explained for a command-line user (`explain`): a pass that needs calibration when only
--input-shape was given names --calib-text / --calib-file; a trace that fails on a shape says "shape
mismatch" with the input shapes, where they came from and, when the model's first layer shows it, the
size it takes; other trace failures name --frontend instead of the library's frontend= argument.
Reads the model and the calibration; writes the output folder (fxc.save's files and the tokenizer's);
preserves the model (fxc.compile works on its own copy) and the calibration files.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import torch

from fxc.api.backend import make_backend
from fxc.cli.calibration import CalibrationChoice, check_sources, choose_calibration
from fxc.cli.console import StepHooks, Steps, pass_progress, say
from fxc.cli.display import print_report
from fxc.cli.model_source import ModelSource, load_model
from fxc.cli.options import parse_backend_options
from fxc.cli.tokenizer_files import save_with_tokenizer
from fxc.errors import CalibrationError, FxcError, MissingCalibrationError, TraceError
from fxc.frontend.export import first_line, user_frame

_SHAPE_WORDS = re.compile(r"shape|size|dim|channel|mat1|mat2|must match|out of (range|bounds)", re.IGNORECASE)


def run_compress(args: argparse.Namespace, steps: Steps) -> int:
    import fxc

    started = time.perf_counter()
    pipeline = fxc.Pipeline.of(args.passes)  # a typo fails before the model loads
    options = parse_backend_options(args.backend_option)
    if options and args.backend != "auto":
        make_backend(args.backend, options)  # an option the backend does not take fails before the model loads
    check_sources(args.calib_text, args.calib_file)  # so does a calibration file that is not there
    with steps.step(f"loading {args.model}"):
        source = load_model(args.model)
    choice = choose_calibration(source, args.calib_text, args.calib_file, args.input_shape, args.seq_len, args.n_calib)
    say(choice.line)
    if choice.warning:
        say(choice.warning)
    steps.begin(f"tracing {source.name or args.model}")
    hooks = StepHooks(steps, "lowering for the backend" + (" and measuring drift" if choice.batches else ""))
    try:
        compiled = fxc.compile(
            source.model, pipeline, example_inputs=choice.example, calibration=choice.batches, backend=args.backend,
            frontend=args.frontend, instruments=[pass_progress(), hooks], backend_options=options,
        )
    except FxcError as error:
        steps.abort()
        raise explain(error, choice, source, args) from error
    steps.end()
    with steps.step(f"saving to {args.out}"):
        folder, note = save_with_tokenizer(compiled, args.out, source.tokenizer)  # fxc generate reads the tokenizer
    if note:
        say(note)
    print_report(compiled.report(show=False), f"{source.name}: {args.passes}", verbose=args.verbose)
    print(f"saved to {folder}/ in {time.perf_counter() - started:.1f} s; inspect it with: fxc report {folder}")
    return 0


def explain(error: FxcError, choice: CalibrationChoice, source: ModelSource, args: argparse.Namespace) -> FxcError:
    """The error as a command-line user needs it (see the module docstring); others unchanged."""
    text = str(error)
    if isinstance(error, MissingCalibrationError) and choice.batches is None:
        who = error.who
        given = "--input-shape only traces the model" if args.input_shape else "no calibration data was given"
        return CalibrationError(
            f"{who} needs calibration data and {given}: give --calib-text FILE or --calib-file FILE "
            "(GPTQ, SparseGPT and Wanda fit each layer to real inputs; random ones would mislead them)"
        )
    if not isinstance(error, TraceError):
        return error
    cause = error.__cause__
    mismatch = first_layer_mismatch(source.model, choice.example, suggest=bool(args.input_shape))
    if mismatch or (cause is not None and _SHAPE_WORDS.search(str(cause))):
        why = f"{type(cause).__name__}: {first_line(cause)}{user_frame(cause, ' ')}" if cause else text
        return TraceError(
            f"shape mismatch: the inputs ({_shapes(choice.example)}, from {choice.origin}) do not fit the model: "
            f"{mismatch or 'give inputs shaped like the ones it was built for'} ({why})"
        )
    return TraceError(re.sub(r"frontend='(\w+)'", r"--frontend \1", text))


def first_layer_mismatch(model: torch.nn.Module, example: Any, suggest: bool = False) -> str | None:
    """What the model's first layer with weights takes, when the example's first tensor does not fit it;
    `suggest`: with the --input-shape that would fit."""
    args, kwargs = example
    x = next((t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)), None)
    first = next(((n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None),
                 None)
    if x is None or first is None or x.dim() == 0:
        return None
    name, layer = first
    if isinstance(layer, torch.nn.Linear) and x.shape[-1] != layer.in_features:
        fix = ",".join(map(str, [*x.shape[:-1], layer.in_features]))
        return (f"its first layer {name} (Linear) takes {layer.in_features} features in the last dim, the input has "
                f"{x.shape[-1]}" + (f": give --input-shape {fix}" if suggest else ""))
    if isinstance(layer, torch.nn.modules.conv._ConvNd):
        dim = -(len(layer.kernel_size) + 1)
        if x.dim() >= -dim and x.shape[dim] != layer.in_channels:
            return (f"its first layer {name} ({type(layer).__name__}) takes {layer.in_channels} channels in dim "
                    f"{x.dim() + dim}, the input has {x.shape[dim]}")
    if isinstance(layer, torch.nn.Embedding) and x.is_floating_point():
        return f"its first layer {name} (Embedding) takes integer token ids below {layer.num_embeddings}"
    return None


def _shapes(example: Any) -> str:
    args, kwargs = example
    named = [(f"input {i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    return ", ".join(f"{name}: {list(v.shape)}" for name, v in named if isinstance(v, torch.Tensor))
