"""Report building blocks: tables, plots embedded as images, HTML / Markdown / JSON output."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from ..io import write_bytes, write_json, write_text


def table(rows: list[dict], cols: list[str] | None = None) -> dict:
    cols = cols or (list(rows[0]) if rows else [])
    return {"cols": cols, "rows": [[r.get(c, "") for c in cols] for r in rows]}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def md_table(t: dict) -> str:
    lines = ["| " + " | ".join(t["cols"]) + " |", "|" + "---|" * len(t["cols"])]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|").replace("\n", " ") for v in r) + " |"
              for r in t["rows"]]
    return "\n".join(lines)


def html_table(t: dict) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t["cols"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>"
                   for r in t["rows"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def save_plot(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buf.getvalue())
    return path


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
       "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid"
       " #ccc;padding:4px 8px;vertical-align:top}th{background:#f3f3f3}img{max-width:100%}"
       ".note{background:#fff8e1;padding:8px 12px;border-left:4px solid #f0b400}")


def write_report(d: Path, title: str, sections: list[dict], data: dict) -> dict:
    """sections: [{"title", "text"?, "table"?, "image"?: Path}] -> report.html / .md / .json."""
    md, body = [f"# {title}\n"], [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        md.append(f"## {s['title']}\n")
        body.append(f"<h2>{html.escape(s['title'])}</h2>")
        if s.get("text"):
            md.append(s["text"] + "\n")
            body.append(f"<p class='note'>{html.escape(s['text'])}</p>")
        if s.get("table"):
            md.append(md_table(s["table"]) + "\n")
            body.append(html_table(s["table"]))
        if s.get("image"):
            img = Path(s["image"])
            if img.parent != d:  # logged by another stage: the Markdown links a copy beside it
                write_bytes(d / img.name, img.read_bytes())
            md.append(f"![{s['title']}]({img.name})\n")
            b64 = base64.b64encode(img.read_bytes()).decode()
            body.append(f"<img alt='{html.escape(s['title'])}' src='data:image/png;base64,{b64}'>")
    write_text(d / "report.md", "\n".join(md))
    write_text(d / "report.html", f"<!doctype html><html><head><meta charset='utf-8'><title>"
               f"{html.escape(title)}</title><style>{CSS}</style></head><body>{''.join(body)}"
               "</body></html>")
    write_json(d / "report.json", data)
    return {"html": str(d / "report.html"), "md": str(d / "report.md"), "json": str(d / "report.json")}
