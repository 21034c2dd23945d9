"""The table `cgdeploy bench` prints (report.py writes the files; results.md keeps every column).

- A terminal: the columns that fit its width, dropping the least useful first (DROP_ORDER: p99, p90, % peak,
  GFLOP/s, ...); every cell whole, no box drawing. When even the essential columns (backend, size, status,
  p50, fps) do not fit, the plain layout is printed and the terminal wraps it.
- Not a terminal (piped, redirected, captured): plain space-aligned text with every column, nothing cut.
Either way a failed case shows "failed"/"unavailable" in its row and the full reason once per backend below,
then the CPU's ISA, what each backend reported running, and the measured peaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cyclegan_deploy.bench.report import TABLE_HEAD, isa_line, peaks_summary, ran_line, table_rows, video_line

if TYPE_CHECKING:
    from rich.console import Console

DROP_ORDER = ("p99 ms", "p90 ms", "% peak", "GFLOP/s", "max abs", "tput fps", "PSNR dB", "speedup", "batch")
GAP = 2  # spaces between columns
LEFT = ("backend", "size", "status")


def _rows(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, str]]:
    """Table rows with the status cut to its kind, and each failing backend's full reason (first one)."""
    rows: list[list[str]] = []
    problems: dict[str, str] = {}
    for row in table_rows(results):
        if row[3] != "ok":
            problems.setdefault(row[0], row[3])
            row[3] = row[3].split(":")[0]
        rows.append(row)
    return rows, problems


def _widths(heads: list[str], rows: list[list[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]


def fit_columns(rows: list[list[str]], width: int) -> list[int] | None:
    """Indexes of TABLE_HEAD to show within `width` characters, or None when the essential ones do not fit."""
    keep = list(range(len(TABLE_HEAD)))
    widths = _widths(list(TABLE_HEAD), rows)
    tput = TABLE_HEAD.index("tput fps")
    # no throughput measured (no async backend): that empty column goes first
    order = DROP_ORDER if any(r[tput] != "-" for r in rows) else \
        ("tput fps", *(h for h in DROP_ORDER if h != "tput fps"))
    for head in (None, *order):
        if head is not None:
            keep.remove(TABLE_HEAD.index(head))
        if sum(widths[i] for i in keep) + GAP * (len(keep) - 1) <= width:
            return keep
    return None


def plain_lines(results: dict[str, Any], columns: list[int] | None = None) -> list[str]:
    """Space-aligned lines: header, one per case, then each failing backend's reason and the video line."""
    rows, problems = _rows(results)
    keep = list(range(len(TABLE_HEAD))) if columns is None else columns
    heads = [TABLE_HEAD[i] for i in keep]
    cells = [[r[i] for i in keep] for r in rows]
    widths = _widths(heads, cells)

    def line(values: list[str]) -> str:
        return (" " * GAP).join(v.ljust(w) if h in LEFT else v.rjust(w)
                                for v, w, h in zip(values, widths, heads, strict=True)).rstrip()

    lines = [line(heads), *(line(c) for c in cells)]
    lines += [f"{backend}: {status}" for backend, status in problems.items()]
    lines += footer(results)
    return lines


def footer(results: dict[str, Any]) -> list[str]:
    """The lines under the table: ISA, what ran, peaks, the video line."""
    lines = [isa_line(results), *filter(None, [ran_line(results)]), peaks_summary(results)]
    if results.get("video"):
        lines.append(video_line(results["video"]).replace("**", ""))
    return lines


def print_table(results: dict[str, Any], console: Console | None = None) -> None:
    """The compact table on a terminal, plain text otherwise (see the module docstring)."""
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print("\n".join(plain_lines(results)))
        return
    console = console or Console()
    rows, problems = _rows(results)
    columns = fit_columns(rows, console.width) if console.is_terminal else None
    if columns is None:
        for text in plain_lines(results):
            console.print(text, markup=False, highlight=False, crop=False, soft_wrap=True)
        return
    table = Table(title="cgdeploy bench", box=None, pad_edge=False, padding=(0, GAP // 2), header_style="bold",
                  title_justify="left")
    widths = _widths(list(TABLE_HEAD), rows)
    for i in columns:
        table.add_column(TABLE_HEAD[i], justify="left" if TABLE_HEAD[i] in LEFT else "right", no_wrap=True,
                         min_width=widths[i])
    for row in rows:
        table.add_row(*(escape(row[i]) for i in columns), style=None if row[3] == "ok" else "yellow")
    console.print(table)
    for backend, status in problems.items():
        console.print(f"[yellow]{escape(backend)}[/yellow]: {escape(status)}", highlight=False)
    for line in footer(results):
        console.print(escape(line), highlight=False)
