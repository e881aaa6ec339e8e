"""Error types. Every error fxc raises names its cause and, where there is one, the fix.

Reads nothing, writes nothing: these are the exception classes the rest of the core raises, plus
`describe_node`, which renders a graph node with the source line it was traced from.
"""

from __future__ import annotations

import torch.fx


class FxcError(Exception):
    """Base of every error fxc raises on purpose. `add_context` appends lines (the pass that was
    running, the passes before it) that are part of the message, keeping the error's type."""

    def add_context(self, line: str) -> None:
        self.__dict__.setdefault("_context", []).append(line)

    def __str__(self) -> str:
        base = super().__str__()
        return "\n  ".join([base, *self.__dict__.get("_context", [])])


class TraceError(FxcError):
    """A frontend could not capture the model into a graph."""


class OptionError(FxcError, ValueError):
    """A pass, analysis or backend got an option value it does not accept."""


class PipelineSyntaxError(FxcError, ValueError):
    """Pipeline text does not parse; the message points at the bad token."""

    def __init__(self, message: str, text: str, position: int):
        self.text, self.position = text, position
        start = max(0, position - 60)  # a window around the error, on one line
        shown = text[start : position + 60].replace("\n", " ").replace("\t", " ")
        prefix, suffix = ("..." if start else ""), ("..." if position + 60 < len(text) else "")
        super().__init__(f"{message}\n  {prefix}{shown}{suffix}\n  {' ' * (len(prefix) + position - start)}^")


class UnknownNameError(FxcError, KeyError):
    """A pass, analysis or backend name that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message
        return "\n  ".join([str(self.args[0]), *self.__dict__.get("_context", [])])


class CalibrationError(FxcError, ValueError):
    """Calibration data that cannot be used: wrong shapes, NaN/Inf, missing where a pass needs it."""


class MissingCalibrationError(CalibrationError):
    """A pass or analysis needs calibration data and none was given; `who` names it."""

    def __init__(self, who: str, message: str):
        self.who = who
        super().__init__(message)


class IRError(FxcError):
    """The graph breaks the IR contract (fxc.ir.verify)."""


class NodeError(FxcError):
    """A problem with one node of the graph; the message names the node and its source line."""

    def __init__(self, node: torch.fx.Node, message: str):
        self.node = node
        super().__init__(f"{message}\n  at {describe_node(node)}")


class PassFailure(FxcError):
    """A pass raised. Carries the pass, the node (if known) and the passes that ran before it."""

    def __init__(self, pass_text: str, before: list[str], cause: BaseException):
        self.pass_text, self.before, self.cause = pass_text, before, cause
        ran = ", ".join(before) if before else "none"
        super().__init__(
            f"pass '{pass_text}' failed: {type(cause).__name__}: {cause}\n  passes that ran before it: {ran}"
        )


class BackendError(FxcError):
    """A backend cannot lower the graph (unsupported ops, missing device, ...)."""


class InputError(FxcError, ValueError):
    """A compiled model was called with inputs that do not fit the graph it was compiled for (a missing
    or unknown input, or a rank, dtype or static dim that differs); the message gives both shapes."""


class FormatError(FxcError, ValueError):
    """A saved model fxc.load cannot read: truncated, modified, or from an incompatible version."""


class GenerateError(FxcError, ValueError):
    """`CompiledModule.generate` cannot do what was asked: the model was compiled without a KV-cache step graph,
    an argument is out of range, or the prompt plus the new tokens exceed the model's positions."""


class ExportError(FxcError, ValueError):
    """fxc.export refused a model before writing anything: the format cannot hold a layer's plan (a low-rank split,
    changed shapes, a scheme it has no type for); the message names the layer and what the format lacks."""


def describe_node(node: torch.fx.Node) -> str:
    """`%name = aten.linear.default(...)`, plus the user source line the node was traced from."""
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
    if hasattr(node.target, "_schema"):
        target = str(node.target).replace("torch.ops.", "")
    text = f"node %{node.name} ({node.op} {target})"
    source = source_line(node)
    return f"{text}, from {source}" if source else text


def source_line(node: torch.fx.Node) -> str | None:
    """The innermost frame of the trace-time stack outside torch itself (the model's own line):
    `file.py", line 12, in forward: y = ...`."""
    trace = node.meta.get("stack_trace")
    if not trace:
        return None
    lines = [line.strip() for line in trace.strip().splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith("File ")]
    if not frames:
        return lines[-1]
    outside_torch = [i for i in frames if "/torch/" not in lines[i]] or frames
    index = outside_torch[-1]
    code = lines[index + 1] if index + 1 < len(lines) and not lines[index + 1].startswith("File ") else ""
    return f"{lines[index].replace('File ', '', 1)}: {code}".rstrip(": ")
