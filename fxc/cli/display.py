"""How `fxc compress` and `fxc report` print a report on stdout.

    print_report(report, "smollm2-hf: quantize{bits=8}", verbose=False)

The per-layer table with totals, the size line, then the report's notes (among them one line summing up
the backend's kernel choices); `verbose` adds the backend's note per layer. On a terminal the table is
rich's (bold header, totals in the footer, fitted to the window); in a pipe or a file it is plain
aligned text (Report.__str__), whole rows of any width, in milliseconds where rich takes half a second
for 200 rows. Reads nothing; writes stdout; preserves the report."""

from __future__ import annotations

from fxc.api.report import Report


def print_report(report: Report, title: str = "", verbose: bool = False) -> None:
    """The table (rich on a terminal, plain aligned columns elsewhere), totals, its notes, and with `verbose`
    each layer's kernel note."""
    from rich.console import Console

    console = Console()
    lines = list(report.notes) + (list(report.kernel_notes) if verbose else [])
    if report.kernel_notes and not verbose:
        lines.append("(--verbose: the kernel each layer gets)")
    if not console.is_terminal:  # a pipe or file: plain text, every column and line whole (and 50x faster)
        table = str(Report(report.rows, report.model_bytes, report.dense_bytes))
        print("\n".join(([title] if title else []) + [table] + lines), flush=True)
        return
    console.print(_rich_table(report, title))
    ratio = report.dense_bytes / report.model_bytes if report.model_bytes else float("nan")
    console.print(f"model: {report.model_bytes:,} bytes (dense fp32 {report.dense_bytes:,}, {ratio:.2f}x smaller)",
                  highlight=False)
    for line in lines:
        console.print(line, highlight=False, markup=False)


def _rich_table(report: Report, title: str):
    from rich.table import Table

    table = Table(title=title or None, show_footer=True, header_style="bold", footer_style="bold")
    footers = ["total", "", "", "", f"{report.total_params:,}", f"{report.total_bytes:,}",
               f"{report.total_flops / 1e6:,.2f}", "", ""]
    headers = ["node", "layer", "op", "weight", "params", "bytes", "MFLOPs", "plan", "drift"]
    for header, footer in zip(headers, footers):
        numeric = header in ("params", "bytes", "MFLOPs", "drift")
        table.add_column(header, footer, justify="right" if numeric else "left")
    for row in report.rows:
        table.add_row(
            row.node, row.layer, row.op, "x".join(map(str, row.weight_shape)), f"{row.params:,}", f"{row.bytes:,}",
            f"{row.flops / 1e6:,.2f}", row.plan + (f" (tied to {row.tied_to})" if row.tied_to else ""),
            "" if row.drift is None else f"{row.drift:.2e}",
        )
    return table
