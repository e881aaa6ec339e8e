"""`fxc export`: a folder fxc.save wrote, in a format a serving engine loads (fxc.export does the work).

    fxc export out/ --format compressed-tensors -o w4/      # vLLM, transformers (with compressed-tensors)
    fxc export out/ --format gguf -o gguf/ --hf-folder path/to/hf_model   # llama.cpp, with the model's tokenizer
    fxc export out/ --format gguf -o gguf/ --allow-requantize            # no exact block type: requantize, report
    fxc export out/ --format hf -o dense/                   # dense safetensors in the original architecture

The saved folder is loaded as fxc.load loads it (checked, nothing executed; no pass runs). A plan the format cannot
hold is refused before anything is written, as one line naming the layer (exit status 2, fxc/cli/main.py). stdout
gets what was written and, for GGUF, the weight error the format adds per layer (max and mean; each requantized
layer). Reads the saved folder and the Hugging Face folder's config and tokenizer files; writes the output folder;
preserves everything it reads.
"""

from __future__ import annotations

import argparse

from fxc.api.export import FORMATS, export
from fxc.cli.console import Steps


def add_export_command(commands, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser("export", parents=[common],
                                  help="write a saved model in a format serving engines load")
    command.add_argument("path", help="a folder written by fxc compress / fxc.save")
    command.add_argument("--format", "-f", required=True, choices=FORMATS,
                         help="compressed-tensors (vLLM, transformers), gguf (llama.cpp) or hf (dense safetensors)")
    command.add_argument("--out", "-o", required=True, help="output folder")
    command.add_argument("--allow-requantize", action="store_true",
                         help="gguf: requantize layers whose plan has no exact GGUF block type (the error is reported)")
    command.add_argument("--hf-folder", help="the model's Hugging Face folder: its tokenizer files, and its config "
                         "when the saved model has none")
    command.set_defaults(run=run_export)


def run_export(args: argparse.Namespace, steps: Steps) -> int:
    with steps.step(f"exporting {args.path} as {args.format}"):
        result = export(args.path, args.out, format=args.format, allow_requantize=args.allow_requantize,
                        hf_folder=args.hf_folder)
    print(result)
    return 0
