"""Strict JSON / JSONL reading shared by the stages: every error names the file (and line).

(Append-only result files that may end in a torn line are read by their owners, which
skip that line on purpose; this reader is for inputs, where a bad line is an error.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from em_interp.config import read_text_checked
from em_interp.errors import EmInterpError


def read_jsonl_lines(path: str | Path, error: type[EmInterpError] = EmInterpError, *,
                     objects_only: str | None = "expected a JSON object") -> list[tuple[int, Any]]:
    """``[(line_number, value), ...]`` of a JSONL file, blank lines skipped.

    Invalid JSON raises ``error`` with the file and 1-based line; with ``objects_only``
    (the message to use), a value that is not a JSON object does too."""
    path = Path(path)
    rows: list[tuple[int, Any]] = []
    for i, raw in enumerate(read_text_checked(path, error).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise error(f"invalid JSON: {exc.msg}", file=path, line=i) from None
        except RecursionError:
            raise error("invalid JSON: nested too deeply", file=path, line=i) from None
        if objects_only is not None and not isinstance(obj, dict):
            raise error(objects_only, file=path, line=i)
        rows.append((i, obj))
    return rows


def read_json_object(path: str | Path, error: type[EmInterpError] = EmInterpError,
                     what: str = "corrupt JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; anything else raises ``error`` naming the file, as
    ``{what} (<reason>: not UTF-8 JSON)`` or ``{what} (not a JSON object)``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{what} ({type(exc).__name__}: not UTF-8 JSON)", file=path) from None
    if not isinstance(data, dict):
        raise error(f"{what} (not a JSON object)", file=path)
    return data
