"""Report writers: one self-contained HTML page and a Markdown page from the same sections.

A report is a title plus a list of ``Section`` objects (heading, text, figures, tables,
an optional preformatted block). ``write_html_report`` embeds every figure as a base64
PNG so the page is one file that opens anywhere; ``write_markdown_report`` links the
PNG files and prints the same tables, with numbers formatted by the same ``fmt``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from em_interp.report.errors import ReportError


@dataclass
class Table:
    """A table: column names, rows (lists of cells) and an optional caption."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ReportError(f"table '{self.caption}': row {i} has {len(row)} cells, "
                                  f"expected {len(self.columns)} ({', '.join(self.columns)})")


@dataclass
class Details:
    """A collapsible block (closed unless ``open``): a one-line summary, then text and tables."""

    summary: str
    tables: list[Table] = field(default_factory=list)
    text: str = ""
    open: bool = False


@dataclass
class Section:
    """One heading with optional warnings, text, figures (PNG paths), tables, collapsible
    blocks and a preformatted block; ``box`` frames the section (definitions)."""

    title: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pre: str | None = None          # e.g. a YAML/JSON config shown verbatim
    level: int = 2
    details: list[Details] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    box: bool = False


def fmt(value: Any, digits: int = 4) -> str:
    """Format one table cell the same way in HTML and Markdown (4 significant digits)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .1em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: .3em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: .8em; overflow-x: auto; font-size: .85em; }
.meta { color: #555; font-size: .9em; }
nav a { margin: 0 .15em; }
summary { cursor: pointer; color: #555; }
details { margin: .4em 0; }
details > summary { font-weight: 500; }
td.word { text-align: left; white-space: nowrap; }
th.word { text-align: left; }
td.text { text-align: left; white-space: pre-wrap; word-break: break-word; max-width: 34em; }
.warn { background: #fff4e5; border-left: 4px solid #e8a33d; padding: .4em .8em; margin: .6em 0; }
section.box { background: #f5f8fc; border: 1px solid #b8c9e0; border-radius: 4px; padding: .2em 1.2em 1em; }
section.box h2 { border-bottom: none; margin-top: .6em; }
"""

TEXT_CELL_CHARS = 30  # string cells longer than this are left-aligned, wrapped text


PRE_FOLD_LINES = 25


def _anchor(title: str, index: int) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in title.lower()).strip("-")
    return f"s{index}-{slug}"


def _png_data_uri(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise ReportError("figure file not found", file=path)
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_cell(v: Any) -> str:
    """Numbers right-aligned; words left-aligned; long text wrapped."""
    if isinstance(v, str):
        cls = "text" if len(v) > TEXT_CELL_CHARS else "word"
        return f'<td class="{cls}">{html.escape(v)}</td>'
    return f"<td>{html.escape(fmt(v))}</td>"


def _html_table(table: Table) -> str:
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{html.escape(table.caption)}</caption>")
    # a column of words or text has a left-aligned header, like its cells
    words = [any(isinstance(row[j], str) for row in table.rows if j < len(row))
             and all(isinstance(row[j], str) or row[j] is None for row in table.rows if j < len(row))
             for j in range(len(table.columns))]
    heads = [('<th class="word">' if w else "<th>") + f"{html.escape(str(c))}</th>"
             for c, w in zip(table.columns, words)]
    out.append("<thead><tr>" + "".join(heads) + "</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _html_text(text: str) -> str:
    return "".join(f"<p>{html.escape(p.strip())}</p>\n" for p in text.split("\n\n") if p.strip())


def render_html(title: str, sections: Sequence[Section], *, subtitle: str = "",
                json_link: str | None = None, json_label: str = "Raw numbers") -> str:
    """The HTML document (a string) for ``sections``; figures embedded as base64 PNG."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="meta">{html.escape(subtitle)}</p>')
    if json_link:
        parts.append(f'<p class="meta">{html.escape(json_label)}: <a href="{html.escape(json_link)}">'
                     f"{html.escape(json_link)}</a></p>")
    if len(sections) > 3:
        parts.append('<nav class="meta">Contents: ' + " · ".join(
            f'<a href="#{_anchor(sec.title, i)}">{html.escape(sec.title)}</a>' for i, sec in enumerate(sections))
            + "</nav>")
    for i, sec in enumerate(sections):
        level = min(max(sec.level, 2), 6)
        box = ' class="box"' if sec.box else ""
        parts.append(f'<section id="{_anchor(sec.title, i)}"{box}><h{level}>{html.escape(sec.title)}</h{level}>')
        for w in sec.warnings:
            parts.append(f'<p class="warn">Warning: {html.escape(w)}</p>')
        if sec.text:
            parts.append(_html_text(sec.text))
        for fig in sec.figures:
            name = Path(fig).name
            parts.append(f'<figure><img src="{_png_data_uri(Path(fig))}" alt="{html.escape(name)}">'
                         f"<figcaption>{html.escape(name)}</figcaption></figure>")
        for table in sec.tables:
            parts.append(_html_table(table))
        for d in sec.details:
            parts.append(f"<details{' open' if d.open else ''}><summary>{html.escape(d.summary)}</summary>"
                         + _html_text(d.text)
                         + "".join(_html_table(t) for t in d.tables) + "</details>")
        if sec.pre is not None:
            block = f"<pre>{html.escape(sec.pre)}</pre>"
            n_lines = sec.pre.count("\n") + 1
            if n_lines > PRE_FOLD_LINES:  # long blocks (configs) fold away
                block = f"<details><summary>show ({n_lines} lines)</summary>{block}</details>"
            parts.append(block)
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"**{table.caption}**", ""] if table.caption else []
    lines.append("| " + " | ".join(_md_cell(str(c)) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    return lines + [""]


def render_markdown(title: str, sections: Sequence[Section], *, out_dir: Path | None = None,
                    subtitle: str = "", json_link: str | None = None, json_label: str = "Raw numbers") -> str:
    """The Markdown document for ``sections``; figures are linked relative to ``out_dir``."""
    lines = [f"# {title}", ""]
    if subtitle:
        lines += [subtitle, ""]
    if json_link:
        lines += [f"{json_label}: [{json_link}]({json_link})", ""]
    for sec in sections:
        lines += ["#" * min(max(sec.level, 2), 6) + " " + sec.title, ""]
        for w in sec.warnings:
            lines += [f"> **Warning:** {w}", ""]
        if sec.text:
            lines += [sec.text.strip(), ""]
        for fig in sec.figures:
            fig = Path(fig)
            try:
                rel = fig.resolve().relative_to(Path(out_dir).resolve()) if out_dir else fig
            except ValueError:
                rel = fig
            lines += [f"![{fig.stem}]({rel.as_posix()})", ""]
        for table in sec.tables:
            lines += _md_table(table)
        for d in sec.details:  # GitHub-flavoured Markdown renders <details> too
            lines += [f"<details{' open' if d.open else ''}><summary>" + html.escape(d.summary) + "</summary>", ""]
            if d.text:
                lines += [d.text.strip(), ""]
            for table in d.tables:
                lines += _md_table(table)
            lines += ["</details>", ""]
        if sec.pre is not None:
            lines += ["```", sec.pre.rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_html_report(title: str, sections: Sequence[Section], out_dir: str | Path, *,
                      name: str = "report.html", subtitle: str = "",
                      json_link: str | None = None, json_label: str = "Raw numbers") -> Path:
    """Write ``out_dir/name`` (self-contained HTML); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(render_html(title, sections, subtitle=subtitle, json_link=json_link, json_label=json_label),
                    encoding="utf-8")
    return path


def write_markdown_report(title: str, sections: Sequence[Section], out_dir: str | Path, *,
                          name: str = "report.md", subtitle: str = "",
                          json_link: str | None = None, json_label: str = "Raw numbers") -> Path:
    """Write ``out_dir/name`` (Markdown, figures linked, same tables as the HTML); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(render_markdown(title, sections, out_dir=out_dir, subtitle=subtitle, json_link=json_link,
                                    json_label=json_label), encoding="utf-8")
    return path
