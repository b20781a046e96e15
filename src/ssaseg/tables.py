"""Text tables: the one renderer behind every table ssaseg prints or writes.

    from ssaseg.tables import render_table
    print(render_table(["model", "mIoU"], [["segnext_t", "41.10"]], fmt="plain", align="lr"))

``fmt="markdown"``: a GitHub-flavoured table, cells unpadded (diff-friendly; renderers align
them). ``fmt="plain"``: columns padded to their widest cell and separated by two spaces, a dash
rule under the header, no trailing spaces. Cells are converted with ``str``. A leaf module.
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["render_table", "FORMATS"]

FORMATS = ("markdown", "plain")
_RULE = {"l": "---", "r": "---:", "c": ":---:"}


def _alignments(align: str | Sequence[str] | None, n: int) -> list[str]:
    if align is None:
        return ["l"] * n
    codes = [a[:1].lower() for a in align]  # "lrr" or ["left", "right", "right"]
    if len(codes) != n or any(c not in _RULE for c in codes):
        raise ValueError(f"align must give one of l/r/c per column ({n} columns), got {align!r}")
    return codes


def render_table(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    fmt: str = "markdown",
    align: str | Sequence[str] | None = None,
) -> str:
    """Render ``header`` and ``rows`` (each as long as ``header``) as text.

    Args:
        header: column titles.
        rows: table body; cells are any values (``str()`` is applied).
        fmt: ``"markdown"`` or ``"plain"`` (see the module docstring).
        align: per column ``l``/``r``/``c`` (a string such as ``"lrr"`` or a list such as
            ``["left", "right"]``); default all left. Markdown writes it into the rule row
            (``---:``) only when given, so default tables keep the plain ``---`` rule.

    Returns:
        The table without a trailing newline.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    head = [str(c) for c in header]
    body = [[str(c) for c in row] for row in rows]
    for i, row in enumerate(body):
        if len(row) != len(head):
            raise ValueError(f"row {i} has {len(row)} cells, the header {len(head)}: {row!r}")
    codes = _alignments(align, len(head))
    if fmt == "markdown":
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        rule = "|" + "|".join(_RULE[c] if align is not None else "---" for c in codes) + "|"
        return "\n".join([line(head), rule, *(line(r) for r in body)])
    widths = [max(len(c) for c in col) for col in zip(head, *body)]

    def pad(cell: str, width: int, code: str) -> str:
        return cell.rjust(width) if code == "r" else cell.center(width) if code == "c" else cell.ljust(width)

    lines = ["  ".join(pad(c, w, a) for c, w, a in zip(cells, widths, codes)).rstrip() for cells in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
