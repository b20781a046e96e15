"""ssaseg.tables.render_table: the one text-table renderer (markdown and plain)."""
import pytest

from ssaseg.tables import render_table


def test_markdown_is_compact_gfm():
    text = render_table(["model", "GMACs"], [["segnext_t", 6.2], ["a|b", ""]])
    assert text == "| model | GMACs |\n|---|---|\n| segnext_t | 6.2 |\n| a\\|b |  |"
    aligned = render_table(["a", "b", "c"], [["1", "2", "3"]], align="lrc")
    assert aligned.splitlines()[1] == "|---|---:|:---:|"


def test_plain_pads_columns_and_aligns():
    text = render_table(["class", "IoU"], [["wall", "7.50"], ["skyscraper", "12.25"]], fmt="plain", align=["left", "right"])
    assert text.splitlines() == [
        "class         IoU",
        "----------  -----",
        "wall         7.50",
        "skyscraper  12.25",
    ]
    # default: every column left-aligned, no trailing spaces
    assert render_table(["a", "bb"], [["xxx", ""]], fmt="plain").splitlines() == ["a    bb", "---  --", "xxx"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "html"}, "fmt must be one of markdown, plain"),
        ({"align": "l"}, "one of l/r/c per column"),
        ({"align": "lx"}, "one of l/r/c per column"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_table(["a", "b"], [["1", "2"]], **kwargs)
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        render_table(["a", "b"], [["1"]])
