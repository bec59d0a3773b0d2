"""Report building blocks: tables, plots embedded as images, HTML / Markdown / JSON output."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ..io import write_bytes, write_json, write_text

LONG_CELL = 60
"""A column with a cell longer than this (characters) is running text: it wraps and gets room."""
_NUMERIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?%?( \[[-+\d.e]+, [-+\d.e]+\])?$"
                      r"|^[<>≤≥] ?\d*\.?\d+$|^(nan|inf|-inf)$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"^(\(.*\)|[-–—]|n/?a)$", re.IGNORECASE)
"""Cells that stand in for a number ('(reference)', '—', 'n/a'): they neither make nor break a
numeric column."""


def table(rows: list[dict], cols: list[str] | None = None) -> dict:
    cols = cols or (list(rows[0]) if rows else [])
    return {"cols": cols, "rows": [[r.get(c, "") for c in cols] for r in rows]}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def _md_cell(v) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def md_table(t: dict) -> str:
    lines = ["| " + " | ".join(_md_cell(c) for c in t["cols"]) + " |", "|" + "---|" * len(t["cols"])]
    lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in t["rows"]]
    return "\n".join(lines)


def _is_number(v) -> bool:
    """Numbers, and the strings the studies print for them: '0.25 [0.09, 0.53]', '< 0.001'."""
    if isinstance(v, bool):
        return False
    return isinstance(v, (int, float)) or bool(_NUMERIC.match(str(v).strip()))


def _kind(cells: list) -> str:
    cells = [v for v in cells if _fmt(v) != ""]
    nums = [v for v in cells if not _PLACEHOLDER.match(_fmt(v).strip())]
    if nums and all(_is_number(v) for v in nums):
        return "num"
    return "long" if any(len(_fmt(v)) > LONG_CELL for v in cells) else ""


def column_kinds(t: dict) -> list[str]:
    """Per column: 'num' (every cell a number or a placeholder: right-aligned, an interval breaks
    only before its bracket), 'long' (running text: wraps, keeps a minimum width) or '' (short
    text)."""
    return [_kind([r[i] for r in t["rows"] if i < len(r)]) for i in range(len(t["cols"]))]


def _cell(tag: str, text: str, kind: str) -> str:
    if kind == "num" and tag == "td":  # '0.25 [0.09, 0.53]' may break before the interval only
        text = text.replace(", ", ",&nbsp;")
    return f"<{tag} class='{kind}'>{text}</{tag}>" if kind else f"<{tag}>{text}</{tag}>"


def _header(c) -> str:
    # raw names like tone_rate_classifier may break after an underscore instead of widening the table
    return html.escape(_fmt(c)).replace("_", "_<wbr>")


def html_table(t: dict) -> str:
    """A table inside a horizontal scroll container, so a wide one scrolls instead of running
    off the page (its first column stays in view); headers are shown as the caller gave them."""
    kinds = column_kinds(t)
    head = "".join(_cell("th", _header(c), k) for c, k in zip(t["cols"], kinds))
    body = "".join("<tr>" + "".join(_cell("td", html.escape(_fmt(v)), k) for v, k in zip(r, kinds))
                   + "</tr>" for r in t["rows"])
    cls = " class='text'" if "long" in kinds else ""
    return (f"<div class='table-wrap'><table{cls}><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


def save_plot(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)  # a study draws many figures; pyplot keeps each one alive until closed
    write_bytes(path, buf.getvalue())
    return path


CSS = """
body{font-family:system-ui,sans-serif;font-size:16px;line-height:1.45;max-width:1100px;
  margin:2em auto;padding:0 1em;color:#222}
.table-wrap{max-width:100%;overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-size:14px;line-height:1.35}
table.text{width:100%}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left;overflow-wrap:break-word}
th{background:#f3f3f3;font-weight:600;min-width:4em}
tbody tr{background:#fff}
tbody tr:nth-child(even){background:#fafafa}
td:first-child,th:first-child{position:sticky;left:0;background:inherit}
thead th:first-child{background:#f3f3f3}
.num{text-align:right}
td.num{font-variant-numeric:tabular-nums}
td.long{min-width:10em;white-space:pre-wrap;overflow-wrap:anywhere}
img{max-width:100%;height:auto;display:block;margin:1em 0}
.note{background:#fff8e1;padding:8px 12px;border-left:4px solid #f0b400;white-space:pre-wrap}
"""
CSS = "".join(line.strip() for line in CSS.splitlines())


def _image(d: Path, title: str, img: Path) -> tuple[str, str]:
    """The Markdown link (to a copy beside report.md if another stage logged it) and the
    HTML <img> (embedded, so report.html stands alone)."""
    data = img.read_bytes()
    if img.resolve().parent != d.resolve():
        write_bytes(d / img.name, data)
    alt = title.replace("[", "(").replace("]", ")")
    b64 = base64.b64encode(data).decode()
    return f"![{alt}]({img.name})\n", f"<img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>"


def _section(d: Path, s: dict) -> tuple[list[str], list[str]]:
    md, body = [f"## {s['title']}\n"], [f"<h2>{html.escape(s['title'])}</h2>"]
    if s.get("text"):
        md.append(s["text"] + "\n")
        body.append(f"<p class='note'>{html.escape(s['text'])}</p>")
    if s.get("table"):
        md.append(md_table(s["table"]) + "\n")
        body.append(html_table(s["table"]))
    if s.get("image"):
        m, h = _image(d, s["title"], Path(s["image"]))
        md.append(m)
        body.append(h)
    return md, body


def write_report(d: Path, title: str, sections: list[dict], data: dict) -> dict:
    """sections: [{"title", "text"?, "table"?: {"cols", "rows"}, "image"?: Path | None}] ->
    report.html (self-contained) / report.md (images copied beside it) / report.json (`data`).
    A section with neither text, table nor image (e.g. its plot carried no information) is left
    out of the HTML and Markdown."""
    d = Path(d)
    md, body = [f"# {title}\n"], [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        if s.get("text") or s.get("table") or s.get("image"):
            m, b = _section(d, s)
            md += m
            body += b
    write_text(d / "report.md", "\n".join(md))
    write_text(d / "report.html", "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
               "<meta name='viewport' content='width=device-width, initial-scale=1'>"
               f"<title>{html.escape(title)}</title><style>{CSS}</style></head>"
               f"<body>{''.join(body)}</body></html>")
    write_json(d / "report.json", data)
    return {"html": str(d / "report.html"), "md": str(d / "report.md"), "json": str(d / "report.json")}
