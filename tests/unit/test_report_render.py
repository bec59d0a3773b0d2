"""The report renderer's HTML / Markdown output and the plot helpers' 'only where informative' rule."""
from __future__ import annotations

import base64
import json
import re

import pytest

from adaptlab.report.render import column_kinds, html_table, md_table, table, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NASTY = "<b>bold</b> & \"quoted\" 'single' | pipe"


def _png(path):
    """A real 2x3 PNG."""
    mpl_image = pytest.importorskip("matplotlib.image")
    import numpy as np

    mpl_image.imsave(path, np.zeros((2, 3, 3)))
    return path


def _decoded(path):
    """Height and width of a PNG as decoded by PIL (if installed) or matplotlib."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return im.size[1], im.size[0]
    except ImportError:
        from matplotlib.image import imread

        return imread(path).shape[:2]


def test_html_escapes_every_text_and_markdown_escapes_pipes(tmp_path):
    t = table([{NASTY: NASTY + "\nsecond line", "n": 1}])
    write_report(tmp_path, NASTY, [{"title": NASTY, "text": NASTY, "table": t}], {"k": NASTY})
    page = (tmp_path / "report.html").read_text()
    assert "<b>" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot; &#x27;single&#x27;" in page
    assert page.count("&lt;b&gt;") == 6  # <title>, <h1>, <h2>, the note, the header, the cell
    assert "&lt;b&gt;bold&lt;/b&gt;" in re.search(r"<th>(.*?)</th>", page).group(1)
    md = (tmp_path / "report.md").read_text()
    assert f"# {NASTY}\n" in md
    header, rule, row = [l for l in md.splitlines() if l.startswith("|")]
    assert header.count(" | ") == 1 and "\\| pipe" in header  # the pipe in a header is escaped too
    assert row.count(" | ") == 1 and "second line" in row and rule == "|---|---|"
    assert json.loads((tmp_path / "report.json").read_text()) == {"k": NASTY}


def test_sections_without_table_or_image_and_empty_ones(tmp_path):
    sections = [{"title": "Only text", "text": "Measured: nothing."},
                {"title": "Plot dropped", "image": None},  # a helper returned None: nothing to show
                {"title": "Table only", "table": table([{"a": 1}]), "image": None}]
    write_report(tmp_path, "T", sections, {})
    page, md = (tmp_path / "report.html").read_text(), (tmp_path / "report.md").read_text()
    assert "<h2>Only text</h2><p class='note'>Measured: nothing.</p><h2>Table only</h2>" in page
    assert "Plot dropped" not in page and "Plot dropped" not in md
    assert "<img" not in page and "![" not in md and page.count("<table") == 1
    assert md.startswith("# T\n") and "## Only text\n\nMeasured: nothing.\n" in md


def test_image_from_another_stage_is_copied_beside_the_markdown_and_embedded(tmp_path):
    (tmp_path / "stage").mkdir()
    src = _png(tmp_path / "stage" / "curve.png")
    d = tmp_path / "report"
    write_report(d, "T", [{"title": "A [curve]", "image": src}], {})
    assert (d / "curve.png").read_bytes() == src.read_bytes()
    assert "![A (curve)](curve.png)" in (d / "report.md").read_text()
    b64 = re.search(r"<img alt='A \[curve\]' src='data:image/png;base64,([^']+)'>",
                    (d / "report.html").read_text()).group(1)
    assert base64.b64decode(b64) == src.read_bytes()
    write_report(d, "T", [{"title": "same dir", "image": d / "curve.png"}], {})  # no self-copy error
    assert (d / "curve.png").read_bytes() == src.read_bytes()


def test_tables_scroll_in_a_container_numbers_right_aligned_long_text_wraps():
    long_text = "word " * 30
    t = table([{"system": "base", "rate": "0.25 [0.09, 0.53]", "p": 0.004, "n": 12, "small": "< 0.001",
                "kappa": -0.231, "sample": long_text, "flag": True},
               {"system": "tuned", "rate": "1.00 [0.76, 1.00]", "p": "", "n": 3, "small": "0.5",
                "kappa": float("nan"), "sample": "short", "flag": False}])
    assert column_kinds(t) == ["", "num", "num", "num", "num", "num", "long", ""]
    out = html_table(t)
    assert out.startswith("<div class='table-wrap'><table class='text'><thead>")
    assert out.endswith("</table></div>")
    assert "<th class='num'>rate</th>" in out and "<td class='num'>0.004</td>" in out
    assert "<td class='long'>" + long_text + "</td>" in out and "<td>base</td>" in out
    assert "<table>" in html_table(table([{"a": 1}]))  # no running text: no full-width class
    assert "tone_<wbr>rate_<wbr>classifier" in html_table(table([{"tone_rate_classifier": 0.5}]))
    assert md_table(t).splitlines()[0].startswith("| system | rate | p |")


def test_css_keeps_wide_tables_inside_the_page():
    from adaptlab.report.render import CSS

    for rule in (".table-wrap{max-width:100%;overflow-x:auto", ".num{text-align:right}",
                 "td.long{min-width:10em;white-space:pre-wrap",
                 "table{border-collapse:collapse;font-size:14px"):
        assert rule in CSS, rule


ROWS = [{"system": s, "rate": r, "ci_low": r - 0.1, "ci_high": r + 0.1}
        for s, r in (("base", 0.3), ("tuned", 0.6))]


def test_bars_only_when_there_is_something_to_compare(tmp_path):
    pytest.importorskip("matplotlib")
    from adaptlab.report.plots import bars

    for groups in ({}, {"judge": []}, {"judge": ROWS[:1]}):
        assert bars(tmp_path / "b.png", groups, "rate") is None
        assert not (tmp_path / "b.png").exists()
    assert bars(tmp_path / "b.png", {"clf": ROWS[:1], "llm": ROWS[1:]}, "rate") == tmp_path / "b.png"
    assert bars(tmp_path / "b.png", {"clf": ROWS, "llm": ROWS}, "rate") == tmp_path / "b.png"
    h, w = _decoded(tmp_path / "b.png")
    assert h > 100 and w > 300


def _panel(**series):
    return {"xlabel": "step", "ylabel": "loss", "series": series}


def test_lines_only_when_a_series_has_three_points(tmp_path):
    pytest.importorskip("matplotlib")
    from adaptlab.report.plots import lines

    p = tmp_path / "l.png"
    for panels in ([], [_panel()], [_panel(a=[])], [_panel(a=[(1, 0.5)])],
                   [_panel(a=[(1, 2.0), (2, 1.5)], b=[(1, 2.1)]), _panel(a=[(2, 0.5)])]):
        assert lines(p, panels) is None, panels
        assert not p.exists()
    assert lines(p, [_panel(a=[(1, 2.0), (2, 1.5), (3, 1.2)], b=[(1, 2.1)])]) == p
    one_h, one_w = _decoded(p)
    both = [_panel(a=[(1, 2.0), (2, 1.5), (3, 1.2)]), _panel(a=[(i, i / 10) for i in range(40)])]
    assert lines(p, both) == p
    assert _decoded(p)[1] > 1.6 * one_w  # two panels side by side
    assert lines(p, [both[0], _panel(a=[(2, 0.5)])]) == p  # the one-point panel is left out
    assert _decoded(p)[1] < 1.3 * one_w


def test_placeholders_keep_a_numeric_column_numeric():
    t = table([{"p": "(reference)", "q": "—", "r": "(none)"}, {"p": 0.004, "q": "1.0", "r": "n/a"}])
    assert column_kinds(t) == ["num", "num", ""]
    assert "<td class='num'>0.25 [0.09,&nbsp;0.53]</td>" in html_table(table([{"x": "0.25 [0.09, 0.53]"}]))
