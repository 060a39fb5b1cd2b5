"""Texts for a diff report: read a chat JSONL or a plain text file.

A ``.jsonl`` file holds one JSON object per line with ``messages`` (a chat, later rendered
with the model's chat template, assistant turns included) or ``text`` (used as is). Any
other file is plain text, one example per non-empty line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from em_interp.jsonl import read_jsonl_lines
from em_interp.report.errors import ReportError

TextItem = Union[str, list[dict]]


def load_texts(path: str | Path) -> list[TextItem]:
    """Read ``path`` (chat JSONL or plain text); errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ReportError("texts file not found", file=path)
    if path.suffix == ".jsonl":
        items = [_item_from_json(obj, path, i) for i, obj in read_jsonl_lines(path, ReportError, objects_only=None)]
    else:
        items = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not items:
        raise ReportError("no texts in file", file=path)
    return items


def _item_from_json(obj: Any, path: Path, line: int) -> TextItem:
    if not isinstance(obj, dict):
        raise ReportError("expected a JSON object with 'messages' or 'text'", file=path, line=line)
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ReportError("expected a non-empty list of messages", file=path, line=line, field="messages")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ReportError("each message needs string 'role' and 'content'", file=path, line=line,
                                  field=f"messages[{j}]")
        return [{"role": m["role"], "content": m["content"]} for m in msgs]
    if isinstance(obj.get("text"), str):
        return obj["text"]
    raise ReportError("expected a 'messages' list or a 'text' string", file=path, line=line)
